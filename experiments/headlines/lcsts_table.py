"""The LCSTS PART II table of docs/headlines.md §7.2, built from trained workdirs.

    python -m experiments.headlines.lcsts_table --runs runs/headlines_lcsts_* \\
        --commands results/headlines/lcsts_commands.sh --out results/headlines/lcsts.md

Each workdir is a `headlines` training run (`config.json`, `summary.json`, `metrics.jsonl`)
holding one or more `eval_KIND[_DIRECTION][_exhaustive][_alphaA].log` files: the output of
`--config.mode=eval --config.decode.kind=KIND [--config.decode.direction=DIRECTION]
[--config.decode.stop_rule=exhaustive] [--config.decode.alpha=A]`, whose last JSON line is
read (eval writes nothing itself, so the commands save its output there). Folders without
`config.json` are skipped, so a glob may match a log folder too.

Two tables come out:

* decoders: one row per (run, eval file): character ROUGE-1/2/L, BLEU, first/last-4
  accuracy, the share of titles the R2L side produced, all × 100;
* leakage (docs/headlines.md §4): per logged training step, the summed training CE of both
  directions of each interacting run against the unidirectional run's single L2R CE and its
  own sum (the post's symptom is a bidirectional sum below the unidirectional single loss),
  then each run's held-out losses with the other direction read from the gold title and from
  another example's title (`leak_gap` = swapped − gold).
"""

import argparse
import json
import pathlib
import re
import sys
from typing import NamedTuple

EVAL_FILE = re.compile(
    r"^eval_(greedy|beam|bi_beam|rescore)(?:_(l2r|r2l))?(?:_(exhaustive))?(?:_alpha([0-9.]+))?"
    r"\.log$")
KIND_NAMES = {"greedy": "greedy", "beam": "beam", "bi_beam": "bidirectional beam"}
RESULT_COLUMNS = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"),
                  ("bleu", "BLEU"), ("first4", "first-4 acc."), ("last4", "last-4 acc."),
                  ("r2l_share", "R2L share"))


class Run(NamedTuple):
    """What the tables need of one training workdir."""

    name: str                       # the workdir's folder name
    interaction: bool               # model.interaction
    two_pass: bool                  # trained with two_pass.first_workdir
    config: dict                    # config.json
    summary: dict                   # summary.json ({} when training did not finish)
    evals: dict                     # {(kind, direction, stop rule, alpha) ("" if not
    #                                  named in the file): eval JSON}
    curve: list                     # [(step, l2r_loss, r2l_loss)], training log lines


