"""The entity-linking experiment end to end: smoke training through launch.main, link mode,
bfloat16, and the NIL threshold and error analysis on hand-made cases."""

import json

import numpy as np
import pytest

import launch
from experiments import configs
from experiments.entity_linking import config as el_config
from experiments.entity_linking import generate, kb, max_match, scoring


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("el") / "run"
    assert launch.main(["entity_linking:smoke", "--workdir", str(workdir)]) == 0
    return workdir


def chance_f1(dev) -> float:
    """Expected F1 of linking every max-match piece (full dictionary) to a uniformly random
    entity of that name: what guessing gives on these texts."""
    index = kb.build_index(generate.EMBEDDED_KB)
    matcher = max_match.MaxMatcher.build(index.words)
    gold = sum(len(e.linked) for e in dev)
    predicted = expected_correct = 0.0
    for example in dev:
        truth = {(m.mention, m.offset): m.kb_id for m in example.linked}
        for mention, offset in matcher(example.text):
            ids = index.candidates(mention)
            predicted += 1
            if truth.get((mention, offset)) in ids:
                expected_correct += 1 / len(ids)
    p, r = expected_correct / predicted, expected_correct / gold
    return 2 * p * r / (p + r)


def test_smoke_trains_evaluates_and_writes_results(trained):
    config = el_config.get_config("smoke")
    summary = json.loads((trained / "summary.json").read_text())
    results = summary["results"]
    dev = generate.generate(generate.EMBEDDED_KB, config.data.generated_train
                            + config.data.generated_dev)[config.data.generated_train:]
    assert results["f1"] > chance_f1(dev) + 0.2
    assert 0 < results["nil_threshold"] <= 1 and 0 < results["nil_f1"] <= 1
    assert summary["ema_decay"] == 0.9999
    # The error analysis adds up: gold = correct + misses, predicted = correct + FPs.
    errors = json.loads((trained / "errors.json").read_text())
    for analysis in errors.values():
        misses = sum(analysis["misses"][k] for k in scoring.MISS_KINDS)
        assert analysis["gold"] == analysis["correct"] + misses
        assert analysis["predicted"] == analysis["correct"] + sum(
            analysis["false_positives"].values())
    without = next(iter(errors.values()))
    assert results["miss_ner"] == without["misses"]["ner"]
    assert (trained / "errors.md").read_text().startswith("| |")
    lines = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any(row["split"] == "eval" and "f1" in row for row in lines)


def test_link_mode_writes_json_lines_with_matching_offsets(trained, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("周杰伦唱的七里香\n李娜的代表作青藏高原\n\n故宫在哪里\n", encoding="utf-8")
    capsys.readouterr()
    assert launch.main(["entity_linking:smoke", "--workdir", str(trained),
                        "--config.mode=link", f"--config.link.input={texts}"]) == 0
    out = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith('{"text"')]
    records = [json.loads(line) for line in out]
    assert [r["text"] for r in records] == [
        "周杰伦唱的七里香", "李娜的代表作青藏高原", "故宫在哪里"]
    entity_ids = {e.subject_id for e in generate.EMBEDDED_KB}
    assert sum(len(r["mention_data"]) for r in records) >= 3
    for record in records:
        for mention in record["mention_data"]:
            offset = int(mention["offset"])
            assert record["text"][offset:offset + len(mention["mention"])] == mention["mention"]
            assert mention["kb_id"] in entity_ids
    # To a file, with NIL: the same mentions.
    output = tmp_path / "out.jsonl"
    assert launch.main(["entity_linking:smoke", "--workdir", str(trained), "--config.mode=link",
                        f"--config.link.input={texts}", f"--config.link.output={output}",
                        "--config.inference.nil=true"]) == 0
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [[(m["mention"], m["offset"]) for m in r["mention_data"]] for r in written] == \
        [[(m["mention"], m["offset"]) for m in r["mention_data"]] for r in records]


def test_bfloat16_smoke_trains_with_falling_loss(tmp_path):
    workdir = tmp_path / "bf16"
    assert launch.main(["entity_linking:smoke", "--workdir", str(workdir),
                        "--config.trainer.compute_dtype=bfloat16",
                        "--config.data.generated_train=120", "--config.data.generated_dev=10",
                        "--config.trainer.num_steps=40", "--config.trainer.eval_every=0",
                        "--config.trainer.checkpoint_every=40",
                        "--config.trainer.log_every=5"]) == 0
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert json.loads((workdir / "summary.json").read_text())["compute_dtype"] == "bfloat16"


def test_validate_names_the_bad_key():
    config = el_config.get_config("smoke")
    with config.unlocked():
        config.model.features = "span,colour"
    with pytest.raises(configs.ConfigError, match="model.features"):
        el_config.validate(config)
    config = el_config.get_config("smoke")
    config.mode = "link"
    with pytest.raises(configs.ConfigError, match="link.input"):
        el_config.validate(config)


