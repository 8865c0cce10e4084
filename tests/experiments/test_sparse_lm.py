"""The sparse-attention character LM (docs/sparse_attention.md §5).

Input pipeline, the bpc evaluator against hand computations, config errors, and a smoke run
through launch.py.
"""

import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import launch
from experiments import configs, data, sparse_lm
from experiments.configs import ConfigError
from experiments.sparse_lm import compare, input_pipeline, train

SHAKESPEARE = (pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
               / "sparse_attention_lm" / "tinyshakespeare_input.txt")


def test_vocabulary_comes_from_the_training_split_with_an_unknown_id():
    train_text, valid_text = input_pipeline.split_text("abcabcab" + "cz", 0.2)
    assert (train_text, valid_text) == ("abcabcab", "cz")
    vocab = input_pipeline.CharVocabulary.build(train_text)
    assert vocab.chars == "abc" and vocab.size == 4
    np.testing.assert_array_equal(vocab.encode("cab"), [3, 1, 2])
    np.testing.assert_array_equal(vocab.encode(valid_text), [3, input_pipeline.UNKNOWN_ID])
    assert vocab.decode(vocab.encode("ba?")) == "ba\ufffd"
    # Characters outside the BMP and below/above every known code point.
    wide = input_pipeline.CharVocabulary.build("红楼梦\n𠀀")
    np.testing.assert_array_equal(wide.encode("\n梦𠀀\t"), [1, 2, 5, 0])  # \n 梦 楼 红 𠀀


def test_split_is_contiguous_ninety_ten():
    text = "".join(chr(0x4E00 + i % 300) for i in range(1000))
    train_text, valid_text = input_pipeline.split_text(text, 0.1)
    assert len(train_text) == 900 and train_text + valid_text == text
    with pytest.raises(ValueError, match="valid_fraction"):
        input_pipeline.split_text(text, 1.0)


def test_training_windows_are_contiguous_text_and_resumable():
    text = "".join(chr(ord("a") + (i * 7) % 26) + " " * (i % 3) for i in range(400))
    vocab = input_pipeline.CharVocabulary.build(text)
    ids = vocab.encode(text)
    batches = input_pipeline.WindowBatches(ids, context=16, batch_size=5, seed=3)
    seen = []
    for _ in range(3):
        tokens = next(batches)["tokens"]
        assert tokens.shape == (5, 17) and tokens.dtype == np.int32
        for row in tokens:
            window = vocab.decode(row)
            assert window in text  # a contiguous piece of the text
            seen.append(window)
    assert len(set(seen)) > 10  # random starts, not one window repeated
    position = batches.state()
    expected = [next(batches)["tokens"] for _ in range(2)]
    resumed = input_pipeline.WindowBatches(ids, context=16, batch_size=5, seed=3)
    resumed.restore(json.loads(json.dumps(position)))  # as a checkpoint stores it
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["tokens"], want)
    # An epoch draws every start 0 … len − context − 1 exactly once.
    small = input_pipeline.WindowBatches(np.arange(40, dtype=np.int32), context=16,
                                         batch_size=4, seed=0)
    tokens = np.concatenate([next(small)["tokens"] for _ in range(6)])
    np.testing.assert_array_equal(tokens, tokens[:, :1] + np.arange(17))
    assert sorted(tokens[:, 0]) == list(range(24))


def test_validation_windows_tile_the_split_and_count_each_character_once():
    ids = np.arange(1, 42, dtype=np.int32)  # 41 characters
    windows = input_pipeline.validation_windows(ids, context=8)
    assert windows.shape == (5, 9)  # (41 − 1) // 8 windows
    targets = windows[:, 1:].ravel()
    np.testing.assert_array_equal(targets, ids[1:41])  # characters 1 … 40, once each
    np.testing.assert_array_equal(windows[:, 0], ids[[0, 8, 16, 24, 32]])
    few = input_pipeline.validation_windows(ids, context=8, max_windows=3)
    np.testing.assert_array_equal(few[:, 0], ids[[0, 16, 32]])
    with pytest.raises(ValueError, match="fewer than one window"):
        input_pipeline.validation_windows(ids[:8], context=8)


