"""Why the encoder trails character TF-IDF: vocabulary counts and training sweeps.

    python -m experiments.sentence_similarity.diagnose vocab \\
        ../shared/data/sentence_similarity/groups.tsv --min-counts 1 2 5
    python -m experiments.sentence_similarity.diagnose sweep \\
        ../shared/data/sentence_similarity/groups.tsv --root runs/ss19 --only am-masked-e30

`vocab` trains nothing: with the experiment's own split and vocabulary (`input_pipeline`),
it tabulates for each `data.min_count` the vocabulary size, the share of held-out
characters that are unknown (id 1), the share of held-out sentences with one or more, and
the share of held-out characters whose id never occurs in a training sentence (an
embedding row that training never updates).

`sweep` trains the rows of `ROWS` that `--only` names (all by default) with
`experiments.sweep`, one workdir each under ROOT (finished runs are reused, shorter ones
continued), and tabulates every finished row: best top-1 reached by epochs 6, 10, 15, 20, 30
(read from each run's metrics.jsonl, so one 30-epoch run gives all four) and the best
checkpoint's figures. The results and their reading are in
results/sentence_similarity/diagnosis.md.
"""

import argparse
import dataclasses
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from experiments import host_memory, sweep
from experiments.sentence_similarity import config as config_lib
from experiments.sentence_similarity import input_pipeline

EXPERIMENT = "sentence_similarity"


# ------------------------------------------------------------------------------------------
# Vocabulary.


def untrained_characters(train_ids: np.ndarray, valid_ids: np.ndarray) -> dict[str, float]:
    """Held-out characters with a known id that no training sentence contains.

    Such an id's embedding row keeps its initial random value: the vocabulary is built on
    the whole file (docs/sentence_similarity.md §4), so with a small `min_count` it holds
    characters seen only in held-out sentences.

    Args:
      train_ids: (n_train, T) int ids.
      valid_ids: (n_valid, T) int ids.

    Returns:
      {"untrained_characters": count, "untrained_share": its share of the real (non-pad)
       held-out characters}.
    """
    seen = np.zeros(max(int(train_ids.max(initial=1)), int(valid_ids.max(initial=1))) + 1,
                    bool)
    seen[np.asarray(train_ids).ravel()] = True
    valid_ids = np.asarray(valid_ids)
    known = valid_ids > input_pipeline.UNK                     # [n_valid, T]
    untrained = known & ~seen[valid_ids]
    characters = int(np.sum(valid_ids != input_pipeline.PAD))
    count = int(np.sum(untrained))
    return {"untrained_characters": count,
            "untrained_share": count / characters if characters else 0.0}


def vocab_row(groups: input_pipeline.Groups, split: input_pipeline.OpenSetSplit,
              min_count: int, maxlen: int) -> dict[str, float]:
    """The vocabulary figures of one `min_count`, as training would build them."""
    vocab = input_pipeline.Vocabulary.build(groups.sentences, min_count)
    valid_ids = vocab.encode(split.valid.sentences, maxlen)
    train_ids = vocab.encode(split.train.sentences, maxlen)
    return {"min_count": min_count, "vocabulary": vocab.size,
            **input_pipeline.unknown_characters(valid_ids),
            **untrained_characters(train_ids, valid_ids)}


def vocab_table(rows: Sequence[dict]) -> str:
    """A markdown table of `vocab_row` results."""
    lines = ["| data.min_count | vocabulary (with pad, unk) | held-out characters UNK | "
             "held-out sentences with ≥ 1 UNK | held-out characters never in training |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['min_count']} | {row['vocabulary']} | {row['unknown_characters']} / "
            f"{row['characters']} ({row['unknown_share']:.2%}) | "
            f"{row['sentences_with_unknown']} / {row['sentences']} "
            f"({row['sentences_with_unknown_share']:.2%}) | {row['untrained_characters']} "
            f"({row['untrained_share']:.2%}) |")
    return "\n".join(lines)


def vocab_main(args) -> None:
    config = config_lib.get_config()
    groups, skipped = input_pipeline.read_groups(args.data)
    if len(skipped):
        print(skipped.summary())
    split = input_pipeline.split_by_group(groups, config.data.train_fraction)
    rows = [vocab_row(groups, split, m, config.data.maxlen) for m in args.min_counts]
    print(f"{args.data}: held-out = the {len(split.valid)} sentences of groups with id ≥ "
          f"{split.cut}; characters counted within data.maxlen = {config.data.maxlen}")
    print(vocab_table(rows))
    print(json.dumps(rows))


