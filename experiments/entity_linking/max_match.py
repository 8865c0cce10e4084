"""Max-match NER over the alias dictionary, dictionary pruning and candidate restriction.

The post's first stage (kexue.fm/archives/6919) finds mentions with the dictionary alone:

* every occurrence of a dictionary word in the (lower-cased) text is an edge of a DAG over
  the character positions, scored −1; a character no word covers is an edge scored −100;
* the best path (Viterbi) maximises coverage first, then takes the fewest pieces; its
  dictionary pieces are the predicted mentions.

Departure, named: the post's DAG helper only adds the −100 edge into a position that no
path has reached yet, which can miss the best path (on "abcde" with the words "abcd" and
"cde" it keeps a|b|cde, −200, over abcd|e, −101). `best_path` computes the exact optimum;
among equal scores it prefers the path whose last piece starts earliest, as the helper's
scan does.

Matching uses an Aho-Corasick automaton (`pyahocorasick`), built once per dictionary;
`TrieMatcher` is the plain Python trie it replaces, kept as the reference and the speed
baseline (`compare_matchers`).

Training statistics (the post):

* pruning: for each word w, pred(w) = the number of training texts where w is a gold
  mention and rem(w) = the number where max-match finds w but w is not gold; w leaves the
  dictionary when (rem + 1)/(pred + 1) ≥ 5;
* candidate restriction: for each gold mention string, its gold ids seen at least twice,
  intersected with the index, become its candidate list (else all same-name entities).

Gold mentions are the linked ones (NIL left out), as the post trains and counts.
"""

import collections
import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence

import ahocorasick
import numpy as np

from experiments.entity_linking import kb

MATCH_SCORE = -1.0   # a dictionary piece
GAP_SCORE = -100.0   # a character no dictionary word covers
PRUNE_THRESHOLD = 5.0
CANDIDATE_MIN_COUNT = 2

Span = tuple[int, int]   # (start, end), end exclusive


class AhoCorasickMatcher:
    """Every occurrence of every dictionary word, by one Aho-Corasick automaton.

    Args:
      words: the dictionary (already normalised; empty strings are ignored).
    """

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(word for word in words if word)
        self._automaton = None
        if self.words:
            automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
            for word in self.words:
                automaton.add_word(word, len(word))
            automaton.make_automaton()
            self._automaton = automaton

    def matches(self, text: str) -> list[Span]:
        """All (start, end) with text[start:end] in the dictionary, sorted."""
        if self._automaton is None:
            return []
        return sorted((last - length + 1, last + 1)
                      for last, length in self._automaton.iter(text))


class TrieMatcher:
    """The same matches by walking a nested-dict trie from every start (the reference)."""

    _END = ""   # no word holds the empty string, so it can mark a word's end

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(word for word in words if word)
        self._root: dict = {}
        for word in self.words:
            node = self._root
            for char in word:
                node = node.setdefault(char, {})
            node[self._END] = True

    def matches(self, text: str) -> list[Span]:
        """All (start, end) with text[start:end] in the dictionary, sorted."""
        found = []
        for start in range(len(text)):
            node = self._root
            for end in range(start, len(text)):
                node = node.get(text[end])
                if node is None:
                    break
                if self._END in node:
                    found.append((start, end + 1))
        return found


def best_path(length: int, matches: Iterable[Span], *, match_score: float = MATCH_SCORE,
              gap_score: float = GAP_SCORE) -> list[tuple[int, int, bool]]:
    """The highest-scoring segmentation of positions 0..length into matches and gaps.

    Args:
      length: the text's length n.
      matches: dictionary spans (start, end), 0 ≤ start < end ≤ n, each scored `match_score`.
      match_score: the score of a dictionary piece.
      gap_score: the score of a single character taken as a piece of its own (always
        allowed; a one-character dictionary word scores `match_score` instead).

    Returns:
      The pieces (start, end, is_match) in order, covering 0..n. Ties between paths of equal
      score go to the one whose last piece starts earliest (the longer last piece).
    """
    starts_by_end: list[list[int]] = [[] for _ in range(length + 1)]
    for start, end in matches:
        starts_by_end[end].append(start)
    score = [0.0] * (length + 1)
    back: list[tuple[int, bool]] = [(0, False)] * (length + 1)
    for end in range(1, length + 1):
        best, choice = score[end - 1] + gap_score, (end - 1, False)
        for start in starts_by_end[end]:
            candidate = score[start] + match_score
            # On a tie the earlier start wins; every match starts at or before the gap's
            # end - 1, so a match also wins a tie against the gap.
            if candidate > best or (candidate == best and start <= choice[0]):
                best, choice = candidate, (start, True)
        score[end], back[end] = best, choice
    pieces, end = [], length
    while end > 0:
        start, is_match = back[end]
        pieces.append((start, end, is_match))
        end = start
    return pieces[::-1]