def test_read_text_strips_the_bom_and_keeps_newlines(tmp_path):
    path = tmp_path / "hlm.txt"
    path.write_bytes("\ufeff第一回\r\n甄士隐\n".encode("utf-8"))
    assert input_pipeline.read_text(path) == "第一回\r\n甄士隐\n"
    path.write_bytes("第一回\n\t甄士隐".encode())   # no final newline, a tab
    assert input_pipeline.read_text(path) == "第一回\n\t甄士隐"


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "empty file"),
    (b"\xef\xbb\xbf", "empty file"),
    (b"\n \n", "the file has no text"),
    (b"good line\nbad \xff\xfe byte\n", r":2: not UTF-8 text \(byte 14 of the file, column 5"),
    (b"good line\r\nhalf\rline\r\n", r":2: stray carriage return U\+000D at column 5"),
    (b"text\n\x00\x00\x00\n", r":2: stray NUL byte U\+0000 at column 1"),
])
def test_bad_text_files_are_named(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(data.RecordError, match=f"corpus.txt{'' if message[0] == ':' else ': '}"
                                               f"{message}"):
        input_pipeline.read_text(path)


def test_stdlib_corpus_is_deterministic_and_capped():
    text = input_pipeline.stdlib_text(200_000)
    assert len(text) == 200_000 and text == input_pipeline.stdlib_text(200_000)
    first = input_pipeline.stdlib_files()[0]
    assert text.startswith(first.read_text(encoding="utf-8")[:1000])
    assert "def " in text and "import " in text


def test_bpc_of_uniform_logits_is_log2_vocab():
    vocab_size = 37
    windows = np.random.default_rng(0).integers(0, vocab_size, (5, 13)).astype(np.int32)
    uniform = lambda params, inputs: jnp.zeros(inputs.shape + (vocab_size,))  # noqa: E731
    result = train.make_bpc_evaluator(uniform, windows, batch_size=2)({"params": None})
    assert result["valid_chars"] == 5 * 12
    assert result["bpc"] == pytest.approx(math.log2(vocab_size), rel=1e-6)


def test_bpc_matches_a_hand_computed_bigram_model():
    vocab_size, context = 6, 7
    table = np.random.default_rng(1).normal(size=(vocab_size, vocab_size)).astype(np.float32)
    ids = np.random.default_rng(2).integers(0, vocab_size, 60).astype(np.int32)
    windows = input_pipeline.validation_windows(ids, context)
    bigram = lambda params, inputs: params[inputs]  # noqa: E731  logits of the next char
    result = train.make_bpc_evaluator(bigram, windows, batch_size=3)(
        {"params": jnp.asarray(table)})
    # By hand: every character 1 … 56 (8 windows × 7) scored from its predecessor.
    log_probs = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    bits = [-log_probs[ids[t - 1], ids[t]] / np.log(2) for t in range(1, 57)]
    assert result["valid_chars"] == 56
    assert result["bpc"] == pytest.approx(np.mean(bits), rel=1e-5)


def test_variants_are_locked_and_unknown_ones_refused():
    for variant in ("", "smoke", "demo"):
        config = sparse_lm.get_config(variant)
        assert config.model.context >= 64
        with pytest.raises(AttributeError):
            config.new_field = 1
    assert sparse_lm.get_config("").model.context >= 1024
    with pytest.raises(ConfigError, match="unknown variant 'big'"):
        sparse_lm.get_config("big")


@pytest.mark.parametrize("override, message", [
    ("model.pattern=local:0", r"--config.model.pattern: pattern 'local:0': Local radius must be"),
    ("model.pattern=dense", "unknown pattern 'dense'"),
    ("model.attention_implementation=cuda", "model.attention_implementation must be one of"),
    ("trainer.compute_dtype=float16", "trainer.compute_dtype"),
])
def test_bad_model_config_fails_before_training(tmp_path, override, message, capsys):
    code = launch.main(["sparse_lm:smoke", "--workdir", str(tmp_path),
                        f"--config.{override}"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_smoke_run_end_to_end_and_resume(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert launch.main(["sparse_lm:smoke", "--workdir", str(workdir)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(summary)[0] == "valid_bpc"
    assert summary["steps"] == 12 and summary["tokens_per_sec"] > 0
    assert summary["valid_bpc"] < summary["uniform_bpc"] == pytest.approx(
        math.log2(summary["vocab_size"]))
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert [r["bpc"] for r in rows if r["split"] == "eval"] == [summary["valid_bpc"]]
    assert json.loads((workdir / "vocab.json").read_text())["chars"]
    # Rerunning the finished run resumes at step 12, re-evaluates the restored weights to the
    # same bpc and keeps the timing of the run that trained.
    assert launch.main(["sparse_lm:smoke", "--workdir", str(workdir)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["valid_bpc"] == pytest.approx(summary["valid_bpc"], rel=1e-6)
    assert again["tokens_per_sec"] == summary["tokens_per_sec"]


def test_a_missing_or_empty_data_file_is_named(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for path, problem in ((tmp_path / "absent.txt", "no such file"), (empty, "empty file")):
        assert launch.main(["sparse_lm:smoke", "--workdir", str(tmp_path / "w"),
                            f"--config.data.path={path}"]) == 2
        assert capsys.readouterr().err == f"launch.py: {path}: {problem}\n"


def test_compare_table_has_one_row_per_pattern(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be, that is the question.\n" * 60)
    out = tmp_path / "out"
    compare.main(["--data", str(text), "--steps", "2", "--rate", "4", "--out", str(out),
                  "--workdirs", str(tmp_path / "runs"), "--only", "full,local/atrous",
                  "model.context=32", "model.num_layers=2",
                  "model.width=16", "model.num_heads=2", "eval.max_windows=2",
                  "trainer.checkpoint_every=2"])
    table = (out / "compare.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| full", "| local/atrous"]
    assert "`local:4,atrous:4`" in rows[1]
    # Rerunning reuses the finished runs' summaries.
    summary = json.loads((tmp_path / "runs" / "local-atrous" / "summary.json").read_text())
    compare.main(["--data", str(text), "--steps", "2", "--rate", "4", "--out", str(out),
                  "--workdirs", str(tmp_path / "runs"), "--only", "local/atrous",
                  "model.context=32", "model.num_layers=2",
                  "model.width=16", "model.num_heads=2", "eval.max_windows=2",
                  "trainer.checkpoint_every=2"])
    assert f"{summary['results']['valid_bpc']:.4f}" in (out / "compare.md").read_text()


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="../shared/data is absent")
def test_tiny_shakespeare_pipeline():
    text = input_pipeline.read_text(SHAKESPEARE)
    train_text, valid_text = input_pipeline.split_text(text, 0.1)
    vocab = input_pipeline.CharVocabulary.build(train_text)
    assert len(text) == 1_115_394 and vocab.size <= 66
    windows = input_pipeline.validation_windows(vocab.encode(valid_text), 1024)
    assert windows.shape == ((len(valid_text) - 1) // 1024, 1025)


def test_config_overrides_reach_the_model():
    config = sparse_lm.get_config("smoke")
    configs.apply_overrides(config, ["model.pattern=sparse:4", "model.remat=true",
                                     "model.positions=sinusoidal"])
    model = train.build_model(config, 10)
    assert model.remat and model.positions == "sinusoidal"
    from kernels.attention import Sparse
    assert model.pattern == (Sparse(4),)