# ------------------------------------------------------------------------------------------
# Training sweep.


@dataclasses.dataclass(frozen=True)
class Variant:
    """One diagnosis row: what it changes from the seed and its overrides."""

    name: str
    change: str
    overrides: tuple[str, ...]


# Every row trains AM-Softmax with the masked final state (the best seed-family setting of
# compare.md). The base row runs the seed's 30 epochs, so its curve gives 5, 10, 20 and 30;
# a one-change row runs 6 or 12 epochs and is read against the base's curve at that epoch.
MASKED = ("model.final_state=masked",)
BIMAX = ("model.bidirectional=true", "model.pooling=max")
# The rows built on ARCFACE_RECIPE train ArcFace: bimax-s20-arcface-e8 (8 epochs at a
# constant rate, the recipe their descriptions name; the preset until the cosine decay of
# bimax-s20-arcface-cos-e12 replaced it) and one change each.
ARCFACE_RECIPE = (*MASKED, *BIMAX, "loss.scale=20", "loss.kind=arcface")
ROWS = (
    Variant("am-masked-e30", "none (AM, masked, the seed's 30 epochs)", (*MASKED, "epochs=30")),
    Variant("bimax-e6", "bidirectional GRU + max pooling (z = 2 × 128)",
            (*MASKED, *BIMAX, "epochs=6")),
    Variant("bimax-e12", "bidirectional GRU + max pooling (z = 2 × 128)",
            (*MASKED, *BIMAX, "epochs=12")),
    Variant("bimax-drop-e12", "bidirectional GRU + max pooling, dropout 0.2",
            (*MASKED, *BIMAX, "model.dropout=0.2", "epochs=12")),
    Variant("bimax-m050-e8", "bidirectional GRU + max pooling, m 0.35 → 0.5",
            (*MASKED, *BIMAX, "loss.margin=0.5", "epochs=8")),
    Variant("bimax-s20-e8", "bidirectional GRU + max pooling, s 30 → 20",
            (*MASKED, *BIMAX, "loss.scale=20", "epochs=8")),
    Variant("bimax-s20-arcface-e8", "the recipe's model and s 20 with ArcFace (m 0.35 rad)",
            (*ARCFACE_RECIPE, "epochs=8")),
    Variant("bimax-s20-arcface-m050-e8", "the recipe with ArcFace's m 0.35 → 0.5 rad",
            (*ARCFACE_RECIPE, "loss.margin=0.5", "epochs=8")),
    Variant("bimax-s20-arcface-m025-e8", "the recipe with ArcFace's m 0.35 → 0.25 rad",
            (*ARCFACE_RECIPE, "loss.margin=0.25", "epochs=8")),
    Variant("bimax-s20-arcface-seed1-e8", "the recipe, initialisation and order seed 0 → 1",
            (*ARCFACE_RECIPE, "trainer.seed=1", "epochs=8")),
    Variant("bimax-s20-arcface-drop-e8", "the recipe with dropout 0.2 on the embeddings",
            (*ARCFACE_RECIPE, "model.dropout=0.2", "epochs=8")),
    Variant("bimax-s20-arcface-cos-e8", "the recipe with the rate's cosine decay to 0 over "
            "the 8 epochs", (*ARCFACE_RECIPE, "optimizer.decay=cosine", "epochs=8")),
    Variant("bimax-s20-arcface-cos-e12", "the recipe with the rate's cosine decay to 0 over "
            "12 epochs", (*ARCFACE_RECIPE, "optimizer.decay=cosine", "epochs=12")),
    # The other losses under the recipe (bimax, s 20, cosine decay, 12 epochs).
    *(Variant(f"bimax-s20-{kind.replace('_', '')}-cos-e12",
              f"the recipe with loss.kind={kind}",
              (*MASKED, *BIMAX, "loss.scale=20", f"loss.kind={kind}",
               "optimizer.decay=cosine", "epochs=12"))
      for kind in ("am", "simpler_a", "softmax")),
    Variant("bimax-s20-arcface-w2v-e8", "the recipe with the embedding started from "
            "character skip-gram vectors of news text (file scale)",
            (*ARCFACE_RECIPE, "model.embedding_init={char_vectors}", "epochs=8")),
    Variant("bimax-s20-arcface-w2v-std-e8", "the recipe with the embedding started from "
            "those vectors rescaled to U(−0.05, 0.05)'s std",
            (*ARCFACE_RECIPE, "model.embedding_init={char_vectors}",
             f"model.embedding_init_std={0.05 / 3 ** 0.5:.4f}", "epochs=8")),
    Variant("bimax-s20-ema-e8", "the recipe (bimax, s 20) + EMA of the weights, decay 0.999",
            (*MASKED, *BIMAX, "loss.scale=20", "trainer.ema_decay=0.999", "epochs=8")),
    Variant("bimax-s20-h256-e8", "the recipe (bimax, s 20) with GRU width 128 → 256",
            (*MASKED, *BIMAX, "loss.scale=20", "model.hidden_dim=256", "epochs=8")),
    Variant("bimax-s15-e6", "bidirectional GRU + max pooling, s 30 → 15",
            (*MASKED, *BIMAX, "loss.scale=15", "epochs=6")),
    Variant("min1-e6", "data.min_count 5 → 1", (*MASKED, "data.min_count=1", "epochs=6")),
    Variant("bi-e6", "bidirectional GRU, final states (z = 2 × 128)",
            (*MASKED, "model.bidirectional=true", "epochs=6")),
    Variant("max-e6", "max pooling over the GRU states", (*MASKED, "model.pooling=max",
                                                          "epochs=6")),
    Variant("h256-e6", "hidden 128 → 256", (*MASKED, "model.hidden_dim=256", "epochs=6")),
    Variant("drop-e6", "dropout 0.2 on the embeddings", (*MASKED, "model.dropout=0.2",
                                                         "epochs=6")),
    Variant("s20-e6", "s 30 → 20", (*MASKED, "loss.scale=20", "epochs=6")),
    Variant("s64-e6", "s 30 → 64", (*MASKED, "loss.scale=64", "epochs=6")),
    Variant("m025-e6", "m 0.35 → 0.25", (*MASKED, "loss.margin=0.25", "epochs=6")),
    Variant("m050-e6", "m 0.35 → 0.5", (*MASKED, "loss.margin=0.5", "epochs=6")),
)

