"""Decoding, the official micro-F1, the NIL threshold and the error analysis.

Decoding follows the post's code (kexue.fm/archives/6919): starts with p_start > 0.4 and
ends with p_end > 0.4; each start pairs with the nearest end at or after it; each mention's
candidates are scored with p_link, and a mention whose best p_link is below 0.1 is dropped,
otherwise linked to its argmax. NIL is never output there.

The NIL option (a departure from the post, which drops NIL from its gold): a mention whose
best p_link is below a threshold τ is output as (mention, offset, "NIL") instead of being
dropped, and the gold keeps its NIL mentions; τ is the value that maximises this F1 on the
dev split (`choose_nil_threshold`).

The metric is the competition's: micro P/R/F1 over sets of (mention, offset, kb_id) triples
("NIL_*" ids count as "NIL").
"""

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from experiments.entity_linking import kb

Span = tuple[int, int]               # (start, end), end exclusive
Triple = tuple[str, int, str]        # (mention, offset, kb_id)


def decode_spans(p_start: np.ndarray, p_end: np.ndarray, length: int,
                 start_threshold: float = 0.4, end_threshold: float = 0.4) -> list[Span]:
    """The post's decoding: each start (p > threshold) pairs with the nearest end ≥ start.

    Args:
      p_start, p_end: (T,) probabilities.
      length: the text's length (positions past it are ignored).

    Returns:
      (start, end) spans, end exclusive, in order of their start.
    """
    starts = [i for i in range(length) if p_start[i] > start_threshold]
    ends = [i for i in range(length) if p_end[i] > end_threshold]
    spans = []
    for start in starts:
        end = next((e for e in ends if e >= start), None)
        if end is not None:
            spans.append((start, end + 1))
    return spans


@dataclasses.dataclass(frozen=True)
class SpanDecision:
    """What the linker did with one predicted mention.

    Attributes:
      span: (start, end).
      candidates: the ids it chose among (restricted list, else kb2id's).
      scores: p_link of each candidate, same order.
    """

    span: Span
    candidates: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def best(self) -> tuple[str | None, float]:
        if not self.candidates:
            return None, 0.0
        i = int(np.argmax(self.scores))
        return self.candidates[i], float(self.scores[i])


def link(text: str, decisions: Iterable[SpanDecision], *, link_threshold: float = 0.1,
         nil_threshold: float | None = None) -> list[Triple]:
    """The output triples of one text.

    Without `nil_threshold` (the post): a mention is linked to its best candidate when that
    scores at least `link_threshold`, else dropped. With it: linked when the best scores at
    least `nil_threshold`, else output as NIL (a mention without candidates too).
    """
    triples = []
    for decision in decisions:
        start, end = decision.span
        best, score = decision.best
        if nil_threshold is None:
            if best is not None and score >= link_threshold:
                triples.append((text[start:end], start, best))
        else:
            kb_id = best if best is not None and score >= nil_threshold else kb.NIL
            triples.append((text[start:end], start, kb_id))
    return triples


def gold_triples(example: kb.Example, *, with_nil: bool) -> set[Triple]:
    """The example's gold triples; NIL ones (as "NIL") only `with_nil`."""
    return {(m.mention, m.offset, kb.NIL if m.is_nil else m.kb_id)
            for m in example.mentions if with_nil or not m.is_nil}


def micro_f1(gold: Sequence[set], predicted: Sequence[Iterable]) -> dict[str, float]:
    """Micro precision, recall and F1 over per-text sets of triples."""
    correct = sum(len(g & set(p)) for g, p in zip(gold, predicted))
    n_gold = sum(len(g) for g in gold)
    n_predicted = sum(len(set(p)) for p in predicted)
    precision = correct / n_predicted if n_predicted else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def choose_nil_threshold(examples: Sequence[kb.Example],
                         decisions: Sequence[Sequence[SpanDecision]]) -> tuple[float, dict]:
    """τ maximising the with-NIL micro F1 on these (dev) texts, and its figures.

    Tried: 0 (never NIL) and every best score seen (a mention at exactly τ is linked),
    plus one just above the largest (always NIL); ties go to the smallest τ.
    """
    gold = [gold_triples(e, with_nil=True) for e in examples]
    bests = sorted({d.best[1] for ds in decisions for d in ds if d.candidates})
    tried = [0.0] + bests + [np.nextafter(bests[-1], np.inf) if bests else 1.0]
    best_tau, best_figures = 0.0, None
    for tau in tried:
        predicted = [link(e.text, ds, nil_threshold=float(tau))
                     for e, ds in zip(examples, decisions)]
        figures = micro_f1(gold, predicted)
        if best_figures is None or figures["f1"] > best_figures["f1"]:
            best_tau, best_figures = float(tau), figures
    return best_tau, best_figures


