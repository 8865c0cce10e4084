"""Sweeps over configs: one workdir per run, finished runs reused, one markdown table.

    python -m experiments.sweep sentence_similarity:smoke --root runs/sweep_losses \
        --axis loss.kind=softmax,am --axis model.final_state=last_step,masked \
        --seeds 0,1 --set trainer.num_steps=200 --out runs/sweep_losses/table.md

A `Cell` is one row of a table: an experiment (`EXPERIMENT[:VARIANT]`, e.g. "gan:demo"), its
`--config.` overrides and optionally several seeds. `run_sweep` trains each seed of each cell
in ROOT/NAME (or ROOT/NAME-seedS) as `python launch.py EXPERIMENT[:VARIANT] --workdir DIR
--config.K=V ...` would run it, and reads back its `summary.json` (written by
`experiments/trainer.py`):

* a workdir whose config.json is the cell's config and whose summary.json is at the config's
  last step is finished: it is reused, not trained again, and the sweep says so;
* any other workdir of the same config is resumed (the trainer continues from its latest
  checkpoint), as is one that differs only in how long to train (`LENGTH_KEYS`, e.g. a
  larger `trainer.num_steps`); a workdir of another config stops the sweep with the keys
  that differ, rather than mixing two configs in one directory.

`markdown_table` writes any sweep's table from the summaries: each `Column` picks a value by
dotted path ("results.top1", "best.metrics.map_at_r", "wall_seconds.total"), and a cell
with several seeds shows mean ± sample standard deviation over them.

The runs are trained in this process (`launch.run_experiment`): the imports, the
persistent compilation cache and the warm host memory (`experiments/host_memory.py`) are
shared by every run, and a test can replace the runner. `--subprocess` (or
`runner=run_in_subprocess`) starts one `launch.py` process per run instead, which hands all
of a run's memory back to the system when it ends: worth it for runs near the machine's
memory, at a few seconds of start-up per run.
"""

import argparse
import dataclasses
import itertools
import json
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import launch
from experiments import configs, host_memory, trainer
from experiments import load_config as load_experiment_config
from experiments.errors import Preempted, UserError

SEED_KEY = "trainer.seed"
# Keys that only say how long to train: a workdir whose config differs from the cell's in
# these alone is continued to the cell's length, not refused. `epochs` is the length of the
# experiments that derive their number of steps from it (`trainer.num_steps=0`).
LENGTH_KEYS = ("trainer.num_steps", "epochs")
# A config value resolved by the process that runs (e.g. the trainer's "auto" settings):
# any saved value matches it.
RESOLVED_AT_RUN_TIME = "auto"

Runner = Callable[[str, Sequence[str]], Any]


class SweepError(UserError):
    """A workdir that holds another config, or a run that stopped before its last step."""


class RunPreempted(Preempted):
    """A run in its own process was stopped by a signal after saving (its step unknown)."""

    def __init__(self, message: str):
        UserError.__init__(self, message)
        self.step = None


# ------------------------------------------------------------------------------------------
# What to run.


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of a sweep's table: an experiment with its overrides, over zero or more seeds.

    Attributes:
      name: the workdir name under the sweep's root (ROOT/NAME, or ROOT/NAME-seedS per seed).
      spec: the experiment, `NAME[:VARIANT]` as `launch.py` takes it, e.g. "gan:demo".
      overrides: "KEY=VALUE" config overrides, applied in order (a later one wins).
      seeds: values of `trainer.seed`, one run each; empty: one run with the config's seed.
      labels: {column header: text} shown by `markdown_table` beside the values.
    """

    name: str
    spec: str
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def runs(self) -> list[tuple[str, tuple[str, ...]]]:
        """(workdir name, overrides) of each run: one per seed, or one without seeds."""
        if not self.seeds:
            return [(self.name, tuple(self.overrides))]
        return [(f"{self.name}-seed{seed}", (*self.overrides, f"{SEED_KEY}={seed}"))
                for seed in self.seeds]

    def workdirs(self, root) -> list[pathlib.Path]:
        """ROOT/NAME or ROOT/NAME-seedS, absolute, in the order of `seeds`."""
        return [pathlib.Path(root).resolve() / name for name, _ in self.runs()]


def safe_name(text: str) -> str:
    """`text` as a file name: runs of characters other than [A-Za-z0-9._-] become "_"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def grid(spec: str, base_overrides: Sequence[str] = (),
         axes: Mapping[str, Sequence[Any]] | None = None, *, seeds: Sequence[int] = ()
         ) -> list[Cell]:
    """The cartesian product of `axes`, one cell per combination, the last axis fastest.

    Args:
      spec: the experiment, e.g. "sentence_similarity:smoke".
      base_overrides: "KEY=VALUE" overrides every cell shares (applied first).
      axes: {config key: values}; e.g. {"loss.kind": ["am", "softmax"]}.
      seeds: `trainer.seed` values run for every cell.

    Returns:
      Cells named after their values, e.g. "kind-am__final_state-masked" (the last part of
      each key, or the whole key where two axes share a last part), labelled
      {key: value}; one cell named "base" when there are no axes.
    """
    axes = dict(axes or {})
    short = {key: key.rsplit(".", 1)[-1] for key in axes}
    if len(set(short.values())) < len(short):
        short = {key: key for key in axes}
    cells = []
    for values in itertools.product(*axes.values()):
        chosen = dict(zip(axes, (str(value) for value in values)))
        name = "__".join(f"{safe_name(short[key])}-{safe_name(value)}"
                         for key, value in chosen.items()) or "base"
        cells.append(Cell(name=name, spec=spec,
                          overrides=(*base_overrides, *(f"{k}={v}" for k, v in chosen.items())),
                          seeds=tuple(seeds), labels=chosen))
    return cells


