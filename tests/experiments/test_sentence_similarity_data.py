"""Sentence-similarity input pipeline, converter, generated corpus and retrieval metrics."""

import pathlib

import numpy as np
import pytest

from experiments import data
from experiments.sentence_similarity import input_pipeline, retrieval, synthetic

SHARED_GROUPS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / \
    "sentence_similarity" / "groups.tsv"


def test_normalize_is_half_width_then_lower_case():
    # U+FF21 'Ａ' → 'A' → 'a'; U+FF11 '１' → '1'; U+FF01 '！' → '!'; U+3000 → space.
    assert input_pipeline.normalize("ＡＢｃ１２！\u3000沙发") == "abc12! 沙发"
    assert input_pipeline.normalize("～") == "~"   # U+FF5E, the last shifted code point
    assert input_pipeline.normalize("｟") == "｟"   # U+FF5F is outside the shifted range


def test_vocabulary_counts_pads_and_truncates():
    vocab = input_pipeline.Vocabulary.build(["aab", "abc", "a"], min_count=2)
    assert vocab.chars == ("a", "b")  # a ×4, b ×2, c ×1 (dropped)
    assert vocab.size == 4
    ids = vocab.encode(["abc", "ba", "aaaa"], maxlen=3)
    np.testing.assert_array_equal(ids, [[2, 3, 1], [3, 2, 0], [2, 2, 2]])


def test_unknown_characters_hand_computed():
    vocab = input_pipeline.Vocabulary.build(["aab", "abc", "a"], min_count=2)  # a, b
    ids = vocab.encode(["abc", "ba", "xyzq", ""], maxlen=3)
    # Read: a b ? | b a | ? ? ? (q truncated away) | nothing: 8 characters, 4 unknown,
    # in 2 of the 4 sentences.
    report = input_pipeline.unknown_characters(ids)
    assert report == {"characters": 8, "unknown_characters": 4, "unknown_share": 0.5,
                      "sentences": 4, "sentences_with_unknown": 2,
                      "sentences_with_unknown_share": 0.5}
    assert input_pipeline.describe_unknown(report) == (
        "unknown characters: 4 of 8 (50.00%); sentences with one or more: 2 of 4 (50.00%)")
    empty = input_pipeline.unknown_characters(np.zeros((0, 3), np.int32))
    assert empty["unknown_share"] == empty["sentences_with_unknown_share"] == 0.0


