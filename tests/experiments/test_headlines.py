"""The headlines experiment: ids, generated data, config checks, train/eval/generate, two-pass."""

import io
import json
import pathlib

import numpy as np
import pytest

import launch
from experiments import configs, data
from experiments.headlines import config as headline_config
from experiments.headlines import input_pipeline as pipeline
from experiments.headlines import train


def test_ids_follow_the_post():
    vocab = pipeline.Vocabulary.build(["甲乙乙", "乙丙"], min_count=2)
    assert vocab.chars == ("乙",) and vocab.size == 5
    l2r, r2l = pipeline.encode_titles(vocab, ["乙甲乙乙"], max_title_len=3)
    # [start] + ids(title[:3]) + [end]; unknown 甲 is 1, distinct from padding 0.
    np.testing.assert_array_equal(l2r, [[2, 4, 1, 4, 3]])
    np.testing.assert_array_equal(r2l, [[3, 4, 1, 4, 2]])
    np.testing.assert_array_equal(pipeline.encode_texts(vocab, ["乙甲"], 4), [[4, 1, 0, 0]])
    assert vocab.decode([2, 4, 1, 3, 0]) == "乙□"


def test_generated_titles_follow_their_rule():
    pairs = pipeline.generated_pairs(50, seed=3)
    for title, text in zip(pairs.titles, pairs.texts):
        span = text[text.index("【") + 1:text.index("】")]
        assert title == span + span[0]
        assert 3 <= len(span) <= 7


def test_bad_rows_name_file_line_and_field(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("标题\t正文\n\t正文\n", encoding="utf-8")
    with pytest.raises(data.RecordError, match=r"pairs.tsv:2: field 'title': empty"):
        pipeline.read_pairs(path)
    pairs, skipped = pipeline.read_pairs(path, skip_bad=True)
    assert len(pairs) == 1 and len(skipped) == 1


@pytest.mark.parametrize("overrides,match", [
    ({"decode.kind": "greedy"}, "does not fit model.interaction=true"),
    ({"decode.kind": "bi_beam", "model.interaction": False}, "bi_beam needs"),
    ({"decode.min_len": 16}, "must be < decode.max_len"),
    ({"mode": "eval"}, "data.eval_path"),
])
def test_config_refuses_inconsistent_values(overrides, match):
    config = headline_config.get_config("smoke")
    configs.apply_overrides(config, [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                     for k, v in overrides.items()])
    with pytest.raises(configs.ConfigError, match=match):
        headline_config.validate(config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("headlines") / "bi"
    assert launch.main(["headlines:smoke", "--workdir", str(workdir),
                        "--config.trainer.num_steps=6"]) == 0
    return workdir


def test_smoke_run_writes_everything(trained):
    for name in ("config.json", "metrics.jsonl", "vocab.json", "model.json", "summary.json",
                 "test_titles.tsv", "best.json"):
        assert (trained / name).exists(), name
    results = json.loads((trained / "summary.json").read_text())["results"]
    assert next(iter(results)) == "rougeL"
    assert {"rouge1", "rouge2", "bleu", "first4", "last4", "valid_leak_gap"} <= set(results)
    rows = [json.loads(r) for r in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any("l2r_loss" in r for r in rows)


def test_eval_and_generate_modes(trained, capsys, tmp_path):
    capsys.readouterr()
    assert launch.main(["headlines:smoke", "--workdir", str(trained), "--config.mode=eval",
                        f"--config.data.eval_path={trained / 'generated_test.tsv'}"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"rougeL", "bleu", "loss", "leak_gap", "r2l_share"} <= set(metrics)
    texts = tmp_path / "texts.txt"
    texts.write_text("甲乙【丙丁戊】己\n\n庚辛\n", encoding="utf-8")
    assert launch.main(["headlines:smoke", "--workdir", str(trained), "--config.mode=generate",
                        f"--config.generate.input={texts}"]) == 0
    out = capsys.readouterr().out.rstrip("\n").splitlines()
    assert out[-3].startswith("}")  # the printed config ends, then one title per text
    assert len(out[-2:]) == 2


def test_generate_from_stdin_matches_the_file_path(trained):
    config = headline_config.get_config("smoke")
    stdout = io.StringIO()
    train.run_generation(config, trained, stdin=io.StringIO("甲乙【丙丁戊】己\n"),
                         stdout=stdout)
    assert len(stdout.getvalue().splitlines()) == 1


@pytest.mark.slow
def test_two_pass_training_reads_the_first_models_titles(trained, tmp_path, capsys):
    workdir = tmp_path / "second"
    assert launch.main(["headlines:smoke", "--workdir", str(workdir),
                        "--config.trainer.num_steps=2", "--config.trainer.eval_every=2",
                        "--config.trainer.checkpoint_every=2",
                        f"--config.two_pass.first_workdir={trained}"]) == 0
    assert "two-pass: decoding" in capsys.readouterr().out
    assert (workdir / "vocab.json").read_text() == (trained / "vocab.json").read_text()


HEADLINE_DATA = (pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
                 / "headline_generation")


@pytest.mark.skipif(not HEADLINE_DATA.is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize("corpus", ["LCSTS_PART_II_via_CLGE", "CSL_via_CLGE"])
def test_the_shared_corpora_load_every_row(corpus):
    path = HEADLINE_DATA / corpus / "val.tsv"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs, skipped = pipeline.read_pairs(path)
    assert len(pairs) == len(lines) and not len(skipped)
    title, text = lines[0].split("\t")
    assert (pairs.titles[0], pairs.texts[0]) == (title.strip(), text.strip())
    vocab = pipeline.Vocabulary.build(pairs.titles + pairs.texts, min_count=1)
    l2r, r2l = pipeline.encode_titles(vocab, pairs.titles[:4], 30)
    assert (l2r[:, 0] == pipeline.START).all() and (r2l[:, 0] == pipeline.END).all()
    assert pipeline.UNK not in l2r           # every character of the titles is in the vocab
