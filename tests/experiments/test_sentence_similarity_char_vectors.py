"""Character vectors as the encoder's starting embedding: rows, rescaling, training, errors."""

import jax
import numpy as np
import pytest

import launch
from experiments import sentence_similarity
from experiments.sentence_similarity import char_vectors, input_pipeline, synthetic, train
from experiments.word_vectors import WordVectors, read_word2vec, write_word2vec


def _vectors(words, dim, seed=0):
    table = np.random.default_rng(seed).normal(size=(len(words) + 1, dim)).astype(np.float32)
    table[0] = 0
    return WordVectors(tuple(words), table)


def test_embedding_rows_take_the_known_characters_only():
    vocab = input_pipeline.Vocabulary(("a", "b", "c"))          # ids 2, 3, 4
    vectors = _vectors(("z", "c", "b"), 4)                      # rows 1, 2, 3
    ids, rows = char_vectors.embedding_rows(vocab, vectors, 4)
    np.testing.assert_array_equal(ids, [3, 4])
    np.testing.assert_array_equal(rows, vectors.table[[3, 2]])


def test_embedding_rows_rescale_to_the_asked_std_keeping_directions():
    vocab = input_pipeline.Vocabulary(("a", "b", "c"))
    vectors = _vectors(("a", "b", "c"), 8)
    _, raw = char_vectors.embedding_rows(vocab, vectors, 8)
    _, scaled = char_vectors.embedding_rows(vocab, vectors, 8, std=0.03)
    assert scaled.std() == pytest.approx(0.03, rel=1e-5)
    np.testing.assert_allclose(scaled * (raw.std() / 0.03), raw, rtol=1e-5)


def test_embedding_rows_refuse_another_width():
    vocab = input_pipeline.Vocabulary(("a",))
    with pytest.raises(ValueError, match="4 wide, the embedding 8"):
        char_vectors.embedding_rows(vocab, _vectors(("a",), 4), 8)


def test_character_corpus_reads_characters_as_the_encoder_does():
    # Full-width letters become half-width lower case; whitespace is dropped.
    assert char_vectors.character_corpus(["ＡＢ 你好\t!"]) == [["a", "b", "你", "好", "!"]]


def test_trained_vectors_are_reproducible_and_cover_the_text(tmp_path):
    lines = ["我想开通花呗", "花呗怎么还款", "借呗的额度是多少"] * 20
    first = char_vectors.train_char_vectors(lines, dim=8, epochs=2)
    second = char_vectors.train_char_vectors(lines, dim=8, epochs=2)
    assert set(first.words) == set("".join(lines))
    np.testing.assert_array_equal(first.table, second.table)
    # The command writes a file that reads back as the same vectors (6 significant digits).
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "vectors.txt"
    char_vectors.main([str(text), "--out", str(out), "--dim", "8", "--epochs", "2"])
    back = read_word2vec(out)
    assert back.words == first.words
    np.testing.assert_allclose(back.table, first.table, rtol=1e-5, atol=1e-6)


def test_init_state_starts_those_rows_from_the_vectors_and_keeps_the_rest():
    config = sentence_similarity.get_config("smoke")
    model = train.build_model(config, vocab_size=6, num_classes=3)
    optimizer = train.make_optimizer(config)
    rows = np.full((2, config.model.embed_dim), 0.5, np.float32)
    key = jax.random.PRNGKey(0)
    plain = train.make_init_state(model, optimizer, 8)(key)["params"]
    started = train.make_init_state(model, optimizer, 8, (np.array([2, 5]), rows))(key)["params"]
    table = np.asarray(started["encoder"]["embedding"]["embedding"])
    np.testing.assert_array_equal(table[[2, 5]], rows)
    np.testing.assert_array_equal(table[[0, 1, 3, 4]],
                                  np.asarray(plain["encoder"]["embedding"]["embedding"])[
                                      [0, 1, 3, 4]])


def test_run_with_embedding_init_says_what_it_started_from(tmp_path, capsys):
    config = sentence_similarity.get_config("smoke")
    synthetic.write(tmp_path / "groups.tsv", num_items=config.data.generated_items)
    groups, _ = input_pipeline.read_groups(tmp_path / "groups.tsv")
    vocab = input_pipeline.Vocabulary.build(groups.sentences, config.data.min_count)
    chars = vocab.chars[:10]
    path = tmp_path / "vectors.txt"
    write_word2vec(_vectors(chars, 32), path)
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(tmp_path / "run"),
                        f"--config.model.embedding_init={path}",
                        "--config.trainer.num_steps=5"]) == 0
    assert (f"embedding: 10 of the {len(vocab.chars)} vocabulary characters start from "
            f"{path} (at the file's scale)") in capsys.readouterr().out


def test_vectors_of_another_width_are_a_clear_error(tmp_path, capsys):
    path = tmp_path / "vectors.txt"
    write_word2vec(_vectors(("的", "了"), 7), path)
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(tmp_path / "run"),
                        f"--config.model.embedding_init={path}"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "7 wide, the embedding 32" in err and "--dim 32" in err