def test_vocabulary_round_trips_through_json(tmp_path):
    vocab = input_pipeline.Vocabulary.build(["沙发多高", "沙发多少钱"], min_count=1)
    vocab.save(tmp_path / "vocab.json")
    assert input_pipeline.Vocabulary.load(tmp_path / "vocab.json") == vocab


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_groups_names_file_and_line_of_each_kind_of_bad_row(tmp_path):
    cases = {
        "no_tab.tsv": ("0\ta\n0 b\n", r"no_tab.tsv:2: expected 2 tab-separated columns"),
        "empty.tsv": ("0\ta\n1\t  \n", r"empty.tsv:2: field 'sentence': empty"),
        "not_int.tsv": ("0\ta\nx1\tb\n", r"not_int.tsv:2: field 'group_id': not an integer"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(data.RecordError, match=message):
            input_pipeline.read_groups(_write(tmp_path / name, text))
    with pytest.raises(data.RecordError, match=r"missing.tsv: no such file"):
        input_pipeline.read_groups(tmp_path / "missing.tsv")


def test_skip_bad_counts_every_skipped_row(tmp_path):
    path = _write(tmp_path / "g.tsv", "0\tａ\n0 b\n1\tc\nx\td\n1\te\n")
    groups, skipped = input_pipeline.read_groups(path, skip_bad=True)
    assert groups.sentences == ["a", "c", "e"]
    np.testing.assert_array_equal(groups.lines, [1, 3, 5])
    assert len(skipped) == 2 and "g.tsv:2" in skipped.summary() and "g.tsv:4" in skipped.summary()


def test_open_set_split_keeps_groups_whole_and_relabels_classes():
    rows = [(g, f"s{g}_{i}") for g in (3, 7, 8, 9, 12, 20, 21, 30, 31, 40) for i in range(2)]
    groups = input_pipeline.Groups(np.array([g for g, _ in rows]), [s for _, s in rows],
                                   np.arange(1, len(rows) + 1), "mem")
    split = input_pipeline.split_by_group(groups, train_fraction=0.8)
    assert split.cut == 31                       # the 9th of 10 distinct ids
    assert set(split.train.group_ids) == {3, 7, 8, 9, 12, 20, 21, 30}
    assert set(split.valid.group_ids) == {31, 40}
    assert split.num_classes == 8
    np.testing.assert_array_equal(np.unique(split.train_labels), np.arange(8))
    # Sentences of one group share one class id.
    for g in set(split.train.group_ids):
        assert len(set(split.train_labels[split.train.group_ids == g])) == 1


def test_group_with_one_sentence_is_kept_and_reported():
    groups = input_pipeline.Groups(np.array([0, 0, 1]), ["a", "b", "c"], np.arange(1, 4), "m")
    assert input_pipeline.group_size_report(groups) == {
        "sentences": 3, "groups": 2, "singleton_groups": 1}


def test_pairs_become_connected_components():
    pairs = [("a", "b", True), ("b", "c", True), ("d", "e", True), ("c", "d", False),
             ("f", "g", False), ("x", "x", True), ("e", "h", True)]
    assert input_pipeline.pairs_to_groups(pairs) == [["a", "b", "c"], ["d", "e", "h"]]


def test_pair_file_reader_and_bad_label(tmp_path):
    path = _write(tmp_path / "lcqmc.tsv", "开初婚未育证明怎么弄？\t初婚未育情况证明怎么开？\t1\n"
                                          "a\tb\t0\n")
    pairs, _ = input_pipeline.read_pair_file(path)
    assert pairs == [("开初婚未育证明怎么弄？", "初婚未育情况证明怎么开？", True),
                     ("a", "b", False)]
    bad = _write(tmp_path / "bad.tsv", "a\tb\t1\nc\td\tmaybe\n")
    with pytest.raises(data.RecordError, match=r"bad.tsv:2: field 'label': unknown label"):
        input_pipeline.read_pair_file(bad)


def test_generated_corpus_is_deterministic_and_open_set():
    rows = synthetic.generate(seed=3)
    assert rows == synthetic.generate(seed=3)
    group_ids = np.array([g for g, _ in rows])
    assert len(np.unique(group_ids)) == len(synthetic.ITEMS) * len(synthetic.INTENTS)
    by_group = {}
    for g, sentence in rows:
        by_group.setdefault(g, []).append(sentence)
    assert all(len(s) >= 2 and len(set(s)) == len(s) for s in by_group.values())


def _brute_force_metrics(embeddings, labels, ks=(1, 5, 10)):
    """Plain-numpy reference of docs/sentence_similarity.md §5 (top-k, MAP@R), query by query."""
    n = len(labels)
    similarity = embeddings @ embeddings.T
    hits_at = {k: 0 for k in ks}
    average_precisions = []
    for q in range(n):
        others = [j for j in range(n) if j != q]
        ranked = sorted(others, key=lambda j: -similarity[q, j])
        relevant = sum(labels[j] == labels[q] for j in others)
        for k in ks:
            hits_at[k] += any(labels[j] == labels[q] for j in ranked[:k])
        if relevant:
            precisions = []
            found = 0
            for i, j in enumerate(ranked[:relevant], start=1):
                if labels[j] == labels[q]:
                    found += 1
                    precisions.append(found / i)
            average_precisions.append(sum(precisions) / relevant)
    return {**{f"top{k}": hits_at[k] / n for k in ks}, "map_at_r": np.mean(average_precisions)}


def test_retrieval_metrics_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 15, size=120)
    embeddings = rng.normal(size=(120, 8)) + 1.5 * rng.normal(size=(15, 8))[labels]
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    got = retrieval.retrieval_metrics(embeddings.astype(np.float32), labels)
    want = _brute_force_metrics(embeddings, labels)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_map_at_r_hand_computed():
    # Query 0 has R = 2 relevant items, found at ranks 1 and 3: AP = (1/1 + 0) / 2 (rank 3 > R).
    # Query 1 has R = 1, found at rank 2: AP = 0 (outside the first R ranks).
    hits = np.array([[True, False, True], [False, True, False]])
    assert retrieval.mean_average_precision_at_r(hits, np.array([2, 1])) == pytest.approx(0.25)


def test_nearest_neighbours_never_return_self_and_chunking_is_exact():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(50, 4)).astype(np.float32)
    scores, indices = retrieval.nearest_neighbours(embeddings, 5, chunk_size=7)
    assert not np.any(indices == np.arange(50)[:, None])
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    np.testing.assert_allclose(scores, -np.sort(-similarity, axis=1)[:, :5], rtol=1e-5)


