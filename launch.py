"""The one entry point.

    python launch.py                                   # list experiments and benchmarks
    python launch.py NAME[:VARIANT] [--workdir DIR] [--config.KEY=VALUE ...]
    python launch.py bench [NAME ...] [--out DIR]      # benchmarks (all when no NAME)
    python launch.py demo                              # every experiment's demo variant

Add `--debug` anywhere to see the traceback of an error the user can act on. Without it such
an error (`experiments.errors.UserError`: a bad config value, a malformed data row, a
workdir that cannot be used, a checkpoint that does not fit) is one line on stderr,
`launch.py: MESSAGE`, and exit status 2; a preempted run exits with `Preempted.exit_code`.
Anything else is a bug and keeps its traceback.

Global state (environment, jax.config, jax.distributed) is set here and nowhere else.
"""

import argparse
import os
import pathlib
import sys
import traceback

# Offline by construction (docs/index.md §5 item 1): nothing is fetched from a hub at run time.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


import experiments  # noqa: E402  (after the environment above: `datasets` reads it)
from experiments import configs, host_memory, trainer  # noqa: E402
from experiments.errors import Preempted, UserError  # noqa: E402


def _first_line(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def list_everything() -> None:
    """Prints one line per experiment and per benchmark."""
    from experiments import benchmarks

    print("experiments (python launch.py NAME[:VARIANT] [--workdir DIR] [--config.KEY=VALUE]):")
    for name in experiments.EXPERIMENTS:
        print(f"  {name:22s} {_first_line(experiments.load(name))}")
    print("benchmarks (python launch.py bench NAME):")
    for name in benchmarks.BENCHMARKS:
        print(f"  {name:22s} {_first_line(benchmarks.load(name))}")
    print("demo (python launch.py demo): every experiment's demo variant, one summary table")


class WorkdirError(UserError):
    """The workdir is a file, cannot be created, or cannot be written."""


def _prepare_training_workdir(workdir: pathlib.Path) -> None:
    """Creates `workdir` for a training run and checks that it can be written.

    Raises:
      WorkdirError: naming the workdir and what is wrong with it.
    """
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {workdir} is a file, not a directory")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"--workdir {workdir} cannot be created: "
                           f"{error.strerror or error}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise WorkdirError(f"--workdir {workdir} is not writable by this user")


def _require_trained_workdir(workdir: pathlib.Path) -> None:
    """A mode other than training reads `workdir`; it must be an existing directory."""
    if not workdir.is_dir():
        what = "is a file" if workdir.exists() else "does not exist"
        raise configs.NotATrainedRun(
            f"--workdir {workdir} {what}: point it at the workdir of a training run")


def _parse_run_args(argv):
    parser = argparse.ArgumentParser(prog="launch.py NAME[:VARIANT]")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="where config.json, metrics.jsonl, TensorBoard events and "
                             "checkpoints go (default runs/NAME[-VARIANT])")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() (multi-host; cluster "
                             "environment auto-detected, or set --coordinator etc.)")
    parser.add_argument("--coordinator", default=None, help="host:port of process 0")
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognised argument {item!r} (config overrides are "
                         "--config.KEY=VALUE)")
        overrides.append(item[len("--config."):])
    return args, overrides


