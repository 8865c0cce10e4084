"""Max-match NER, dictionary matching, pruning, candidate restriction, stage figures."""

import collections
import random

import pytest

from experiments.entity_linking import kb, max_match


def _pieces(text, words):
    """The best path as strings, dictionary pieces marked with brackets."""
    matches = max_match.TrieMatcher(words).matches(text)
    return [f"[{text[s:e]}]" if hit else text[s:e]
            for s, e, hit in max_match.best_path(len(text), matches)]


@pytest.mark.parametrize("text, words, expected", [
    # One long word (−1) beats two short ones that cover the same (−2).
    ("abcd", ["ab", "cd", "abcd"], ["[abcd]"]),
    # Coverage comes first: ab+cd (−2) beats abc + gap d (−101).
    ("abcd", ["abc", "ab", "cd"], ["[ab]", "[cd]"]),
    # Overlapping words: the path takes the one that leaves no gap.
    ("xabcy", ["ab", "bcy"], ["x", "a", "[bcy]"]),
    # The post's DAG helper keeps a|b|cde (−200) here; the best path is abcd|e (−101).
    ("abcde", ["abcd", "cde"], ["[abcd]", "e"]),
    # Equal scores (a+bc, ab+c: −2 each): the last piece starting earliest wins.
    ("abc", ["a", "ab", "bc", "c"], ["[a]", "[bc]"]),
    # A one-character word is a piece (−1), not a gap.
    ("胜利2", ["胜利", "2"], ["[胜利]", "[2]"]),
    ("", ["a"], []),
])
def test_best_path_on_hand_made_cases(text, words, expected):
    assert _pieces(text, words) == expected


def _exhaustive_best(n, matches, position=0):
    """The best score over every segmentation of position..n into matches and gaps."""
    if position == n:
        return 0
    options = [_exhaustive_best(n, matches, position + 1) - 100]
    options += [_exhaustive_best(n, matches, e) - 1 for s, e in matches if s == position]
    return max(options)


def test_best_path_score_against_exhaustive_search():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 8)
        matches = {(s, rng.randint(s + 1, n)) for s in range(n) for _ in range(2)
                   if rng.random() < 0.4}
        path = max_match.best_path(n, matches)
        score = sum(-1 if hit else -100 for _, _, hit in path)
        assert score == _exhaustive_best(n, matches)
        assert [s for s, _, _ in path][1:] == [e for _, e, _ in path][:-1]
        assert all(hit == ((s, e) in matches) or (not hit and e == s + 1)
                   for s, e, hit in path)


def test_max_matcher_lowercases_and_returns_the_text_as_written():
    index = kb.build_index([kb.Entity("1", "FSB", ("《暗警》",), (), ()),
                            kb.Entity("2", "迅雷", (), (), ())])
    matcher = max_match.MaxMatcher.build(index.words)
    assert matcher("《暗警》迅雷下载Fsb") == [("暗警", 1), ("迅雷", 4), ("Fsb", 8)]
    assert max_match.MaxMatcher.build([])("abc") == []


def _brute_force(words, text):
    return sorted((s, e) for s in range(len(text)) for e in range(s + 1, len(text) + 1)
                  if text[s:e] in words)


def test_aho_corasick_equals_trie_and_brute_force_on_random_strings():
    alphabet = "胜利12中a😀"          # Chinese next to digits, ASCII, a non-BMP character
    rng = random.Random(1)
    for _ in range(300):
        words = {"".join(rng.choices(alphabet, k=rng.randint(1, 4)))
                 for _ in range(rng.randint(0, 12))}
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 30)))
        expected = _brute_force(words, text)
        assert max_match.AhoCorasickMatcher(words).matches(text) == expected
        assert max_match.TrieMatcher(words).matches(text) == expected


def test_compare_matchers_reports_throughput_of_identical_matchers():
    rng = random.Random(2)
    words = {"".join(rng.choices("胜利中文12", k=rng.randint(2, 4))) for _ in range(50)}
    texts = ["".join(rng.choices("胜利中文12ab", k=40)) for _ in range(30)]
    figures = max_match.compare_matchers(words, texts, repeats=1)
    assert figures["texts"] == 30
    for key in ("aho_corasick_texts_per_s", "trie_texts_per_s", "match_speedup", "speedup"):
        assert figures[key] > 0


def _ex(text, *mentions):
    return kb.Example("0", text, tuple(kb.Mention(m, o, k) for m, o, k in mentions))


