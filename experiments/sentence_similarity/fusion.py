"""Fusing the trained encoder's cosine with character TF-IDF cosines: a departure from the seed.

    python -m experiments.sentence_similarity.fusion --workdir W \\
        --data ../shared/data/sentence_similarity/groups.tsv

The seed ranks by the encoder's cosine alone. The two similarities see different things (the
encoder: learned paraphrase; TF-IDF: shared characters and bigrams), so a mix

    score(q, d) = w · cos(z_q, z_d) + (1 − w) · cos(tfidf_q, tfidf_d)

can beat both. `w` is a tuned number, so it is chosen on one half of the held-out groups
(the queries of groups with an even rank in the sorted group ids) and reported on the other
half, every query searching all held-out sentences as in the experiment's own evaluation
(docs/sentence_similarity.md §5). w = 1 is the encoder, w = 0 TF-IDF.
"""

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from experiments import configs, host_memory, sweep
from experiments.sentence_similarity import baseline, input_pipeline, retrieval, train
from experiments.sentence_similarity import config as config_lib

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


def cosine_matrices(embeddings: np.ndarray, sentences: Sequence[str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) float32 encoder cosines and (n, n) float32 TF-IDF cosines (1-2-grams).

    Args:
      embeddings: (n, dim) unit sentence vectors.
      sentences: the n sentences they encode.
    """
    encoder = np.asarray(embeddings, np.float32) @ np.asarray(embeddings, np.float32).T
    tfidf = baseline.tfidf_matrix(list(sentences))
    return encoder, np.asarray((tfidf @ tfidf.T).toarray(), np.float32)


def ranked_neighbours(scores: np.ndarray, depth: int) -> np.ndarray:
    """(n, depth) indices of each row's highest-scoring other rows, best first.

    Args:
      scores: (n, n) similarities; the diagonal (a row against itself) is never returned.
    """
    scores = scores.copy()
    np.fill_diagonal(scores, -np.inf)
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def query_halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the queries used to tune `w` and of those it is reported on: the rows
    of groups with an even, respectively odd, rank among the sorted group ids."""
    _, rank = np.unique(np.asarray(labels), return_inverse=True)
    return np.flatnonzero(rank % 2 == 0), np.flatnonzero(rank % 2 == 1)


def weight_table(encoder: np.ndarray, tfidf: np.ndarray, labels: np.ndarray,
                 weights: Sequence[float] = WEIGHTS) -> list[dict]:
    """Retrieval metrics of every weight on the tuning half, the reporting half and all rows.

    Returns:
      One dict per weight: {"weight", "tune": metrics, "report": metrics, "all": metrics},
      each metrics dict as `retrieval.metrics_from_neighbours`'s.
    """
    labels = np.asarray(labels)
    retrieval.require_relevant_items(labels)
    depth = retrieval.search_depth(labels)
    tune_rows, report_rows = query_halves(labels)
    table = []
    for weight in weights:
        neighbours = ranked_neighbours(weight * encoder + (1.0 - weight) * tfidf, depth)
        table.append({"weight": float(weight), **{
            name: retrieval.metrics_from_neighbours(neighbours[rows], labels, query_rows=rows)
            for name, rows in (("tune", tune_rows), ("report", report_rows),
                               ("all", np.arange(len(labels))))}})
    return table


def best_weight(table: Sequence[dict], metric: str = "top1") -> dict:
    """The row of `weight_table` with the best tuning-half `metric` (the larger w on ties)."""
    return max(table, key=lambda row: (row["tune"][metric], row["weight"]))


def markdown(table: Sequence[dict], chosen: dict) -> str:
    """One line per weight: top-1 and MAP@R on each half and on all queries."""
    lines = ["| w (encoder share) | tune top-1 | report top-1 | report MAP@R | all top-1 | "
             "all top-5 | all top-10 | all MAP@R |", "|" + "---|" * 8]
    for row in table:
        mark = " (chosen)" if row is chosen else ""
        lines.append(
            f"| {row['weight']:.1f}{mark} | {row['tune']['top1']:.4f} | "
            f"{row['report']['top1']:.4f} | {row['report']['map_at_r']:.4f} | "
            + " | ".join(f"{row['all'][k]:.4f}" for k in ("top1", "top5", "top10", "map_at_r"))
            + " |")
    return "\n".join(lines)


def held_out_embeddings(workdir: pathlib.Path, data: str):
    """The trained workdir's unit vectors of the held-out sentences of `data`'s split.

    Returns:
      (embeddings (n, dim), sentences, group ids (n,)).
    """
    config = config_lib.get_config()
    configs.merge_trained(config, workdir, config_lib.TRAINED_FIELDS, {})
    groups, _ = input_pipeline.read_groups(data)
    valid = input_pipeline.split_by_group(groups, config.data.train_fraction).valid
    vocab, model, params = train._load_trained(config, workdir)
    token_ids = vocab.encode(valid.sentences, config.data.maxlen)
    return (train.encode(model, params, token_ids, config.eval_batch_size), valid.sentences,
            np.asarray(valid.group_ids))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=pathlib.Path, required=True,
                        help="a finished sentence_similarity training run")
    parser.add_argument("--data", required=True, help="the groups file it was trained on")
    parser.add_argument("--weights", type=float, nargs="*", default=list(WEIGHTS))
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the table here")
    args = parser.parse_args(argv)
    bad = [w for w in args.weights if not 0.0 <= w <= 1.0]
    if bad:
        parser.error(f"--weights must lie in [0, 1], got {bad}")
    host_memory.keep_freed_memory_and_say()
    embeddings, sentences, labels = held_out_embeddings(args.workdir, args.data)
    table = weight_table(*cosine_matrices(embeddings, sentences), labels, args.weights)
    chosen = best_weight(table)
    tune_rows, report_rows = query_halves(labels)
    text = (f"Fusion of `{args.workdir}` with character 1-2-gram TF-IDF on the held-out groups "
            f"of `{args.data}` ({len(labels)} sentences; w tuned on the {len(tune_rows)} "
            f"queries of even-ranked groups, reported on the {len(report_rows)} others)\n\n"
            + markdown(table, chosen))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    print(json.dumps({"weight": chosen["weight"], "report": chosen["report"],
                      "all": chosen["all"]}))


if __name__ == "__main__":
    sys.exit(sweep.run_command(main, "experiments.sentence_similarity.fusion"))
