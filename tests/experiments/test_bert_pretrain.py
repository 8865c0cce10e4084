"""experiments.bert_pretrain: masking, windows, vocabulary, the MLM head against
transformers, and a smoke run whose checkpoint the NL2SQL experiment fine-tunes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.bert_pretrain import train
from experiments.nl2sql.tokenization import SPECIAL_TOKENS, CharTokenizer
from models import bert

TOKENS = list(SPECIAL_TOKENS) + ["[unused1]"] + list("甲乙丙丁戊")


def _masking(**overrides):
    return {"mask_prob": 0.15, "max_predictions": 4, "mask_id": 4, "first_random_id": 5,
            "vocab_size": 40, **overrides}


def test_every_candidate_is_picked_with_probability_one():
    ids = jnp.array([[2, 10, 11, 12, 3, 0], [2, 13, 3, 14, 15, 3]])
    candidates = jnp.array([[0, 1, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]], bool)
    masked, positions, labels, weights = train.mask_tokens(
        jax.random.PRNGKey(0), ids, candidates, **_masking(mask_prob=1.0, max_predictions=4))
    for row in range(2):
        picked = {int(p) for p, w in zip(positions[row], weights[row]) if w > 0}
        assert picked == set(np.flatnonzero(candidates[row]).tolist())
    np.testing.assert_array_equal(labels, np.take_along_axis(np.asarray(ids),
                                                             np.asarray(positions), 1))
    untouched = ~np.asarray(candidates)
    np.testing.assert_array_equal(np.asarray(masked)[untouched], np.asarray(ids)[untouched])


def test_picks_are_capped_and_replacements_follow_80_10_10():
    ids = jnp.full((400, 64), 20)
    candidates = jnp.ones((400, 64), bool)
    masked, positions, labels, weights = train.mask_tokens(
        jax.random.PRNGKey(1), ids, candidates, **_masking(mask_prob=0.5, max_predictions=8))
    assert float(weights.sum()) == 400 * 8          # 32 expected picks a row, capped at 8
    new = np.take_along_axis(np.asarray(masked), np.asarray(positions), 1)
    shares = [np.mean(new == 4), np.mean((new != 4) & (new != 20)), np.mean(new == 20)]
    # A random token equals the original 1/35 of the time: 0.1·34/35 and 0.1 + 0.1/35.
    np.testing.assert_allclose(shares, [0.8, 0.1 * 34 / 35, 0.1 + 0.1 / 35], atol=0.015)
    assert np.asarray(masked).min() >= 4           # no special token but [MASK] comes in


def test_windows_cut_the_stream_with_cls_first():
    tokenizer = CharTokenizer(TOKENS)
    windows = train.make_windows(tokenizer, ["甲乙丙", "丁 戊"], maxlen=4)
    # stream: 甲 乙 丙 [SEP] 丁 [unused1] 戊 [SEP]  -> 3 tokens a window after [CLS]
    expected = [[2, 6, 7, 8], [2, 3, 9, 5], [2, 10, 3, 0]]
    np.testing.assert_array_equal(windows["token_ids"], expected)
    np.testing.assert_array_equal(windows["token_mask"], [[1, 1, 1, 1]] * 2 + [[1, 1, 1, 0]])


def test_vocabulary_ranks_characters_by_frequency():
    vocab = train.build_vocabulary(["乙乙甲 丙", "乙甲"], max_vocab=8)
    assert vocab == list(SPECIAL_TOKENS) + ["[unused1]", "乙", "甲"]


def test_read_sentences_splits_tabs_and_caps_characters(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("标题\t正文一二\n\n第二行\n", encoding="utf-8")
    assert train.read_sentences([str(path)], 100) == ["标题", "正文一二", "第二行"]
    assert train.read_sentences([str(path)], 5) == ["标题", "正文一"]


def test_head_matches_transformers_masked_lm(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = bert.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=24,
                             max_position_embeddings=16, hidden_dropout_prob=0.0)
    model = bert.BertForMaskedLM(config)
    ids = np.array([[2, 7, 9, 4, 3, 0], [2, 11, 4, 12, 3, 1]])
    mask = np.array([[1, 1, 1, 1, 1, 0], [1] * 6])
    positions = np.array([[1, 3], [2, 4]])
    params = model.init(jax.random.PRNGKey(2), ids, mask, positions)["params"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(3),
                                                                 p.shape), params)
    bert.save_pretrained(tmp_path, config, params["bert"], extra_tensors=bert.head_tensors(params))
    reference = transformers.BertForMaskedLM.from_pretrained(
        tmp_path, use_kernels=False).eval()   # the repository's kernels/ is not theirs
    ours = model.apply({"params": params}, ids, mask, positions)
    with torch.no_grad():
        theirs = reference(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    expected = np.take_along_axis(theirs.numpy(), positions[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=1e-4)


def test_smoke_loss_falls_and_nl2sql_fine_tunes_the_checkpoint(tmp_path):
    import launch
    summary = launch.run_experiment("bert_pretrain:smoke", ["--workdir", str(tmp_path / "p")])
    assert summary["mlm_loss"] < summary["uniform_loss"] - 0.4   # ln V at initialisation
    records = [json.loads(line) for line in
               (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["mlm_loss"] for r in records if r.get("split") == "eval"]
    assert len(evals) >= 2 and evals[-1] < evals[0]
    checkpoint = tmp_path / "p" / "bert"
    _, variables = bert.from_pretrained(checkpoint)
    assert variables["params"]["layer_0"]["query"]["kernel"].shape == (32, 32)
    result = launch.run_experiment("nl2sql:smoke", [
        "--workdir", str(tmp_path / "n"), f"--config.bert.checkpoint={checkpoint}"])
    assert 0.0 <= result["logic_form"] <= 1.0
    assert ((tmp_path / "n" / "vocab.txt").read_text(encoding="utf-8")
            == (checkpoint / "vocab.txt").read_text(encoding="utf-8"))