# ------------------------------------------------------------------------------------------
# Hand-made cases.

TEXT = "苹果和李娜"
EXAMPLE = kb.Example("1", TEXT, (kb.Mention("苹果", 0, "2"), kb.Mention("李娜", 3, "NIL")))


def test_decode_pairs_each_start_with_the_nearest_end():
    p_start = np.asarray([0.9, 0.0, 0.5, 0.41, 0.0])
    p_end = np.asarray([0.0, 0.8, 0.0, 0.0, 0.9])
    assert scoring.decode_spans(p_start, p_end, 5) == [(0, 2), (2, 5), (3, 5)]
    assert scoring.decode_spans(p_start, p_end, 5, start_threshold=0.6) == [(0, 2)]


def test_nil_threshold_on_a_hand_made_case():
    # 苹果 (gold id 2) scores 0.8 for id 2; 李娜 (gold NIL) scores at best 0.3.
    decisions = [[scoring.SpanDecision((0, 2), ("1", "2"), (0.1, 0.8)),
                  scoring.SpanDecision((3, 5), ("3", "4"), (0.3, 0.2))]]
    # Without NIL (the post): 李娜 → 3 is a false positive; F1 = 2·(1/2·1)/(1/2+1) = 2/3.
    seed = scoring.micro_f1([scoring.gold_triples(EXAMPLE, with_nil=False)],
                            [scoring.link(TEXT, decisions[0])])
    assert seed["f1"] == pytest.approx(2 / 3)
    # With NIL: any τ in (0.3, 0.8] gets both right; of the values tried (0, 0.3, 0.8 and
    # just above 0.8), 0.8 is the smallest that does.
    tau, figures = scoring.choose_nil_threshold([EXAMPLE], decisions)
    assert tau == pytest.approx(0.8) and figures["f1"] == 1.0
    assert scoring.link(TEXT, decisions[0], nil_threshold=tau) == [("苹果", 0, "2"),
                                                                 ("李娜", 3, "NIL")]
    # A τ above every score makes everything NIL: only 李娜 is right.
    assert scoring.link(TEXT, decisions[0], nil_threshold=0.9)[0] == ("苹果", 0, "NIL")


def test_error_analysis_on_a_hand_made_case():
    example = kb.Example("1", "苹果手机和长城汽车和黄河大合唱", (
        kb.Mention("苹果", 0, "2"),           # found, linked wrong: disambiguation + wrong_entity
        kb.Mention("长城", 5, "6"),           # found, gold id not a candidate: candidates
                                             # (and its output, 5, is a wrong_entity)
        kb.Mention("黄河", 10, "8"),          # not found: ner
        kb.Mention("手机", 2, "NIL")))        # a NIL mention, linked: nil_mention
    decisions = [scoring.SpanDecision((0, 2), ("1", "2"), (0.9, 0.2)),
                 scoring.SpanDecision((5, 7), ("5",), (0.7,)),
                 scoring.SpanDecision((2, 4), ("30",), (0.5,)),
                 scoring.SpanDecision((11, 15), ("8",), (0.6,)),   # 河大合唱: boundary
                 scoring.SpanDecision((4, 5), ("99",), (0.05,))]   # 和: rejected, no output
    predicted = scoring.link(example.text, decisions)
    analysis = scoring.error_analysis([example], [decisions], [predicted], with_nil=False)
    assert analysis["gold"] == 3 and analysis["predicted"] == 4 and analysis["correct"] == 0
    assert analysis["misses"] == {"ner": 1, "candidates": 1, "disambiguation": 1,
                                  "rejected": 0}
    assert analysis["false_positives"] == {"not_a_mention": 0, "boundary": 1,
                                           "nil_mention": 1, "wrong_entity": 2,
                                           "nil_for_entity": 0}
    # With NIL at τ = 0.8: 苹果 → 1 (0.9), 长城 → NIL, 手机 → NIL (right), 河大合唱 → NIL.
    predicted = scoring.link(example.text, decisions, nil_threshold=0.8)
    analysis = scoring.error_analysis([example], [decisions], [predicted], with_nil=True)
    assert analysis["correct"] == 1 and analysis["gold"] == 4
    assert analysis["misses"]["ner"] == 1 and analysis["misses"]["candidates"] == 1
    assert analysis["false_positives"]["nil_for_entity"] == 1   # 长城 → NIL
    assert analysis["misses"]["disambiguation"] == 1                # 苹果 → 1
    assert analysis["false_positives"]["boundary"] == 1             # 河大合唱
    assert analysis["false_positives"]["not_a_mention"] == 1        # 和