def run_experiment(spec: str, argv) -> dict:
    """Runs `NAME[:VARIANT]` with command-line overrides; returns its summary metrics.

    Only a training run writes WORKDIR/config.json. Any other mode (`config.mode`) takes
    the experiment's `TRAINED_FIELDS` from that file, refuses an override that disagrees
    with it, and leaves the workdir as it was.
    """
    name, _, variant = spec.partition(":")
    module = experiments.load(name)
    config_module = experiments.load_config(name)
    args, overrides = _parse_run_args(argv)
    config = config_module.get_config(variant)
    explicit = configs.apply_overrides(config, overrides)
    config_module.validate(config)
    workdir = args.workdir or pathlib.Path("runs") / (name + (f"-{variant}" if variant else ""))
    workdir = workdir.resolve()  # orbax rejects relative paths (docs/index.md §5 item 2)
    training = configs.is_training(config)
    if training:
        _prepare_training_workdir(workdir)
    else:
        _require_trained_workdir(workdir)
        configs.merge_trained(config, workdir, config_module.TRAINED_FIELDS, explicit)
        config_module.validate(config)
    if args.distributed or args.coordinator:
        import jax
        if args.coordinator and args.coordinator.startswith(("127.", "localhost")):
            # Several processes on one machine (docs/index.md §5 item 3): CPU collectives via gloo.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator,
                                   num_processes=args.num_processes,
                                   process_id=args.process_id)
    resolve(config_module, config)
    trainer.apply_process_settings(config.trainer)
    resolved = configs.to_json(config)
    print(f"experiment {spec}, workdir {workdir}\nconfig:\n{resolved}", flush=True)
    if training:
        try:
            (workdir / configs.CONFIG_FILE).write_text(resolved + "\n")
        except OSError as error:
            raise WorkdirError(f"--workdir {workdir}: cannot write {configs.CONFIG_FILE}: "
                               f"{error.strerror or error}") from None
    return module.run(config, workdir)


def resolve(config_module, config) -> None:
    """Replaces every "auto" of `config` (the trainer's, and the experiment's own through
    its config module's `resolve`, where it has one) by what this process will run, so that
    the printed config and config.json say what ran."""
    resolved = trainer.resolve_config(config.trainer)
    with config.trainer.unlocked():
        for key, value in resolved.items():
            config.trainer[key] = value
    if hasattr(config_module, "resolve"):
        config_module.resolve(config)


def run_demo() -> None:
    """Runs `experiments.DEMO_RUNS` (every experiment's demo variant, and the GAN's
    conditional-BN demo); prints one table from their summary.json files.

    The table gives each run's headline figure (the first of summary.json's "results") and
    where its wall time went: compiling, the first step, the steady steps, evaluation and
    checkpoints, with the steady steps/s. A row is named after its experiment, with the
    variant when it is not "demo".
    """
    workdirs = {}
    for spec in experiments.DEMO_RUNS:
        name = spec.removesuffix(":demo")
        workdirs[name] = pathlib.Path("runs/demo") / name.replace(":", "_")
        run_experiment(spec, ["--workdir", str(workdirs[name])])
    print(demo_table({name: trainer.read_summary(workdir)
                      for name, workdir in workdirs.items()}))


def demo_table(summaries: dict[str, dict]) -> str:
    """The markdown table of `run_demo` from each experiment's summary.json."""
    lines = ["", "| experiment | metric | value | steps/s | wall time | compile | first step "
             "| steady steps | evaluation | checkpoints | device |", "|---" * 11 + "|"]
    for name, summary in summaries.items():
        metric, value = next(iter(summary["results"].items()))
        seconds = summary["wall_seconds"]
        rate = summary.get("steps_per_sec")
        lines.append(
            f"| {name} | {metric} | {value:.4f} | {'—' if rate is None else f'{rate:.1f}'} "
            + "".join(f"| {seconds.get(key, 0.0):.1f} s " for key in (
                "total", "compilation", "first_step", "steady_steps", "evaluation",
                "checkpointing"))
            + f"| {summary['device_kind']} |")
    return "\n".join(lines)


def _report(error: UserError, debug: bool) -> None:
    if debug:
        traceback.print_exception(error)
    message = str(error) or type(error).__name__
    print(f"launch.py: {message}", file=sys.stderr, flush=True)


def main(argv) -> int:
    """The command line; returns the exit status (see the module docstring)."""
    argv = list(argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "list"):
        list_everything()
        return 0
    try:
        if argv[0] == "bench":
            from experiments import benchmarks
            # Before anything large is allocated: XLA:CPU's buffers then reuse freed pages.
            # (A training run sets it from trainer.keep_freed_host_memory instead.)
            host_memory.keep_freed_memory_and_say()
            return benchmarks.main(argv[1:])
        if argv[0] == "demo":
            run_demo()
            return 0
        run_experiment(argv[0], argv[1:])
        return 0
    except Preempted as error:
        _report(error, debug)
        return error.exit_code
    except UserError as error:
        _report(error, debug)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