@pytest.mark.skipif(not SHARED_GROUPS.exists(), reason="../shared/data is absent")
def test_shared_groups_file_reads_completely():
    groups, skipped = input_pipeline.read_groups(SHARED_GROUPS)
    assert len(skipped) == 0
    assert len(groups) == 69_527                       # docs/sentence_similarity.md §4
    assert len(np.unique(groups.group_ids)) == 30_085


def test_convert_cli_writes_groups(tmp_path):
    from experiments.sentence_similarity import convert
    pairs = _write(tmp_path / "p.tsv", "a\tb\t1\nb\tc\t1\nd\te\t0\nd\tf\t1\n")
    convert.main([str(pairs), "-o", str(tmp_path / "g.tsv")])
    assert (tmp_path / "g.tsv").read_text() == "0\ta\n0\tb\n0\tc\n1\td\n1\tf\n"


def test_tfidf_matrix_hand_computed():
    # n = 2: "a" is in both (idf log 1 = 0); "b", "aa", "ab" in one each (idf log 2).
    from experiments.sentence_similarity import baseline
    matrix = baseline.tfidf_matrix(["aa", "ab"]).toarray()
    columns = {"a": 0, "aa": 1, "b": 2, "ab": 3}     # first-seen order: unigrams, then bigrams
    np.testing.assert_allclose(matrix[0], [0, 1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(matrix[1, [columns["b"], columns["ab"]]], [2 ** -0.5] * 2,
                               rtol=1e-6)
    assert matrix[1, columns["a"]] == 0


def test_sparse_nearest_neighbours_match_dense_search():
    import scipy.sparse

    from experiments.sentence_similarity import baseline
    rng = np.random.default_rng(2)
    dense = rng.random((40, 30)) * (rng.random((40, 30)) < 0.3)
    neighbours = baseline.sparse_nearest_neighbours(scipy.sparse.csr_matrix(dense), 4, chunk_size=7)
    similarity = dense @ dense.T
    np.fill_diagonal(similarity, -np.inf)
    want = np.argsort(-similarity, axis=1, kind="stable")[:, :4]
    np.testing.assert_allclose(np.take_along_axis(similarity, neighbours, 1),
                               np.take_along_axis(similarity, want, 1))
    assert not np.any(neighbours == np.arange(40)[:, None])


def test_tfidf_baseline_finds_character_overlapping_paraphrases():
    from experiments.sentence_similarity import baseline
    sentences = ["沙发一般有多高", "沙发一般高度是多少", "借呗可以用吗", "借呗能借吗", "今天天气好"]
    metrics = baseline.tfidf_retrieval_metrics(sentences, np.array([0, 0, 1, 1, 2]), ks=(1,))
    # Four queries retrieve their partner; the singleton group can never hit: 4/5.
    assert metrics["top1"] == pytest.approx(0.8)
    assert metrics["map_at_r"] == pytest.approx(1.0)