MISS_KINDS = ("ner", "candidates", "disambiguation")
FALSE_POSITIVE_KINDS = ("not_a_mention", "boundary", "nil_mention", "wrong_entity",
                        "nil_for_entity")


def error_analysis(examples: Sequence[kb.Example], decisions: Sequence[Sequence[SpanDecision]],
                   predicted: Sequence[Iterable[Triple]], *, with_nil: bool) -> dict:
    """Sorts every miss and every false positive of one prediction run.

    Misses (gold triples not predicted):
      ner: no predicted mention at the gold (mention, offset);
      candidates: the mention was predicted but the gold id is not among its candidates;
      disambiguation: predicted, gold id among the candidates (or gold NIL), yet another id
        (or nothing, below the threshold) came out; `rejected` counts the nothing-came-out
        part.
    False positives (predicted triples not in the gold):
      not_a_mention: the span overlaps no gold mention;
      boundary: it overlaps one but is not one;
      nil_mention: it is a gold NIL mention, linked to an entity (or, without NIL, any id);
      wrong_entity: it is a gold linked mention, linked to another entity;
      nil_for_entity: it is a gold linked mention, output as NIL.

    Args:
      examples: the annotated texts.
      decisions: per text, what the linker did with each predicted mention.
      predicted: per text, the output triples.
      with_nil: whether gold NIL mentions count (the NIL option).

    Returns:
      {"gold", "predicted", "correct", "misses": {kind: n, "rejected": n},
       "false_positives": {kind: n}}.
    """
    misses = dict.fromkeys(MISS_KINDS, 0) | {"rejected": 0}
    false_positives = dict.fromkeys(FALSE_POSITIVE_KINDS, 0)
    totals = {"gold": 0, "predicted": 0, "correct": 0}
    for example, text_decisions, triples in zip(examples, decisions, predicted):
        gold = gold_triples(example, with_nil=with_nil)
        triples = set(triples)
        totals["gold"] += len(gold)
        totals["predicted"] += len(triples)
        totals["correct"] += len(gold & triples)
        by_span = {(d.span[0], d.span[1] - d.span[0]): d for d in text_decisions}
        output_at = {(m, o) for m, o, _ in triples}
        for mention, offset, kb_id in gold - triples:
            decision = by_span.get((offset, len(mention)))
            if decision is None:
                misses["ner"] += 1
            elif kb_id != kb.NIL and kb_id not in decision.candidates:
                misses["candidates"] += 1
            else:
                misses["disambiguation"] += 1
                misses["rejected"] += (mention, offset) not in output_at
        gold_spans = {(m.offset, m.offset + len(m.mention)): m for m in example.mentions}
        for mention, offset, kb_id in triples - gold:
            span = (offset, offset + len(mention))
            if span not in gold_spans:
                overlaps = any(s < span[1] and span[0] < e for s, e in gold_spans)
                false_positives["boundary" if overlaps else "not_a_mention"] += 1
            elif gold_spans[span].is_nil:
                false_positives["nil_mention"] += 1
            elif kb_id == kb.NIL:
                false_positives["nil_for_entity"] += 1
            else:
                false_positives["wrong_entity"] += 1
    return {**totals, "misses": misses, "false_positives": false_positives}


def error_markdown(analyses: Mapping[str, dict]) -> str:
    """A markdown table of several `error_analysis` results, one column each."""
    names = list(analyses)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label, get):
        lines.append(f"| {label} | " + " | ".join(str(get(analyses[n])) for n in names) + " |")

    for key in ("gold", "predicted", "correct"):
        row(key, lambda a, key=key: a[key])
    for kind in (*MISS_KINDS, "rejected"):
        label = f"miss: {kind}" if kind != "rejected" else "  of which below threshold"
        row(label, lambda a, kind=kind: a["misses"][kind])
    for kind in FALSE_POSITIVE_KINDS:
        row(f"false positive: {kind}", lambda a, kind=kind: a["false_positives"][kind])
    return "\n".join(lines)