@dataclasses.dataclass(frozen=True)
class MaxMatcher:
    """Max-match NER: the dictionary pieces of the best path over the lower-cased text.

    Build with `MaxMatcher.build(words)`; call with a text to get [(mention, offset)], the
    mention as it is written in the text.
    """

    matcher: AhoCorasickMatcher | TrieMatcher
    match_score: float = MATCH_SCORE
    gap_score: float = GAP_SCORE

    @classmethod
    def build(cls, words: Iterable[str], *, matcher=AhoCorasickMatcher,
              match_score: float = MATCH_SCORE, gap_score: float = GAP_SCORE) -> "MaxMatcher":
        """A max-matcher over `words` (index keys: lower-cased, 《》 stripped)."""
        return cls(matcher(words), match_score, gap_score)

    def spans(self, text: str) -> list[Span]:
        """The (start, end) of the predicted mentions, in order."""
        matches = self.matcher.matches(kb.lower_same_length(text))
        return [(start, end) for start, end, is_match in
                best_path(len(text), matches, match_score=self.match_score,
                          gap_score=self.gap_score) if is_match]

    def __call__(self, text: str) -> list[tuple[str, int]]:
        return [(text[start:end], start) for start, end in self.spans(text)]


# --------------------------------------------------------------------------------------
# Training statistics.


def _key(mention: str) -> str:
    return kb.normalize_alias(mention)


def pruning_counts(examples: Iterable[kb.Example], max_matcher: MaxMatcher
                   ) -> tuple[collections.Counter, collections.Counter]:
    """(pred, rem) per dictionary key, each counted once per text.

    pred(w): texts where w is a gold (linked) mention; rem(w): texts where max-match finds w
    but w is no gold mention of that text.
    """
    pred, rem = collections.Counter(), collections.Counter()
    for example in examples:
        gold = {_key(m.mention) for m in example.linked}
        found = {_key(mention) for mention, _ in max_matcher(example.text)}
        pred.update(gold)
        rem.update(found - gold)
    return pred, rem


def words_to_prune(pred: Mapping[str, int], rem: Mapping[str, int],
                   threshold: float = PRUNE_THRESHOLD) -> frozenset[str]:
    """The words with (rem + 1)/(pred + 1) ≥ threshold."""
    return frozenset(word for word in set(pred) | set(rem)
                     if (rem.get(word, 0) + 1) / (pred.get(word, 0) + 1) >= threshold)


def prune_index(index: kb.KBIndex, examples: Sequence[kb.Example], *,
                threshold: float = PRUNE_THRESHOLD) -> tuple[kb.KBIndex, frozenset[str]]:
    """The index without the words the training statistics condemn, and those words.

    Args:
      index: the full index.
      examples: the training texts (their linked mentions are the gold).
      threshold: the (rem + 1)/(pred + 1) at or above which a word is removed (the post: 5).
    """
    pred, rem = pruning_counts(examples, MaxMatcher.build(index.words))
    removed = words_to_prune(pred, rem, threshold) & set(index.kb2id)
    return index.without(removed), removed


def candidate_links(examples: Iterable[kb.Example], index: kb.KBIndex, *,
                    min_count: int = CANDIDATE_MIN_COUNT) -> dict[str, tuple[str, ...]]:
    """Restricted candidate lists: mention key → its gold ids seen ≥ min_count times.

    Only ids the index still lists for that mention are kept (in index order); a mention
    with none left has no entry, so all its same-name entities stay candidates.
    """
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for example in examples:
        for mention in example.linked:
            counts[_key(mention.mention)][mention.kb_id] += 1
    links = {}
    for key, ids in counts.items():
        kept = [i for i in index.kb2id.get(key, ()) if ids[i] >= min_count]
        if kept:
            links[key] = tuple(kept)
    return links


