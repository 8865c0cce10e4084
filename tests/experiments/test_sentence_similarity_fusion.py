"""experiments/sentence_similarity/fusion.py: encoder + TF-IDF score mixing, tuned on half the
held-out groups."""

import json

import numpy as np
import pytest

import launch
from experiments.sentence_similarity import baseline, fusion, retrieval, synthetic


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ranked_neighbours_by_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((9, 9)).astype(np.float32)
    got = fusion.ranked_neighbours(scores, 4)
    for row in range(9):
        others = [j for j in np.argsort(-scores[row], kind="stable") if j != row]
        assert got[row].tolist() == others[:4]


def test_metrics_on_query_rows_are_the_full_metrics_restricted():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), [2, 3, 2, 4, 2, 3])
    neighbours = fusion.ranked_neighbours(rng.standard_normal((16, 16)), 5)
    rows = np.array([0, 3, 4, 9, 15])
    part = retrieval.metrics_from_neighbours(neighbours[rows], labels, query_rows=rows)
    hits = labels[neighbours[rows]] == labels[rows][:, None]
    assert part["top1"] == pytest.approx(hits[:, 0].mean())
    assert part["top5"] == pytest.approx(hits.any(axis=1).mean())


def test_weights_one_and_zero_are_the_encoder_and_tfidf():
    rows = synthetic.generate(num_items=6, seed=3)
    labels = np.array([group for group, _ in rows])
    sentences = [sentence for _, sentence in rows]
    embeddings = _unit(np.random.default_rng(2), len(rows), 16)
    table = fusion.weight_table(*fusion.cosine_matrices(embeddings, sentences), labels,
                                weights=(0.0, 0.5, 1.0))
    by_weight = {row["weight"]: row for row in table}
    assert by_weight[1.0]["all"] == pytest.approx(retrieval.retrieval_metrics(embeddings, labels))
    assert by_weight[0.0]["all"] == pytest.approx(
        baseline.tfidf_retrieval_metrics(sentences, labels))
    tune, report = fusion.query_halves(labels)
    assert len(tune) + len(report) == len(labels) and not set(tune) & set(report)
    assert not set(labels[tune]) & set(labels[report])      # halves split whole groups
    for row in table:                                        # top-1 is a mean over queries
        assert row["all"]["top1"] == pytest.approx(
            (len(tune) * row["tune"]["top1"] + len(report) * row["report"]["top1"])
            / len(labels))
    chosen = fusion.best_weight(table)
    assert chosen["tune"]["top1"] == max(row["tune"]["top1"] for row in table)


def test_main_on_a_trained_workdir(tmp_path, capsys):
    data = tmp_path / "groups.tsv"
    synthetic.write(data, num_items=12)
    workdir = tmp_path / "run"
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        f"--config.data.path={data}", "--config.trainer.num_steps=120",
                        "--config.trainer.eval_every=60"]) == 0
    # The held-out vectors are the best checkpoint's on the trainer's validation split.
    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    best = max((row for row in evals if row.get("split") == "eval"), key=lambda r: r["top1"])
    embeddings, sentences, labels = fusion.held_out_embeddings(workdir, str(data))
    assert retrieval.retrieval_metrics(embeddings, labels) == pytest.approx(
        {k: best[k] for k in ("top1", "top5", "top10", "map_at_r")})

    capsys.readouterr()
    out = tmp_path / "fusion.md"
    fusion.main(["--workdir", str(workdir), "--data", str(data), "--weights", "0", "1",
                 "--out", str(out)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {line.split("|")[1].strip().split()[0]: line.split("|")
            for line in out.read_text().splitlines() if line.startswith(("| 0.0", "| 1.0"))}
    assert float(rows["0.0"][5]) == pytest.approx(
        baseline.held_out_tfidf_metrics(data, 0.9)["top1"], abs=1e-4)
    assert result["weight"] in (0.0, 1.0) and set(result["all"]) == {
        "top1", "top5", "top10", "map_at_r"}
    with pytest.raises(SystemExit):
        fusion.main(["--workdir", str(workdir), "--data", str(data), "--weights", "1.5"])