# The row whose settings are the `sentence_similarity:recipe` preset (config.py).
RECIPE_ROW = "bimax-s20-arcface-cos-e12"

# Epochs at which the best-so-far validation top-1 is shown.
CURVE_EPOCHS = (6, 10, 15, 20, 30)


# Character vectors for the embedding_init rows: trained once per sweep root on text that is
# not the paraphrase corpus (news headlines and abstracts), as `char_vectors` would.
CHAR_VECTORS_FILE = "char_vectors.txt"
HEADLINES = pathlib.Path("../shared/data/headline_generation")
CHAR_VECTOR_TEXTS = (HEADLINES / "LCSTS_PART_II_via_CLGE/train.tsv",
                     HEADLINES / "CSL_via_CLGE/val.tsv", HEADLINES / "CSL_via_CLGE/test.tsv")


def cells(data: str, root, rows: Sequence[Variant] = ROWS) -> list[sweep.Cell]:
    """One sweep cell per row, workdir ROOT/NAME; "{char_vectors}" in a row's overrides is
    ROOT/char_vectors.txt."""
    vectors = pathlib.Path(root).resolve() / CHAR_VECTORS_FILE
    return [sweep.Cell(name=row.name, spec=EXPERIMENT,
                       overrides=(f"data.path={data}",
                                  *(o.format(char_vectors=vectors) for o in row.overrides),
                                  "trainer.progress_bar=false"),
                       labels={"row": row.name, "change": row.change})
            for row in rows]


def ensure_char_vectors(root, texts: Sequence[pathlib.Path], dim: int) -> pathlib.Path:
    """ROOT/char_vectors.txt, trained from `texts` (`char_vectors`) if it is not there."""
    from experiments.sentence_similarity import char_vectors

    path = pathlib.Path(root).resolve() / CHAR_VECTORS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        char_vectors.main(["--out", str(path), "--dim", str(dim), *map(str, texts)])
    return path


