"""Trains each margin-softmax loss with one budget and tabulates open-set retrieval (SPEC §1.7).

    python -m experiments.sentence_similarity.compare \
        --data ../shared/data/sentence_similarity/groups.tsv --epochs 5 \
        --out results/sentence_similarity

Each run is `python launch.py sentence_similarity` with `loss.kind` (and, for AM, also
`model.final_state=masked`) changed and everything else equal; every run keeps its own
workdir under OUT/runs/, and the table (OUT/compare.md) puts the seed's figures beside ours.
"""

import argparse
import json
import pathlib
import time

from experiments import configs, host_memory
from experiments.sentence_similarity import baseline
from experiments.sentence_similarity import config as config_lib
from experiments.sentence_similarity import train

# SPEC §1.7: the seed's private corpus (~100k groups of 5-10 sentences), 30 epochs.
SEED_TABLE = {"softmax": (0.9077, 0.9565, 0.9673), "am": (0.9172, 0.9607, 0.9709),
              "simpler_a": (0.9135, 0.9587, 0.9697)}

# The five runs first (every loss with the seed's last_step state, and AM masked), then
# the other losses with the masked state, which learns far faster on this corpus.
RUNS = (("softmax", "last_step"), ("am", "last_step"), ("simpler_a", "last_step"),
        ("arcface", "last_step"), ("am", "masked"), ("softmax", "masked"),
        ("simpler_a", "masked"), ("arcface", "masked"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="group_id<TAB>sentence file")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path("results/sentence_similarity"))
    parser.add_argument("--only", nargs="*", default=None, help="kind[:final_state] subset")
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE config overrides")
    args = parser.parse_args(argv)
    host_memory.keep_freed_memory_and_say()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind, final_state in RUNS:
        name = _run_name(kind, final_state)
        if args.only and name not in args.only:
            continue
        config = config_lib.get_config()
        configs.apply_overrides(config, [f"data.path={args.data}", f"epochs={args.epochs}",
                                         f"loss.kind={kind}", f"model.final_state={final_state}",
                                         "trainer.progress_bar=false", *args.overrides])
        workdir = (args.out / "runs" / name.replace(":", "-")).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(configs.to_json(config) + "\n")
        start = time.perf_counter()
        summary = train.run_training(config, workdir)
        summary["minutes"] = (time.perf_counter() - start) / 60
        with (args.out / "compare.jsonl").open("a") as log:
            log.write(json.dumps({"run": name, "epochs": args.epochs, **summary}) + "\n")
    table = render(_latest_rows(args.out / "compare.jsonl", args.epochs), args)
    (args.out / "compare.md").write_text(table + "\n")
    print(table)


def _run_name(kind: str, final_state: str) -> str:
    """"am" for the seed's last_step state, "am:masked" otherwise."""
    return kind if final_state == "last_step" else f"{kind}:{final_state}"


def _latest_rows(path: pathlib.Path, epochs: int) -> list[tuple[str, dict]]:
    """The last logged result of each run trained for `epochs`, in RUNS order."""
    latest = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("epochs") == epochs:
            latest[record["run"]] = record
    order = [_run_name(kind, final_state) for kind, final_state in RUNS]
    return [(name, latest[name]) for name in order if name in latest]


def render(rows, args) -> str:
    lines = [f"Open-set retrieval on `{args.data}` ({args.epochs} epochs each, batch 100, "
             "Adam 1e-3, s = 30, m = 0.35; best top-1 checkpoint; validation = held-out groups)",
             "", "| loss | final state | top-1 | top-5 | top-10 | MAP@R | FAQ P / R at threshold | "
             "seed top-1 / 5 / 10 (SPEC §1.7) |", "|---|---|---|---|---|---|---|---|"]
    tfidf = baseline.held_out_tfidf_metrics(args.data,
                                            config_lib.get_config().data.train_fraction)
    lines.append(f"| char 1-2-gram TF-IDF, no training (baseline.py) | — | {tfidf['top1']:.4f} "
                 f"| {tfidf['top5']:.4f} | {tfidf['top10']:.4f} | {tfidf['map_at_r']:.4f} "
                 "| — | — |")
    for name, s in rows:
        kind, _, final = name.partition(":")
        seed = SEED_TABLE.get(kind) if not final else None
        lines.append(
            f"| {kind} | {final or 'last_step'} | {s['top1']:.4f} | {s['top5']:.4f} "
            f"| {s['top10']:.4f} | {s['map_at_r']:.4f} | {s['faq_precision']:.3f} / "
            f"{s['faq_recall']:.3f} | {' / '.join(f'{v:.4f}' for v in seed) if seed else '—'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
