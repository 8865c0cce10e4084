"""Trains each margin-softmax loss with one budget and tabulates open-set retrieval.

    python -m experiments.sentence_similarity.compare \
        --data ../shared/data/sentence_similarity/groups.tsv --epochs 5 \
        --out results/sentence_similarity

Each run is `python launch.py sentence_similarity` with `loss.kind` and `model.final_state`
changed and everything else equal, trained by `experiments.sweep` in its own workdir under
OUT/runs/ (finished runs are reused, unfinished ones resumed). The table (OUT/compare.md)
starts with the TF-IDF baseline, which needs no training, and puts the post's figures
(https://kexue.fm/archives/5743) beside ours; it lists every run of OUT/runs/ finished with
this command's settings, so runs split over several `--only` invocations share one table.
"""

import argparse
import pathlib
import sys

from experiments import host_memory, sweep
from experiments.sentence_similarity import baseline
from experiments.sentence_similarity import config as config_lib

EXPERIMENT = "sentence_similarity"
# The post's figures: its private corpus (~100k groups of 5-10 sentences), 30 epochs.
SEED_TABLE = {"softmax": (0.9077, 0.9565, 0.9673), "am": (0.9172, 0.9607, 0.9709),
              "simpler_a": (0.9135, 0.9587, 0.9697)}
SEED_HEADER = "seed top-1 / 5 / 10 (the post)"

# Every loss with the seed's last_step state and AM masked first, then the other losses
# with the masked state, which learns far faster on this corpus.
RUNS = (("softmax", "last_step"), ("am", "last_step"), ("simpler_a", "last_step"),
        ("arcface", "last_step"), ("am", "masked"), ("softmax", "masked"),
        ("simpler_a", "masked"), ("arcface", "masked"))

COLUMNS = (
    sweep.Column("loss"), sweep.Column("final state"),
    sweep.Column("top-1", "results.top1", ".4f"), sweep.Column("top-5", "results.top5", ".4f"),
    sweep.Column("top-10", "results.top10", ".4f"),
    sweep.Column("MAP@R", "results.map_at_r", ".4f"),
    sweep.Column("FAQ P / R at threshold", ("results.faq_precision", "results.faq_recall"),
                 ".3f"),
    sweep.Column(SEED_HEADER),
)


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
    all_cells = cells(args.data, args.epochs, args.overrides)
    chosen = [cell for cell in all_cells
              if not args.only or cell.labels["run"] in args.only]
    sweep.run_sweep(chosen, args.out / "runs")
    table = render(sweep.collect(all_cells, args.out / "runs"), args)
    (args.out / "compare.md").write_text(table + "\n")
    print(table)


def run_name(kind: str, final_state: str) -> str:
    """"am" for the seed's last_step state, "am:masked" otherwise (the `--only` names)."""
    return kind if final_state == "last_step" else f"{kind}:{final_state}"


def cells(data: str, epochs: int, overrides=()) -> list[sweep.Cell]:
    """One cell per entry of `RUNS`, in its order, in workdirs named like "am-masked"."""
    result = []
    for kind, final_state in RUNS:
        name = run_name(kind, final_state)
        seed = SEED_TABLE.get(kind) if final_state == "last_step" else None
        result.append(sweep.Cell(
            name=name.replace(":", "-"), spec=EXPERIMENT,
            overrides=(f"data.path={data}", f"epochs={epochs}", f"loss.kind={kind}",
                       f"model.final_state={final_state}", "trainer.progress_bar=false",
                       *overrides),
            labels={"run": name, "loss": kind, "final state": final_state,
                    SEED_HEADER: " / ".join(f"{v:.4f}" for v in seed) if seed else "—"}))
    return result


def tfidf_row(data: str) -> sweep.Row:
    """Character 1-2-gram TF-IDF cosines on the same held-out groups: no training."""
    metrics = baseline.held_out_tfidf_metrics(data, config_lib.get_config().data.train_fraction)
    return sweep.Row(labels={"loss": "char 1-2-gram TF-IDF, no training (baseline.py)",
                             "final state": "—", SEED_HEADER: "—"},
                     summaries=[{"results": metrics}])


def render(rows, args) -> str:
    """The caption and the table: the TF-IDF row, then `rows` (`sweep.Row`s of RUNS)."""
    changed = (f"; with `{' '.join(args.overrides)}` on every run" if args.overrides else "")
    caption = (f"Open-set retrieval on `{args.data}` ({args.epochs} epochs each, batch 100, "
               "Adam 1e-3, s = 30, m = 0.35 (the seed's settings, docs/sentence_similarity.md)"
               f"{changed}; best top-1 checkpoint; validation = held-out groups)")
    return caption + "\n\n" + sweep.markdown_table([tfidf_row(args.data), *rows], COLUMNS)


if __name__ == "__main__":
    sys.exit(sweep.run_command(main, "experiments.sentence_similarity.compare"))