def eval_rows(metrics_path) -> list[dict]:
    """The validation rows of a run's metrics.jsonl, one per epoch in step order (the last
    line of a step wins, since a resumed run logs its steps again)."""
    by_step = {}
    for line in pathlib.Path(metrics_path).read_text().splitlines():
        row = json.loads(line)
        if row.get("split") == "eval" and "top1" in row:
            by_step[row["step"]] = row
    return [by_step[step] for step in sorted(by_step)]


def best_by_epoch(curve: Sequence[float], epochs: Sequence[int] = CURVE_EPOCHS
                  ) -> dict[int, float | None]:
    """The best top-1 of the first e evaluations (what the best checkpoint holds after e
    epochs), None where the run is shorter."""
    return {e: (max(curve[:e]) if len(curve) >= e else None) for e in epochs}


def table_row(label: str, change: str, evals: Sequence[dict], status: str) -> str:
    """One markdown row: best-so-far top-1 by epoch, then the best epoch's figures.

    Args:
      label, change: the row's name and what it changes.
      evals: `eval_rows` of its run (non-empty).
      status: "finished" or why the run stopped early.
    """
    curve = [row["top1"] for row in evals]
    by_epoch = best_by_epoch(curve)
    best = int(np.argmax(curve))
    figures = (f"{evals[best][k]:.4f}" for k in ("top1", "top5", "top10", "map_at_r"))
    return "| " + " | ".join([
        label, change, *("—" if by_epoch[e] is None else f"{by_epoch[e]:.4f}"
                         for e in CURVE_EPOCHS),
        str(best + 1), *figures, status]) + " |"


TABLE_HEAD = ["row", "change", *(f"top-1 by ep {e}" for e in CURVE_EPOCHS), "best epoch",
              "top-1", "top-5", "top-10", "MAP@R", "run"]


def sweep_table(cells_: Sequence[sweep.Cell], root) -> str:
    """Markdown over every row with a metrics.jsonl under ROOT, finished or stopped early
    (a stopped run shows its curve so far and how many epochs it ran)."""
    finished = {row.labels["name"] for row in sweep.collect(cells_, root)}
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for cell in cells_:
        metrics = cell.workdirs(root)[0] / "metrics.jsonl"
        evals = eval_rows(metrics) if metrics.is_file() else []
        if not evals:
            continue
        status = ("finished" if cell.name in finished
                  else f"stopped after {len(evals)} epochs")
        lines.append(table_row(cell.labels["row"], cell.labels["change"], evals, status))
    return "\n".join(lines)


def sweep_main(args) -> None:
    host_memory.keep_freed_memory_and_say()
    known = {row.name: row for row in ROWS}
    unknown = [name for name in args.only or () if name not in known]
    if unknown:
        raise sweep.SweepError(f"unknown rows {unknown}; valid: {', '.join(known)}")
    chosen = [known[name] for name in args.only] if args.only else list(ROWS)
    if not args.table_only:
        if any("{char_vectors}" in o for row in chosen for o in row.overrides):
            ensure_char_vectors(args.root, args.vector_texts,
                                config_lib.get_config().model.embed_dim)
        sweep.run_sweep(cells(args.data, args.root, chosen), args.root)
    table = sweep_table(cells(args.data, args.root), args.root)
    if args.out:
        args.out.write_text(table + "\n")
    print(table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    vocab = commands.add_parser("vocab", help="vocabulary figures, no training")
    vocab.add_argument("data", help="group_id<TAB>sentence file")
    vocab.add_argument("--min-counts", type=int, nargs="+", default=[1, 2, 5])
    vocab.set_defaults(run=vocab_main)
    train = commands.add_parser("sweep", help="train ROWS and tabulate them")
    train.add_argument("data", help="group_id<TAB>sentence file")
    train.add_argument("--root", type=pathlib.Path, default=pathlib.Path("runs/ss19"))
    train.add_argument("--only", nargs="*", default=None,
                       help=f"row names (default: all): {', '.join(r.name for r in ROWS)}")
    train.add_argument("--out", type=pathlib.Path, default=None, help="write the table here")
    train.add_argument("--table-only", action="store_true", help="train nothing, tabulate")
    train.add_argument("--vector-texts", type=pathlib.Path, nargs="+",
                       default=list(CHAR_VECTOR_TEXTS),
                       help="text for ROOT/char_vectors.txt of the embedding_init rows "
                            "(default: the shared news headlines and CSL abstracts)")
    train.set_defaults(run=sweep_main)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    sys.exit(sweep.run_command(main, "experiments.sentence_similarity.diagnose"))