def candidates(mention: str, index: kb.KBIndex,
               links: Mapping[str, Sequence[str]] | None = None) -> tuple[str, ...]:
    """The ids a linker chooses among for `mention`: its restricted list, else kb2id's."""
    key = _key(mention)
    if links and key in links:
        return tuple(links[key])
    return index.kb2id.get(key, ())


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def stage_figures(examples: Iterable[kb.Example], index: kb.KBIndex,
                  links: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """Recall and precision of max-match over `index`, against the linked gold mentions.

    Args:
      examples: annotated texts.
      index: the dictionary (full or pruned).
      links: restricted candidate lists (`candidate_links`), or None for kb2id's.

    Returns:
      recall, precision, f1: of predicted (mention, offset) pairs against the gold ones;
      link_recall: the share of gold (mention, offset, kb_id) whose mention is predicted and
        whose id is among its candidates (what a perfect linker could reach);
      candidates: the mean number of candidates per predicted mention;
      gold, predicted, correct: the counts behind them; words: the dictionary's size.
    """
    max_matcher = MaxMatcher.build(index.words)
    gold = predicted = correct = linkable = 0
    candidate_total = 0
    for example in examples:
        truth = {(m.mention, m.offset): m.kb_id for m in example.linked}
        found = max_matcher(example.text)
        gold, predicted = gold + len(truth), predicted + len(found)
        for mention, offset in found:
            ids = candidates(mention, index, links)
            candidate_total += len(ids)
            if (mention, offset) in truth:
                correct += 1
                linkable += truth[mention, offset] in ids
    recall, precision = _ratio(correct, gold), _ratio(correct, predicted)
    return {"recall": recall, "precision": precision,
            "f1": _ratio(2 * recall * precision, recall + precision),
            "link_recall": _ratio(linkable, gold),
            "candidates": _ratio(candidate_total, predicted),
            "gold": gold, "predicted": predicted, "correct": correct,
            "words": len(index.kb2id)}


STAGES = ("max_match", "pruned", "restricted")


def pipeline_figures(train: Sequence[kb.Example], dev: Sequence[kb.Example],
                     index: kb.KBIndex, *, threshold: float = PRUNE_THRESHOLD,
                     min_count: int = CANDIDATE_MIN_COUNT) -> dict[str, dict[str, float]]:
    """`stage_figures` on `dev` for each stage, the statistics taken from `train`.

    Returns:
      {"max_match": full dictionary, "pruned": after `prune_index`, "restricted": pruned
      dictionary with `candidate_links`}; the mention figures of the last two agree (the
      restriction changes only the candidates).
    """
    pruned, _ = prune_index(index, train, threshold=threshold)
    links = candidate_links(train, pruned, min_count=min_count)
    return {"max_match": stage_figures(dev, index),
            "pruned": stage_figures(dev, pruned),
            "restricted": stage_figures(dev, pruned, links)}


def split_train_dev(examples: Sequence, *, seed: int = 0, folds: int = 9, fold: int = 0
                    ) -> tuple[list, list]:
    """The post's split: in a fixed random order, every `folds`-th example goes to dev.

    Returns:
      (train, dev): dev holds the examples at positions i of the permutation with
      i mod folds == fold (about 1/9 with the post's 9).
    """
    order = np.random.default_rng(seed).permutation(len(examples))
    train = [examples[j] for i, j in enumerate(order) if i % folds != fold]
    dev = [examples[j] for i, j in enumerate(order) if i % folds == fold]
    return train, dev


# --------------------------------------------------------------------------------------
# Speed.


def compare_matchers(words: Iterable[str], texts: Sequence[str], *, repeats: int = 3
                     ) -> dict[str, float]:
    """Max-match throughput with the Aho-Corasick automaton against the Python trie.

    Both run the whole max-match (matching plus best path) over the same lower-cased texts;
    each time is the best of `repeats` passes.

    Returns:
      aho_corasick_texts_per_s, trie_texts_per_s, speedup, and the same three for the
      matching step alone (match_*); texts.

    Raises:
      AssertionError: if the two matchers disagree on any text.
    """
    words = list(words)
    texts = [kb.lower_same_length(text) for text in texts]
    fast, slow = AhoCorasickMatcher(words), TrieMatcher(words)
    for text in texts:
        assert fast.matches(text) == slow.matches(text), text

    def best_time(function) -> float:
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            for text in texts:
                function(text)
            times.append(time.perf_counter() - began)
        return min(times)

    figures = {"texts": float(len(texts))}
    for prefix, fast_fn, slow_fn in (
            ("", MaxMatcher(fast).spans, MaxMatcher(slow).spans),
            ("match_", fast.matches, slow.matches)):
        fast_time, slow_time = best_time(fast_fn), best_time(slow_fn)
        figures[f"{prefix}aho_corasick_texts_per_s"] = len(texts) / fast_time
        figures[f"{prefix}trie_texts_per_s"] = len(texts) / slow_time
        figures[f"{prefix}speedup"] = slow_time / fast_time
    return figures
