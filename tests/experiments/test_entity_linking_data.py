"""Entity-linking files, the KB index and the generated corpus."""

import json
import pathlib
import re

import numpy as np
import pytest

from experiments import data
from experiments.entity_linking import generate, kb, max_match, stats

SHARED_KB = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / \
    "entity_linking" / "ccks2019_el_kb_subset" / "kb_data"


def _write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
                            + "\n" for r in records), encoding="utf-8")
    return path


GOOD_ENTITY = {"alias": ["《暗警》", "Dark Cop"], "subject_id": "7", "subject": "暗警",
               "type": ["Movie"], "data": [{"predicate": "导演", "object": "张三"},
                                           {"predicate": "摘要", "object": "一部电影"}]}


def test_read_kb_reads_fields_and_optional_alias(tmp_path):
    path = _write_lines(tmp_path / "kb_data", [
        GOOD_ENTITY, "", {"subject_id": 8, "subject": "下载", "data": []}])
    entities, skipped = kb.read_kb(path)
    assert len(skipped) == 0
    first, second = entities
    assert first == kb.Entity("7", "暗警", ("《暗警》", "Dark Cop"), ("Movie",),
                              (("导演", "张三"), ("摘要", "一部电影")), line=1)
    assert (second.subject_id, second.aliases, second.types, second.line) == ("8", (), (), 3)


@pytest.mark.parametrize("record, message", [
    ("{not json", r"kb_data:2: invalid JSON"),
    ("[1, 2]", r"kb_data:2: a record must be a JSON object"),
    ({"subject": "a", "data": []}, r"kb_data:2: field 'subject_id': missing"),
    ({"subject_id": "9", "subject": " ", "data": []}, r"kb_data:2: field 'subject': empty"),
    ({"subject_id": "9", "subject": "a", "alias": "a", "data": []},
     r"kb_data:2: field 'alias': expected a list"),
    ({"subject_id": "9", "subject": "a", "alias": ["b", 3], "data": []},
     r"kb_data:2: field 'alias\[1\]': expected a string"),
    ({"subject_id": "9", "subject": "a"}, r"kb_data:2: field 'data': missing"),
    ({"subject_id": "9", "subject": "a", "data": [{"predicate": "p", "object": "o"},
                                                  {"predicate": "p"}]},
     r"kb_data:2: field 'data\[1\]\.object': missing"),
    ({"subject_id": "7", "subject": "a", "data": []},
     r"kb_data:2: field 'subject_id': duplicate id '7' \(first on line 1\)"),
])
def test_read_kb_names_file_line_and_field(tmp_path, record, message):
    path = _write_lines(tmp_path / "kb_data", [GOOD_ENTITY, record])
    with pytest.raises(data.RecordError, match=message):
        kb.read_kb(path)


def _example(text, *mentions, text_id="1"):
    return {"text_id": text_id, "text": text,
            "mention_data": [{"kb_id": k, "mention": m, "offset": o} for m, o, k in mentions]}


def test_read_examples_keeps_and_marks_nil_mentions(tmp_path):
    path = _write_lines(tmp_path / "train.json", [
        _example("《暗警》迅雷下载", ("暗警", "1", "7"), ("迅雷", 4, "NIL")),
        _example("李娜图片", ("李娜", "0", "NIL_Person"), text_id=2)])
    (first, second), _ = kb.read_examples(path)
    assert first.mentions == (kb.Mention("暗警", 1, "7"), kb.Mention("迅雷", 4, "NIL"))
    assert [m.is_nil for m in first.mentions] == [False, True]
    assert first.linked == (kb.Mention("暗警", 1, "7"),)
    assert second.text_id == "2" and second.mentions[0].is_nil and second.linked == ()
    assert not kb.is_nil("NILE") and kb.is_nil("NIL_Other")