def resolve_config(spec: str, overrides: Sequence[str]):
    """The config `launch.py NAME[:VARIANT] --config.OVERRIDE ...` runs with, validated.

    Raises:
      experiments.configs.ConfigError: an unknown experiment, key or bad value.
    """
    name, _, variant = spec.partition(":")
    config_module = load_experiment_config(name)
    config = config_module.get_config(variant)
    configs.apply_overrides(config, list(overrides))
    config_module.validate(config)
    return config


# ------------------------------------------------------------------------------------------
# Whether a workdir holds a finished run of a config.


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf} of a nested mapping, e.g. {"trainer.seed": 0}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(wanted: Mapping[str, Any], saved: Mapping[str, Any],
                       defaults: Mapping[str, Any] | None = None) -> dict[str, tuple]:
    """{dotted key: (saved value, wanted value)} where two nested configs disagree.

    A wanted value of "auto" is resolved by the process that runs, so any saved value
    matches it. A key only one side has counts as a difference (value None on the other),
    except a key newer than the saved run: where `defaults` (the experiment's config before
    overrides) holds it, the saved run used that default, as `configs.merge_trained` reads it.
    """
    wanted, saved = flatten(wanted), flatten(saved)
    saved = {**{key: value for key, value in flatten(defaults or {}).items()
                if key in wanted}, **saved}
    return {key: (saved.get(key), wanted.get(key)) for key in sorted(set(wanted) | set(saved))
            if wanted.get(key) != RESOLVED_AT_RUN_TIME and wanted.get(key) != saved.get(key)}


def run_state(workdir: pathlib.Path, wanted: Mapping[str, Any],
              defaults: Mapping[str, Any] | None = None) -> str:
    """What `run_sweep` does with `workdir` for the config `wanted` (the resolved JSON);
    `defaults`: as `config_differences` reads them.

    Returns:
      "finished": config.json equals `wanted` and summary.json is at its last step
        (`trainer.num_steps`; where that is 0 the experiment derives the length, and a
        summary.json of the same config, written only after the last step, is enough);
      "resume": config.json equals `wanted` but the run has not finished;
      "extend": config.json differs only in `LENGTH_KEYS`, towards a longer run;
      "start": there is no config.json.

    Raises:
      SweepError: config.json holds another config, or a longer run of this one.
    """
    config_path = workdir / configs.CONFIG_FILE
    if not config_path.is_file():
        return "start"
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SweepError(f"{config_path}: not a readable config ({error}); remove {workdir} "
                         "or choose another root") from None
    differences = config_differences(wanted, saved, defaults)
    if not differences:
        summary = trainer.read_summary(workdir)
        num_steps = flatten(wanted).get("trainer.num_steps", 0)
        done = bool(summary) and (not num_steps or summary.get("step") == num_steps)
        return "finished" if done else "resume"
    other = {key: pair for key, pair in differences.items() if key not in LENGTH_KEYS}
    shorter = {key: (old, new) for key, (old, new) in differences.items()
               if key in LENGTH_KEYS and _is_longer(old, new)}
    if other or shorter:
        shown = ", ".join(f"{key}: {_show(old)} → {_show(new)}"
                          for key, (old, new) in {**other, **shorter}.items())
        what = "another config" if other else "a longer run"
        raise SweepError(f"{workdir} holds {what} ({shown}); remove it or choose another root")
    return "extend"