def _json_lines(path: pathlib.Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_json_object(path: pathlib.Path) -> dict | None:
    """The last line of a file that is a JSON object (an eval log's result line)."""
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        if line.startswith("{") and line.endswith("}"):  # not the indented config
            return json.loads(line)
    return None


def read_run(workdir: pathlib.Path) -> Run | None:
    """The `Run` of a workdir; None when it holds no config.json (not a training run)."""
    workdir = pathlib.Path(workdir)
    if not (workdir / "config.json").is_file():
        return None
    config = json.loads((workdir / "config.json").read_text())
    summary_path = workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    evals = {}
    for path in sorted(workdir.iterdir()):
        match = EVAL_FILE.match(path.name)
        metrics = _last_json_object(path) if match else None
        if metrics is not None:
            evals[tuple(group or "" for group in match.groups())] = metrics
    curve = [(line["step"], line["l2r_loss"], line["r2l_loss"])
             for line in _json_lines(workdir / "metrics.jsonl")
             if line.get("split") == "train" and "l2r_loss" in line]
    return Run(workdir.name, bool(config["model"]["interaction"]),
               bool(config.get("two_pass", {}).get("first_workdir")), config, summary, evals,
               curve)


def run_label(run: Run) -> str:
    """"uni", "bi" or "bi + two-pass" (the model a row's decoder ran on)."""
    if not run.interaction:
        return "uni" + (" + two-pass" if run.two_pass else "")
    return "bi" + (" + two-pass" if run.two_pass else "")


def row_label(run: Run, kind: str, direction: str, stop_rule: str = "", alpha: str = ""
              ) -> str:
    """A decoder row's name, e.g. "uni: greedy (R2L)", "bi: bidirectional beam 3"."""
    beam = run.config["decode"]["beam_size"]
    penalty = f", length penalty α = {alpha}" if alpha else ""
    if kind == "rescore":
        return f"{run_label(run)}: L2R beam {beam} n-best + R2L rescoring{penalty}"
    name = KIND_NAMES[kind] + (f" {beam}" if kind in ("beam", "bi_beam") else "")
    return (f"{run_label(run)}: {name}" + (f" ({direction.upper()})" if direction else "")
            + (f", {stop_rule} search" if stop_rule else "") + penalty)


ROW_ORDER = ("greedy", "beam", "rescore", "bi_beam")


def _row_key(run: Run, key: tuple[str, str, str, str]):
    return (run.interaction, run.two_pass, ROW_ORDER.index(key[0]), key[1] != "l2r", key[1],
            key[2], key[3])


def _cell(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def results_table(runs: list[Run]) -> str:
    """The decoders' markdown table, rows ordered uni → bi → bi + two-pass."""
    header = "| model / decoder | " + " | ".join(t for _, t in RESULT_COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(RESULT_COLUMNS)]
    rows = sorted(((run, key) for run in runs for key in run.evals),
                  key=lambda item: _row_key(*item))
    for run, key in rows:
        metrics = run.evals[key]
        lines.append(f"| {row_label(run, *key)} | "
                     + " | ".join(_cell(metrics.get(k)) for k, _ in RESULT_COLUMNS) + " |")
    return "\n".join(lines)


def leakage_curve_table(runs: list[Run]) -> str:
    """Training CE per logged step: uni L2R alone and sums of both directions per run."""
    uni = [r for r in runs if not r.interaction]
    columns = []
    for run in uni:
        columns.append((f"{run.name}: L2R CE", {s: left for s, left, _ in run.curve}))
    for run in uni + [r for r in runs if r.interaction]:
        both = {s: left + right for s, left, right in run.curve}
        columns.append((f"{run.name}: L2R + R2L CE", both))
    steps = sorted({step for _, values in columns for step in values})
    lines = ["| step | " + " | ".join(name for name, _ in columns) + " |",
             "|---:|" + "---:|" * len(columns)]
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(
            f"{values[step]:.3f}" if step in values else "–" for _, values in columns) + " |")
    return "\n".join(lines)


HELD_OUT = (("valid_l2r_loss", "L2R CE"), ("valid_r2l_loss", "R2L CE"),
            ("valid_l2r_loss_swapped", "L2R CE, other title"),
            ("valid_r2l_loss_swapped", "R2L CE, other title"),
            ("valid_leak_gap", "leak gap"))


def held_out_table(runs: list[Run]) -> str:
    """Held-out (validation) CE of the best checkpoint, gold vs another example's title."""
    lines = ["| run | " + " | ".join(t for _, t in HELD_OUT) + " | best step |",
             "|---|" + "---:|" * (len(HELD_OUT) + 1)]
    for run in runs:
        results = run.summary.get("results", {})
        cells = [("–" if results.get(k) is None else f"{results[k]:.3f}") for k, _ in HELD_OUT]
        lines.append(f"| {run.name} | " + " | ".join(cells)
                     + f" | {results.get('best_step', '–')} |")
    return "\n".join(lines)


def runs_table(runs: list[Run]) -> str:
    """One line per run: model, steps, sizes, steady steps/s and wall time."""
    lines = ["| run | model | steps | text ≤ | decode.max_len | steps/s | wall time |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        wall = run.summary.get("wall_seconds", {}).get("total")
        rate = run.summary.get("steps_per_sec")
        lines.append(
            f"| {run.name} | {run_label(run)} | {run.summary.get('step', '–')} | "
            f"{run.config['data']['max_text_len']} | {run.config['decode']['max_len']} | "
            f"{'–' if rate is None else f'{rate:.2f}'} | "
            f"{'–' if wall is None else f'{wall / 60:.1f} min'} |")
    return "\n".join(lines)


def render(runs: list[Run], commands: str = "") -> str:
    """The whole markdown page."""
    parts = ["# LCSTS PART II, test split (997 pairs)", "",
             "Built by `python -m experiments.headlines.lcsts_table` from the workdirs below "
             "(docs/headlines.md §7.2). Scores × 100: character ROUGE F1 (mean over titles), "
             "corpus BLEU (sacrebleu zh), first/last-4 character accuracy; R2L share = titles "
             "the R2L side produced.", ""]
    if commands:
        parts += ["Commands:", "", "```", commands.rstrip(), "```", ""]
    parts += ["## Runs", "", runs_table(runs), "", "## Decoders", "", results_table(runs), "",
              "## Leakage", "",
              "Training cross-entropy (nats per token, the training batches at each logged "
              "step). The post's symptom of leakage: the bidirectional model's *sum* of both "
              "directions falls below the unidirectional model's single L2R loss.", "",
              leakage_curve_table(runs), "",
              "Held-out CE at the best checkpoint, each decoder reading the other direction "
              "built from the gold title or from another example's title (leak gap = the "
              "mean of the swapped losses − the mean of the gold ones):", "",
              held_out_table(runs), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.headlines.lcsts_table")
    parser.add_argument("--runs", nargs="+", required=True, help="training workdirs")
    parser.add_argument("--commands", default="", help="a file shown above the tables")
    parser.add_argument("--out", default="", help="markdown file; stdout when empty")
    args = parser.parse_args(argv)
    runs = [run for run in map(read_run, map(pathlib.Path, sorted(args.runs))) if run]
    if not runs:
        print("no training workdirs (config.json) among --runs", file=sys.stderr)
        return 2
    commands = pathlib.Path(args.commands).read_text() if args.commands else ""
    page = render(runs, commands)
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(page, encoding="utf-8")
        print(f"written to {args.out}")
    else:
        print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