@pytest.mark.parametrize("record, message", [
    ({"text": "a", "mention_data": []}, r"train.json:2: field 'text_id': missing"),
    ({"text_id": "2", "text": "a"}, r"train.json:2: field 'mention_data': missing"),
    ({"text_id": "2", "text": "a", "mention_data": {}},
     r"train.json:2: field 'mention_data': expected a list"),
    (_example("李娜图片", ("图片", "2", "3"), ("李娜", "1", "4")),
     r"train.json:2: field 'mention_data\[1\]\.offset': text\[1:3\] is '娜图', not the "
     r"mention '李娜'"),
    (_example("李娜", ("李娜", "1", "4")),
     r"field 'mention_data\[0\]\.offset': text\[1:3\] is '娜', not the mention '李娜' "
     r"\(the text has 2 characters\)"),
    (_example("李娜", ("李娜", "x", "4")), r"field 'mention_data\[0\]\.offset': not an integer"),
    (_example("李娜", ("李娜", "-1", "4")), r"field 'mention_data\[0\]\.offset': negative"),
    (_example("李娜", ("", "0", "4")), r"field 'mention_data\[0\]\.mention': empty"),
    ({"text_id": "2", "text": "李娜", "mention_data": [{"mention": "李娜", "offset": "0"}]},
     r"train.json:2: field 'mention_data\[0\]\.kb_id': missing"),
])
def test_read_examples_names_file_line_and_field(tmp_path, record, message):
    path = _write_lines(tmp_path / "train.json", [_example("李娜", ("李娜", "0", "4")), record])
    with pytest.raises(data.RecordError, match=message):
        kb.read_examples(path)


def test_unlabelled_file_reads_with_labelled_false(tmp_path):
    path = _write_lines(tmp_path / "develop.json", [{"text_id": "1", "text": "李娜图片"}])
    (example,), _ = kb.read_examples(path, labelled=False)
    assert example.mentions == () and not example.labelled


def test_skip_bad_counts_and_reports_each_skipped_record(tmp_path):
    path = _write_lines(tmp_path / "train.json", [
        _example("李娜", ("李娜", "0", "4")), _example("李娜", ("李娜", "1", "4")),
        "{oops", _example("姚明", ("姚明", "0", "20"), text_id="4")])
    examples, skipped = kb.read_examples(path, skip_bad=True)
    assert [e.line for e in examples] == [1, 4]
    assert len(skipped) == 2
    assert [(e.line, e.field) for e in skipped.errors] == [(2, "mention_data[0].offset"),
                                                          (3, None)]
    assert "skipped 2 bad record(s)" in skipped.summary()


def test_index_normalises_aliases_and_merges_same_names():
    entities = [
        kb.Entity("7", "暗警", ("《暗警》", "Dark Cop", "《》"), (), (("导演", "张三"),)),
        kb.Entity("9", "《暗警》", ("DARK COP",), (), ()),
    ]
    index = kb.build_index(entities)
    assert index.kb2id == {"暗警": ("7", "9"), "dark cop": ("7", "9")}
    assert index.candidates("《Dark Cop》") == ("7", "9")
    assert index.without(["暗警"]).kb2id == {"dark cop": ("7", "9")}
    # predicate：object lines in file order, then the names (lower-cased, 《》 kept).
    assert index.descriptions["7"] == "导演：张三\n名称：暗警、《暗警》、dark cop、《》"
    assert kb.describe(entities[0], max_chars=6) == "导演：张三\n"


def test_lower_case_keeps_offsets():
    assert kb.lower_same_length("İA胜利") == "İa胜利"     # 'İ'.lower() is two characters
    assert kb.normalize_alias("《FSB》") == "fsb"


def test_short_objects_longest_first_and_object_mask():
    entity = kb.Entity("1", "七里香", (), (), (("演唱者", "周杰伦"), ("专辑", "七里香"),
                                              ("时长", "4分"), ("摘要", "x" * 11),
                                              ("语言", "普通话"), ("外文名", "AB")))
    assert kb.short_objects(entity) == ("周杰伦", "七里香", "普通话", "4分", "ab")
    mask = kb.object_match_mask("周杰伦的Ab歌", kb.short_objects(entity))
    np.testing.assert_array_equal(mask, [1, 1, 1, 0, 1, 1, 0])