# Hand-counted: max-match finds 下载 in texts 1, 2, 4, 5 (in text 3 the one piece 迅雷下载
# beats 迅雷 + 下载) and it is never gold (rem 4, pred 0: 5/1, exactly the threshold);
# 暗警 is gold twice and found twice (rem 0); 在线 is found in four texts, gold in one of
# them (rem 3, pred 1: 4/2 = 2); 迅雷 is gold in text 3, where max-match finds 迅雷下载
# instead (pred 1, rem 0); 迅雷下载 is found there and is not gold (rem 1: 2/1).
PRUNING_TEXTS = [
    _ex("暗警在线下载", ("暗警", 0, "7"), ("在线", 2, "8")),
    _ex("暗警下载在线", ("暗警", 0, "7")),
    _ex("迅雷下载", ("迅雷", 0, "9")),
    _ex("下载在线", ("下载", 0, "NIL")),      # NIL: not gold for the statistics
    _ex("在线下载"),
]
PRUNING_WORDS = ["暗警", "在线", "下载", "迅雷", "迅雷下载"]


def test_pruning_counts_and_threshold_on_a_hand_computed_example():
    matcher = max_match.MaxMatcher.build(PRUNING_WORDS)
    pred, rem = max_match.pruning_counts(PRUNING_TEXTS, matcher)
    assert pred == collections.Counter({"暗警": 2, "在线": 1, "迅雷": 1})
    assert rem == collections.Counter({"下载": 4, "在线": 3, "迅雷下载": 1})
    # The boundary is inclusive: (rem + 1)/(pred + 1) = 5 is pruned at 5.
    assert max_match.words_to_prune(pred, rem, 5) == {"下载"}
    assert max_match.words_to_prune(pred, rem, 5.01) == set()
    assert max_match.words_to_prune(pred, rem, 2) == {"下载", "在线", "迅雷下载"}


def test_prune_index_removes_the_words_from_the_index():
    index = kb.build_index([kb.Entity(str(i), w, (), (), ())
                            for i, w in enumerate(PRUNING_WORDS)])
    pruned, removed = max_match.prune_index(index, PRUNING_TEXTS, threshold=5)
    assert removed == {"下载"}
    assert set(pruned.kb2id) == set(PRUNING_WORDS) - {"下载"}


def test_candidate_links_keep_ids_seen_twice_and_in_the_index():
    index = kb.KBIndex({"李娜": ("3", "4", "5"), "长城": ("5", "6")}, {}, {})
    train = [_ex("李娜", ("李娜", 0, "3")), _ex("李娜", ("李娜", 0, "3")),
             _ex("李娜", ("李娜", 0, "4")), _ex("长城", ("长城", 0, "6")),
             _ex("姚明姚明", ("姚明", 0, "20"), ("姚明", 2, "20")),
             _ex("长城", ("长城", 0, "NIL")), _ex("长城", ("长城", 0, "NIL"))]
    links = max_match.candidate_links(train, index, min_count=2)
    assert links == {"李娜": ("3",)}          # 长城: no id twice; 姚明: not in the index
    assert max_match.candidates("李娜", index, links) == ("3",)
    assert max_match.candidates("长城", index, links) == ("5", "6")
    assert max_match.candidates("李娜", index) == ("3", "4", "5")


def test_stage_figures_on_a_hand_counted_example():
    index = kb.KBIndex({"李娜": ("3", "4"), "下载": ("25",), "姚明": ("20",)}, {}, {})
    dev = [_ex("李娜下载", ("李娜", 0, "4")),            # predicted: 李娜 ✓, 下载 ✗
           _ex("姚明图片", ("姚明", 0, "20")),           # 姚明 ✓
           _ex("王伟是谁", ("王伟", 0, "NIL"))]          # NIL: not counted as gold
    figures = max_match.stage_figures(dev, index)
    assert (figures["gold"], figures["predicted"], figures["correct"]) == (2, 3, 2)
    assert figures["recall"] == 1.0 and figures["precision"] == pytest.approx(2 / 3)
    assert figures["f1"] == pytest.approx(0.8)
    assert figures["candidates"] == pytest.approx((2 + 1 + 1) / 3)
    restricted = max_match.stage_figures(dev, index, {"李娜": ("3",)})
    assert restricted["link_recall"] == 0.5 and restricted["candidates"] == 1.0


def test_pipeline_figures_stages_and_split():
    examples = [_ex(f"暗警{i}下载", ("暗警", 0, "7")) for i in range(18)]
    train, dev = max_match.split_train_dev(examples, seed=0)
    assert (len(train), len(dev)) == (16, 2)
    assert {id(e) for e in train}.isdisjoint(id(e) for e in dev)
    index = kb.build_index([kb.Entity("7", "暗警", (), (), ()),
                            kb.Entity("8", "下载", (), (), ())])
    figures = max_match.pipeline_figures(train, dev, index)
    assert list(figures) == list(max_match.STAGES)
    assert figures["max_match"]["precision"] == 0.5 and figures["pruned"]["precision"] == 1.0
    assert figures["pruned"]["words"] == 1 and figures["restricted"]["recall"] == 1.0