def _is_longer(saved, wanted) -> bool:
    """Whether a saved length is past the wanted one (0 = derived: never compared)."""
    return (isinstance(saved, (int, float)) and isinstance(wanted, (int, float))
            and wanted != 0 and (saved == 0 or saved > wanted))


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ------------------------------------------------------------------------------------------
# Running.


def run_in_process(spec: str, argv: Sequence[str]) -> Any:
    """Runs one training run in this process, as `python launch.py NAME[:VARIANT] ARGV...` would."""
    return launch.run_experiment(spec, list(argv))


def run_in_subprocess(spec: str, argv: Sequence[str]) -> None:
    """Runs one training run as its own `launch.py` process (all its memory freed after).

    Raises:
      Preempted: the run was stopped by a signal after saving (rerun to resume it).
      SweepError: any other non-zero exit (its message is on stderr above).
    """
    command = [sys.executable, str(pathlib.Path(launch.__file__).resolve()), spec, *argv]
    returncode = subprocess.run(command, check=False).returncode
    if returncode == Preempted.exit_code:
        raise RunPreempted(f"`{shlex.join(command)}` was preempted after saving; rerun the "
                           "sweep to resume it")
    if returncode:
        raise SweepError(f"`{shlex.join(command)}` exited with status {returncode}")


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: labels and the summaries of its seeds (one without seeds).

    Attributes:
      labels: {column header: text}, e.g. {"loss": "am"}.
      summaries: summary.json of each run, as `trainer.read_summary` reads it.
      workdirs: where each summary came from (empty for rows that trained nothing).
    """

    labels: Mapping[str, str]
    summaries: Sequence[Mapping[str, Any]]
    workdirs: Sequence[pathlib.Path] = ()


def run_sweep(cells: Iterable[Cell], root_dir, *, reuse: bool = True,
              runner: Runner | None = None) -> list[Row]:
    """Runs every seed of every cell in ROOT_DIR/NAME[-seedS]; returns one row per cell.

    A finished run is reused (and the sweep prints so); an unfinished one is resumed by
    running the same command again. Cells with the same name and definition run once (a
    row may appear in several groups of a table).

    Args:
      cells: what to run, in table order.
      root_dir: the directory that holds one workdir per run.
      reuse: False runs finished runs through the runner again: the trainer trains nothing
        more, and the experiment computes its results again (e.g. after a change to its
        evaluation).
      runner: `(spec, argv) -> Any`, `run_in_process` (default) or `run_in_subprocess`.

    Returns:
      One `Row` per cell: its labels (with "name": the cell's name) and summaries.

    Raises:
      SweepError: two different cells share a name, a workdir holds another config, or a
        run ended without a finished summary.json.
      experiments.errors.UserError: whatever a run raises (bad config, data, preemption).
    """
    runner = runner or run_in_process
    root = pathlib.Path(root_dir).resolve()
    defined: dict[str, Cell] = {}
    done: dict[pathlib.Path, dict[str, Any]] = {}  # this call's runs, by workdir
    rows = []
    for cell in cells:
        previous = defined.setdefault(cell.name, cell)
        if (previous.spec, previous.overrides, previous.seeds) != (
                cell.spec, cell.overrides, cell.seeds):
            raise SweepError(f"two cells are named {cell.name!r} but differ: "
                             f"{previous.spec} {list(previous.overrides)} and "
                             f"{cell.spec} {list(cell.overrides)}")
        for name, overrides in cell.runs():
            if root / name not in done:
                done[root / name] = _run_one(cell.spec, overrides, root / name, reuse, runner)
        summaries = [done[root / name] for name, _ in cell.runs()]
        rows.append(Row(labels={"name": cell.name, **cell.labels}, summaries=summaries,
                        workdirs=cell.workdirs(root)))
    return rows


def _wanted_and_defaults(spec: str, overrides: Sequence[str]) -> tuple[dict, dict]:
    """The resolved config of a run and of its experiment without overrides, as JSON."""
    return tuple(json.loads(configs.to_json(resolve_config(spec, o)))
                 for o in (overrides, ()))


def _run_one(spec: str, overrides: Sequence[str], workdir: pathlib.Path, reuse: bool,
             runner: Runner) -> dict[str, Any]:
    wanted, defaults = _wanted_and_defaults(spec, overrides)
    state = run_state(workdir, wanted, defaults)
    if state == "finished" and reuse:
        summary = trainer.read_summary(workdir)
        print(f"[sweep] {workdir.name}: finished at step {summary.get('step')}, reusing "
              f"{workdir / 'summary.json'}", flush=True)
        return summary
    if state == "extend":
        # The summary describes the shorter run: without it, a run stopped before its new
        # end is not taken for finished.
        (workdir / "summary.json").unlink(missing_ok=True)
    verb = {"start": "training", "resume": "resuming", "extend": "continuing",
            "finished": "rerunning"}[state]
    print(f"[sweep] {workdir.name}: {verb} {spec} in {workdir}", flush=True)
    runner(spec, ["--workdir", str(workdir), *(f"--config.{o}" for o in overrides)])
    if run_state(workdir, wanted, defaults) != "finished":
        raise SweepError(f"{workdir}: the run ended before its last step (no summary.json at "
                         "the config's num_steps); rerun the sweep to resume it")
    if state != "finished":
        # The machine's load while the run trained: its wall time is only comparable with
        # runs under a similar load.
        return trainer.update_summary(workdir, load_average=round(os.getloadavg()[0], 2))
    return trainer.read_summary(workdir)


def collect(cells: Iterable[Cell], root_dir) -> list[Row]:
    """The rows of the cells whose every run is finished in ROOT_DIR; trains nothing.

    For a table over runs made by several invocations (e.g. `--only` subsets).
    """
    root = pathlib.Path(root_dir).resolve()
    rows = []
    for cell in cells:
        summaries = []
        for name, overrides in cell.runs():
            wanted, defaults = _wanted_and_defaults(cell.spec, overrides)
            try:
                finished = run_state(root / name, wanted, defaults) == "finished"
            except SweepError:
                finished = False
            if not finished:
                break
            summaries.append(trainer.read_summary(root / name))
        else:
            rows.append(Row(labels={"name": cell.name, **cell.labels}, summaries=summaries,
                            workdirs=cell.workdirs(root)))
    return rows


# ------------------------------------------------------------------------------------------
# The table.


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of `markdown_table`.

    Attributes:
      header: the column's title; also the row label shown when `path` is None.
      path: a dotted path into summary.json ("results.top1", "wall_seconds.total"), or a
        tuple of them shown as "A / B"; None: the row's label `header`.
      fmt: format spec of one value, and of the mean and std over seeds (".4f", ",.0f");
        None: whole numbers as integers, anything else ".4f".
      scale: multiplies every value before formatting (100 for percent, 1/60 for minutes).
      suffix: appended to the formatted value (" %", " min").
      per_seed: format spec of each seed's value, listed in brackets after mean ± std
        ("[8, 8, 7]"); None: not listed.
    """

    header: str
    path: str | tuple[str, ...] | None = None
    fmt: str | None = None
    scale: float = 1.0
    suffix: str = ""
    per_seed: str | None = None


def lookup(summary: Mapping[str, Any], path: str) -> Any:
    """The value at dotted `path` in a nested mapping, or None where any part is missing."""
    node: Any = summary
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n − 1; 0 for one value)."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _format_number(value: float, fmt: str | None) -> str:
    if fmt is None:
        fmt = "d" if float(value).is_integer() and abs(value) < 2**53 else ".4f"
        value = int(value) if fmt == "d" else value
    return f"{value:{fmt}}"