def _check_generated(entities, examples):
    """Returns the kinds of mention the generated texts hold, after checking each one."""
    index = kb.build_index(entities)
    by_id = {e.subject_id: e for e in entities}
    found = {"distractor": 0, "nil_name": 0, "nil_alias": 0, "unannotated_word": 0}
    max_matcher = max_match.MaxMatcher.build(index.words)
    for example in examples:
        gold = {(m.mention, m.offset) for m in example.mentions}
        for mention in example.mentions:
            ids = index.candidates(mention.mention)
            if mention.is_nil:
                found["nil_alias" if ids else "nil_name"] += 1
            elif len(ids) > 1:
                rivals = [index.descriptions[i] for i in ids if i != mention.kb_id]
                # The first clause of each fact value (at most 15 characters).
                own = [re.split(r"[，。；;、（(\n]", kb.lower_same_length(o))[0][:15].strip()
                       for _, o in by_id[mention.kb_id].facts]
                context = kb.lower_same_length(example.text)
                # Decidable: the text holds a value of the entity's own facts that no
                # same-name rival's description holds.
                assert any(len(o) >= 2 and o in context and not any(o in d for d in rivals)
                           for o in own), example
                found["distractor"] += 1
        found["unannotated_word"] += sum(
            1 for span in max_matcher(example.text) if span not in gold)
    return found


def test_generated_corpus_round_trips_through_the_loaders(tmp_path):
    paths = generate.write_corpus(tmp_path, generate.EMBEDDED_KB, num_train=300, num_dev=50,
                                  seed=3)
    entities, _ = kb.read_kb(paths["kb"])
    assert [e.subject_id for e in entities] == [e.subject_id for e in generate.EMBEDDED_KB]
    train, _ = kb.read_examples(paths["train"])   # every offset checked against its text
    dev, _ = kb.read_examples(paths["dev"])
    assert (len(train), len(dev)) == (300, 50)
    assert len({e.text_id for e in train + dev}) == 350
    found = _check_generated(entities, train)
    assert all(count >= 5 for count in found.values()), found


def test_generator_is_deterministic_given_the_seed():
    first = generate.generate(generate.EMBEDDED_KB, 40, seed=5)
    assert first == generate.generate(generate.EMBEDDED_KB, 40, seed=5)
    assert first != generate.generate(generate.EMBEDDED_KB, 40, seed=6)


def test_generated_common_words_are_pruned_and_names_are_kept():
    entities = generate.EMBEDDED_KB
    train = generate.generate(entities, 1500, seed=0)
    pruned, removed = max_match.prune_index(kb.build_index(entities), train)
    # 下载 and 在线 are KB words the texts use but seldom annotate (the post's example).
    assert {"下载", "在线", "观看", "高清"} <= removed
    assert not removed & {"周杰伦", "红楼梦", "李娜", "故宫"}


@pytest.mark.skipif(not SHARED_KB.exists(), reason=f"real KB excerpt not present at {SHARED_KB} "
                                                   "(../shared is absent)")
def test_real_kb_excerpt_loads_and_generates():
    entities, skipped = kb.read_kb(SHARED_KB)
    assert len(entities) == 801 and len(skipped) == 0
    assert (entities[0].subject_id, entities[0].subject) == ("10001", "胜利")
    index = kb.build_index(entities)
    assert set(index.kb2id["莎莎"]) == {"10061", "10634", "10684"}
    assert index.kb2id["陈真后传"]                  # from the alias 《陈真后传》
    examples = generate.generate(entities, 400, seed=0)
    found = _check_generated(entities, examples)
    assert all(count >= 3 for count in found.values()), found


def test_stats_command_prints_the_stage_table(tmp_path, capsys):
    paths = generate.write_corpus(tmp_path, generate.EMBEDDED_KB, num_train=400, num_dev=60,
                                  seed=1)
    stats.main(["--kb", str(paths["kb"]), "--train", str(paths["train"]),
                "--dev", str(paths["dev"])])
    out = capsys.readouterr().out
    train, _ = kb.read_examples(paths["train"])
    dev, _ = kb.read_examples(paths["dev"])
    figures = max_match.pipeline_figures(train, dev, kb.build_index(generate.EMBEDDED_KB))
    assert "| stage | recall | precision |" in out
    assert f"| max-match, full dictionary | {figures['max_match']['recall']:.3f} | " \
           f"{figures['max_match']['precision']:.3f} |" in out
    assert sum(line.startswith("|") for line in out.splitlines()) == 5   # header, rule, 3 stages
    with pytest.raises(SystemExit, match="--dev needs --train"):
        stats.main(["--dev", str(paths["dev"])])
    with pytest.raises(SystemExit, match=r"bad.json:1: field 'mention_data\[0\]\.offset'"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(_example("李娜", ("李娜", "1", "4"))) + "\n", encoding="utf-8")
        stats.main(["--kb", str(paths["kb"]), "--train", str(paths["train"]),
                    "--dev", str(bad)])
