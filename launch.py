"""The one entry point.

    python launch.py                                   # list experiments and benchmarks
    python launch.py NAME[:VARIANT] [--workdir DIR] [--config.KEY=VALUE ...]
    python launch.py bench [NAME ...] [--out DIR]      # benchmarks (all when no NAME)
    python launch.py demo                              # every experiment's demo variant

Global state (environment, jax.config, jax.distributed) is set here and nowhere else.
"""

import argparse
import os
import pathlib
import sys
import time

# Offline by construction (DESIGN.md, Data): nothing is fetched from a hub at run time.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _first_line(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def list_everything() -> None:
    """Prints one line per experiment and per benchmark."""
    import experiments
    from experiments import benchmarks

    print("experiments (python launch.py NAME[:VARIANT] [--workdir DIR] [--config.KEY=VALUE]):")
    for name in experiments.EXPERIMENTS:
        print(f"  {name:22s} {_first_line(experiments.load(name))}")
    print("benchmarks (python launch.py bench NAME):")
    for name in benchmarks.BENCHMARKS:
        print(f"  {name:22s} {_first_line(benchmarks.load(name))}")
    print("demo (python launch.py demo): every experiment's demo variant, one summary table")


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
    """Runs `NAME[:VARIANT]` with command-line overrides; returns its summary metrics."""
    import experiments
    from experiments import configs

    name, _, variant = spec.partition(":")
    module = experiments.load(name)
    args, overrides = _parse_run_args(argv)
    if args.distributed or args.coordinator:
        import jax
        if args.coordinator and args.coordinator.startswith(("127.", "localhost")):
            # Several processes on one machine (tests, NOTES.md #8): CPU collectives via gloo.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator,
                                   num_processes=args.num_processes,
                                   process_id=args.process_id)
    config = module.get_config(variant)
    configs.apply_overrides(config, overrides)
    workdir = args.workdir or pathlib.Path("runs") / (name + (f"-{variant}" if variant else ""))
    workdir = workdir.resolve()  # orbax rejects relative paths (NOTES.md pitfall 3)
    workdir.mkdir(parents=True, exist_ok=True)
    resolved = configs.to_json(config)
    print(f"experiment {spec}, workdir {workdir}\nconfig:\n{resolved}", flush=True)
    (workdir / "config.json").write_text(resolved + "\n")
    return module.run(config, workdir)


def run_demo() -> None:
    """Runs every experiment's demo variant and prints one summary table."""
    import experiments

    rows = []
    for name in experiments.EXPERIMENTS:
        start = time.perf_counter()
        summary = run_experiment(f"{name}:demo", ["--workdir", f"runs/demo/{name}"])
        metric, value = next(iter(summary.items()))
        rows.append((name, metric, value, time.perf_counter() - start))
    print("\n| experiment | metric | value | wall time |\n|---|---|---|---|")
    for name, metric, value, seconds in rows:
        print(f"| {name} | {metric} | {value:.4f} | {seconds:.0f} s |")


def main(argv) -> int:
    from experiments import configs, host_memory

    if not argv or argv[0] in ("-h", "--help", "list"):
        list_everything()
        return 0
    # Before anything large is allocated: XLA:CPU's buffers then reuse freed pages.
    host_memory.keep_freed_memory_and_say()
    try:
        if argv[0] == "bench":
            from experiments import benchmarks
            return benchmarks.main(argv[1:])
        if argv[0] == "demo":
            run_demo()
            return 0
        run_experiment(argv[0], argv[1:])
        return 0
    except configs.ConfigError as error:
        print(f"launch.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