def format_values(values: Sequence[Any], column: Column) -> str:
    """One table cell from the values of a row's seeds (None: missing).

    One value: formatted. Several: "mean ± std" (and the per-seed values in brackets if
    `column.per_seed`), over the values present, with "(n = K)" when some are missing.
    Text: the value if all seeds agree, else the values joined with ", ". None left: "—".
    """
    present = [value for value in values if value is not None]
    if not present:
        return "—"
    if not all(_is_number(value) for value in present):
        texts = [str(value) for value in present]
        return texts[0] if len(set(texts)) == 1 else ", ".join(texts)
    scaled = [column.scale * value for value in present]
    if len(scaled) == 1:
        return _format_number(scaled[0], column.fmt) + column.suffix
    mean, std = mean_and_std(scaled)
    fmt = column.fmt or ".4f"
    text = f"{mean:{fmt}} ± {std:{fmt}}{column.suffix}"
    if column.per_seed:
        text += " [" + ", ".join(f"{value:{column.per_seed}}" for value in scaled) + "]"
    if len(present) < len(values):
        text += f" (n = {len(present)})"
    return text


def table_cell(row: Row, column: Column) -> str:
    """The text of one row in one column ("|" escaped)."""
    if column.path is None:
        text = str(row.labels.get(column.header, "—"))
    else:
        paths = (column.path,) if isinstance(column.path, str) else column.path
        parts = [format_values([lookup(summary, path) for summary in row.summaries], column)
                 for path in paths]
        text = "—" if set(parts) == {"—"} else " / ".join(parts)
    return text.replace("|", "\\|")


