"""Trains the character LM once per attention pattern at equal steps and tabulates bpc (SPEC §4).

    python -m experiments.sparse_lm.compare \
        --data ../shared/data/sparse_attention_lm/tinyshakespeare_input.txt \
        --steps 2000 --out results/sparse_lm

Each run is `python launch.py sparse_lm` (the "" config) with `model.pattern` changed and
everything else equal: Full, Atrous(r), Local(r), Sparse(r) and Local(r)/Atrous(r)
alternating over layers, r = --rate (32 ≈ √1024 by default). Every run keeps its own
workdir (checkpoints, metrics.jsonl, summary.json) under --workdirs/NAME, runs/sparse_lm_compare
by default, outside results/ because checkpoints are large; rerunning the command resumes
unfinished runs and reuses finished ones whose config.json is unchanged. The table goes to
OUT/compare.md (or --table) with the summaries in OUT/compare.json, and is printed.
"""

import argparse
import json
import pathlib
import platform
import shlex
import sys

import jax

from experiments import configs, host_memory
from experiments.sparse_lm import config as config_lib
from experiments.sparse_lm import train


def patterns(rate: int) -> tuple[tuple[str, str], ...]:
    """(name, pattern string) of the compared runs."""
    return (("full", "full"), ("atrous", f"atrous:{rate}"), ("local", f"local:{rate}"),
            ("sparse", f"sparse:{rate}"), ("local/atrous", f"local:{rate},atrous:{rate}"))


def run_one(name: str, config, workdirs: pathlib.Path) -> dict[str, float]:
    """Trains one pattern in WORKDIRS/NAME, or reuses its finished summary."""
    workdir = (workdirs / name.replace("/", "-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    resolved = configs.to_json(config)
    config_path, summary_path = workdir / "config.json", workdir / "summary.json"
    if (summary_path.exists() and config_path.exists()
            and config_path.read_text() == resolved + "\n"):
        summary = json.loads(summary_path.read_text())
        if summary.get("steps") == config.trainer.num_steps:
            print(f"{name}: reusing {summary_path}", flush=True)
            return summary
    config_path.write_text(resolved + "\n")
    print(f"{name}: training in {workdir}", flush=True)
    return train.run(config, workdir)


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
    rows = []
    for name, pattern in patterns(args.rate):
        if args.only and name not in args.only.split(","):
            continue
        config = config_lib.get_config()
        configs.apply_overrides(config, [
            f"data.path={args.data}", f"trainer.num_steps={args.steps}",
            f"model.pattern={pattern}", "trainer.progress_bar=false", *args.overrides])
        rows.append((name, pattern, run_one(name, config, args.workdirs)))
    command = "python -m experiments.sparse_lm.compare " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    table = render(rows, config, args, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.table).write_text(table + "\n")
    (args.out / pathlib.Path(args.table).with_suffix(".json")).write_text(json.dumps(
        {name: {"pattern": pattern, **summary} for name, pattern, summary in rows}, indent=1)
        + "\n")
    print(table)


def render(rows, config, args, command: str) -> str:
    """The markdown table with the setting it was measured in."""
    m = config.model
    first = rows[0][2] if rows else {}
    lines = [
        f"Character LM on `{args.data}`: {args.steps} steps each, batch {config.batch_size} × "
        f"context {m.context}, {m.num_layers} layers × width {m.width}, {m.num_heads} heads, "
        f"AdamW peak {config.optimizer.learning_rate} (warmup {config.optimizer.warmup_steps}, "
        f"cosine); validation = the last {config.data.valid_fraction:.0%} of the text in "
        f"non-overlapping windows, {first.get('valid_chars', 0):,.0f} characters predicted; "
        f"vocabulary {first.get('vocab_size', 0):.0f} (uniform: "
        f"{first.get('uniform_bpc', float('nan')):.3f} bpc).",
        "",
        f"Machine: {platform.machine()}, {jax.devices()[0].device_kind}, "
        f"{len(jax.devices())} device(s); tokens/s is the median steady-state training "
        "throughput, wall time includes compilation and the final evaluation.",
        f"Command: `{command}`",
        "",
        "| pattern | config | validation bpc | tokens/s | train wall time |",
        "|---|---|---|---|---|",
    ]
    for name, pattern, s in rows:
        lines.append(f"| {name} | `{pattern}` | {s['valid_bpc']:.4f} | "
                     f"{s['tokens_per_sec']:,.0f} | {s['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
