"""Trains the character LM once per attention pattern at equal steps and tabulates bpc.

    python -m experiments.sparse_lm.compare \
        --data ../shared/data/sparse_attention_lm/tinyshakespeare_input.txt \
        --steps 2000 --out results/sparse_lm

Each run is `python launch.py sparse_lm` (the "" config) with `model.pattern` changed and
everything else equal: Full, Atrous(r), Local(r), Sparse(r) and Local(r)/Atrous(r)
alternating over layers, r = --rate (32 ≈ √1024 by default; docs/sparse_attention.md).
`experiments.sweep` trains each in its own workdir (checkpoints, metrics.jsonl,
summary.json) under --workdirs/NAME, runs/sparse_lm_compare by default, outside results/
because checkpoints are large; rerunning the command resumes unfinished runs and reuses
finished ones whose config.json is unchanged. The table goes to OUT/compare.md (or --table)
with the summaries in OUT/compare.json, and is printed.
"""

import argparse
import json
import pathlib
import platform
import shlex
import sys

import jax

from experiments import host_memory, sweep

EXPERIMENT = "sparse_lm"
COLUMNS = (
    sweep.Column("pattern"), sweep.Column("config"),
    sweep.Column("validation bpc", "results.valid_bpc", ".4f"),
    sweep.Column("tokens/s", "results.tokens_per_sec", ",.0f"),
    sweep.Column("train wall time", "wall_seconds.total", ".1f", scale=1 / 60, suffix=" min"),
)


def patterns(rate: int) -> tuple[tuple[str, str], ...]:
    """(name, pattern string) of the compared runs."""
    return (("full", "full"), ("atrous", f"atrous:{rate}"), ("local", f"local:{rate}"),
            ("sparse", f"sparse:{rate}"), ("local/atrous", f"local:{rate},atrous:{rate}"))


def cells(data: str, steps: int, rate: int, only=(), overrides=()) -> list[sweep.Cell]:
    """One cell per pattern (those named in `only`, or all), in workdirs like "local-atrous"."""
    return [sweep.Cell(name=name.replace("/", "-"), spec=EXPERIMENT,
                       overrides=(f"data.path={data}", f"trainer.num_steps={steps}",
                                  f"model.pattern={pattern}", "trainer.progress_bar=false",
                                  *overrides),
                       labels={"pattern": name, "config": f"`{pattern}`"})
            for name, pattern in patterns(rate) if not only or name in only]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a UTF-8 text file")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=32, help="r of Atrous/Local/Sparse")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/sparse_lm"))
    parser.add_argument("--workdirs", type=pathlib.Path,
                        default=pathlib.Path("runs/sparse_lm_compare"),
                        help="one run directory per pattern goes under here")
    parser.add_argument("--table", default="compare.md", help="table file name under --out")
    parser.add_argument("--only", default="",
                        help="comma-separated subset of the names (full,atrous,local,sparse,"
                             "local/atrous)")
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE config overrides")
    args = parser.parse_args(argv)
    host_memory.keep_freed_memory_and_say()
    only = [name for name in args.only.split(",") if name]
    chosen = cells(args.data, args.steps, args.rate, only, args.overrides)
    rows = sweep.run_sweep(chosen, args.workdirs)
    # The settings every pattern shares, for the table's caption.
    config = sweep.resolve_config(
        EXPERIMENT, cells(args.data, args.steps, args.rate, (), args.overrides)[0].overrides)
    command = "python -m experiments.sparse_lm.compare " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    table = render(rows, config, args, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.table).write_text(table + "\n")
    (args.out / pathlib.Path(args.table).with_suffix(".json")).write_text(json.dumps(
        {row.labels["pattern"]: {"pattern": row.labels["config"].strip("`"),
                                 **row.summaries[0]} for row in rows}, indent=1) + "\n")
    print(table)


def render(rows, config, args, command: str) -> str:
    """The markdown table with the setting it was measured in."""
    m = config.model
    results = rows[0].summaries[0].get("results", {}) if rows else {}
    lines = [
        f"Character LM on `{args.data}`: {args.steps} steps each, batch {config.batch_size} × "
        f"context {m.context}, {m.num_layers} layers × width {m.width}, {m.num_heads} heads, "
        f"AdamW peak {config.optimizer.learning_rate} (warmup {config.optimizer.warmup_steps}, "
        f"cosine); validation = the last {config.data.valid_fraction:.0%} of the text in "
        f"non-overlapping windows, {results.get('valid_chars', 0):,.0f} characters predicted; "
        f"vocabulary {results.get('vocab_size', 0):.0f} (uniform: "
        f"{results.get('uniform_bpc', float('nan')):.3f} bpc).",
        "",
        f"Machine: {platform.machine()}, {jax.devices()[0].device_kind}, "
        f"{len(jax.devices())} device(s); tokens/s is the median steady-state training "
        "throughput, wall time includes compilation and the final evaluation.",
        f"Command: `{command}`",
        "",
        sweep.markdown_table(rows, COLUMNS),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(sweep.run_command(main, "experiments.sparse_lm.compare"))