def markdown_table(rows: Iterable[Row], columns: Sequence[Column]) -> str:
    """A markdown table, one line per row, one column per `Column` (no trailing newline)."""
    lines = ["| " + " | ".join(column.header for column in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(table_cell(row, column) for column in columns) + " |"
              for row in rows]
    return "\n".join(lines)


def default_columns(rows: Sequence[Row]) -> list[Column]:
    """Every number of the first summary's "results" (its headline first; the final
    evaluation where there are none), steps/s and the total wall time."""
    first = next((summary for row in rows for summary in row.summaries), {})
    figures = "results" if first.get("results") else "final"
    numbers = [key for key, value in (first.get(figures) or {}).items() if _is_number(value)]
    return ([Column(f"{figures}.{key}", f"{figures}.{key}") for key in numbers]
            + [Column("steps/s", "steps_per_sec", ".2f"),
               Column("wall time", "wall_seconds.total", ".0f", suffix=" s")])


def parse_column(text: str) -> Column:
    """"PATH" or "PATH:FORMAT" (e.g. "results.top1:.3f") as a column headed PATH (without a
    format: whole numbers as integers, others to 4 decimals)."""
    path, _, fmt = text.partition(":")
    return Column(path, path, fmt or None)


# ------------------------------------------------------------------------------------------
# Command line.


def parse_axis(text: str) -> tuple[str, list[str]]:
    """"KEY=V1,V2" → (KEY, [V1, V2]); with ";" in the values they split on ";" instead
    ("model.pattern=full;local:32,atrous:32"), for values that hold commas."""
    key, equals, values = text.partition("=")
    if not equals or not key or not values:
        raise configs.ConfigError(f"--axis {text!r}: expected KEY=VALUE1,VALUE2,...")
    return key, values.split(";" if ";" in values else ",")


def parse_seeds(text: str) -> tuple[int, ...]:
    """"0,1,2" → (0, 1, 2); ValueError (argparse's message) for anything else."""
    return tuple(int(seed) for seed in text.split(",") if seed.strip())


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="NAME[:VARIANT], as launch.py takes it")
    parser.add_argument("--root", required=True, type=pathlib.Path,
                        help="one workdir per run goes under here; finished runs are reused")
    parser.add_argument("--axis", action="append", default=[], type=parse_axis,
                        metavar="KEY=V1,V2", help="a config key and its values (repeatable; "
                        "the table has one row per combination)")
    parser.add_argument("--seeds", default=(), type=parse_seeds, help="comma-separated "
                        "trainer.seed values, one run each per row (mean ± std in the table)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override shared by every run (repeatable)")
    parser.add_argument("--columns", nargs="+", type=parse_column, default=None,
                        metavar="PATH[:FORMAT]", help="summary.json values to tabulate, e.g. "
                        "results.top1:.3f best.metrics.map_at_r wall_seconds.total:.0f "
                        "(default: the results, steps/s and wall time)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="write the table here too")
    parser.add_argument("--rerun", action="store_true",
                        help="run finished runs again (their results are computed again)")
    parser.add_argument("--subprocess", action="store_true",
                        help="one launch.py process per run (frees its memory when it ends)")
    return parser.parse_args(argv)


def sweep_command(argv: Sequence[str]) -> str:
    """The command line that reproduces a sweep, for the table's header."""
    return "python -m experiments.sweep " + shlex.join(argv)


def run_command(main_fn: Callable[[Sequence[str] | None], Any], prog: str,
                argv: Sequence[str] | None = None) -> int:
    """Calls `main_fn(argv)` as launch.py runs an experiment: an error the user can act on
    is one line on stderr, `PROG: MESSAGE`, and exit status 2 (a preempted run:
    `Preempted.exit_code`, rerun to resume); returns the exit status."""
    try:
        status = main_fn(argv)
    except Preempted as error:
        print(f"{prog}: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except UserError as error:
        print(f"{prog}: {error}", file=sys.stderr, flush=True)
        return 2
    return status or 0


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """Runs the sweep the command line describes and writes its table; raises UserError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    host_memory.keep_freed_memory_and_say()
    axes = dict(args.axis)
    cells = grid(args.experiment, args.set, axes, seeds=args.seeds)
    rows = run_sweep(cells, args.root, reuse=not args.rerun,
                     runner=run_in_subprocess if args.subprocess else None)
    columns = ([Column(header) for header in list(axes) or ["name"]]
               + (args.columns or default_columns(rows)))
    text = f"Command: `{sweep_command(argv)}`\n\n{markdown_table(rows, columns)}\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 for an error the user can act on)."""
    return run_command(sweep_main, "experiments.sweep", argv)


if __name__ == "__main__":
    sys.exit(main())
