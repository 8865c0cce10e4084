"""Chinese text utilities: character tokenisation, character ROUGE, BLEU.

Scoring generated Chinese with English-minded tools fails silently: `rouge_score`'s default
tokenizer keeps only [a-z0-9] runs, so every Chinese string tokenises to nothing and scores
0. Here ROUGE runs on characters (`CharTokenizer`, which refuses a non-empty reference that
tokenises to nothing), and BLEU goes through sacrebleu's "zh" tokenizer, which splits CJK
characters apart and keeps Latin words and numbers whole.
"""

import re
from collections.abc import Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer, tokenizers

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class EmptyTokenization(ValueError):
    """A non-empty text tokenised to no tokens: the tokenizer does not fit the language."""


def characters(text: str) -> list[str]:
    """The non-whitespace characters of ``text``, lower-cased (Latin letters)."""
    return [char for char in text.lower() if not char.isspace()]


class CharTokenizer(tokenizers.Tokenizer):
    """A `rouge_score` tokenizer whose tokens are characters (whitespace dropped).

    Raises `EmptyTokenization` for a text with non-whitespace content and no tokens, which
    with this rule cannot happen; it is the check a tokenizer swapped in here must pass.
    """

    def tokenize(self, text: str) -> list[str]:
        tokens = characters(text)
        if not tokens and text.strip():
            raise EmptyTokenization(f"{text!r} tokenised to nothing")
        return tokens


def require_tokens(tokenizer, texts: Sequence[str], what: str) -> None:
    """Raises EmptyTokenization when a non-blank text of ``texts`` gives no tokens."""
    for index, text in enumerate(texts):
        if text.strip() and not tokenizer.tokenize(text):
            raise EmptyTokenization(f"{what} {index}: {text!r} tokenised to nothing by "
                                    f"{type(tokenizer).__name__}")


def character_rouge(hypotheses: Sequence[str], references: Sequence[str],
                    tokenizer=None) -> dict[str, float]:
    """Mean character ROUGE-1/2/L F1 × 100 over pairs (`rouge_score`).

    Args:
      hypotheses: generated texts (an empty one scores 0).
      references: the gold texts, as many; each must have at least one token.
      tokenizer: a `rouge_score` tokenizer (default `CharTokenizer`).

    Returns:
      {"rouge1", "rouge2", "rougeL"}: mean F-measures in [0, 100].

    Raises:
      ValueError: on different lengths or no pairs.
      EmptyTokenization: when a reference tokenises to nothing.
    """
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need as many hypotheses as references (> 0), got "
                         f"{len(hypotheses)} and {len(references)}")
    tokenizer = tokenizer or CharTokenizer()
    require_tokens(tokenizer, references, "reference")
    if any(not r.strip() for r in references):
        raise EmptyTokenization("a reference is blank")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)
    totals = {name: [] for name in ROUGE_TYPES}
    for hypothesis, reference in zip(hypotheses, references):
        scores = scorer.score(reference, hypothesis)  # (target, prediction)
        for name in ROUGE_TYPES:
            totals[name].append(scores[name].fmeasure)
    return {name: 100.0 * float(np.mean(values)) for name, values in totals.items()}


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0–100) with sacrebleu's "zh" tokenizer, one reference per hypothesis."""
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need as many hypotheses as references (> 0), got "
                         f"{len(hypotheses)} and {len(references)}")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)],
                                       tokenize="zh").score)


def end_accuracy(hypotheses: Sequence[str], references: Sequence[str], n: int = 4
                 ) -> dict[str, float]:
    """Character accuracy of the first and the last ``n`` positions (SB-NMT's statistic).

    Position i < n of the start compares hypothesis[i] with reference[i]; of the end,
    hypothesis[-1 - i] with reference[-1 - i]. Positions beyond the reference are not
    counted; a hypothesis too short counts as wrong there.

    Returns:
      {"first{n}", "last{n}"}: accuracies × 100.
    """
    hits = {"first": [], "last": []}
    for hypothesis, reference in zip(hypotheses, references):
        hypothesis, reference = characters(hypothesis), characters(reference)
        for i in range(min(n, len(reference))):
            hits["first"].append(i < len(hypothesis) and hypothesis[i] == reference[i])
            hits["last"].append(i < len(hypothesis) and hypothesis[-1 - i] == reference[-1 - i])
    return {f"{side}{n}": 100.0 * float(np.mean(values)) if values else 0.0
            for side, values in hits.items()}


# ------------------------------------------------------------------------------------------
# Chinese numbers (NL2SQL condition values: "3万4000", "2.5亿", "十二", "两千").
# (The import sits here because this section was appended while others edited the top.)


_CHINESE_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
                   "六": 6, "七": 7, "八": 8, "九": 9}
_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_LARGE_UNITS = (("亿", 1e8), ("万", 1e4))
_NUMBER_PIECE = re.compile(r"\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千]")


def _below_ten_thousand(text: str) -> float | None:
    """"3千5百", "十二", "4000", "2.5" -> the number; None for anything else."""
    if not text:
        return 0.0
    pieces = _NUMBER_PIECE.findall(text)
    if "".join(pieces) != text:
        return None
    total, current = 0.0, None
    for piece in pieces:
        if piece in _SMALL_UNITS:
            total += (1.0 if current is None else current) * _SMALL_UNITS[piece]
            current = None
        elif piece in _CHINESE_DIGITS:
            current = float(_CHINESE_DIGITS[piece]) if current is None else (
                current * 10 + _CHINESE_DIGITS[piece])
        elif current is not None:
            return None  # two Arabic numbers in a row
        else:
            current = float(piece)
    return total + (current or 0.0)


def parse_chinese_number(text: str) -> float | None:
    """The value of a number written with Arabic digits, Chinese numerals and the units
    万 (1e4) and 亿 (1e8): "3万4000" -> 34000, "2.5亿" -> 2.5e8, "十二" -> 12, "两千" -> 2000,
    "-4.6" -> -4.6, "1,200" -> 1200. None when the text is not such a number.
    """
    text = text.strip().replace(",", "").replace("，", "")
    sign = -1.0 if text.startswith(("-", "负")) else 1.0
    text = text.lstrip("-+负")
    if not text:
        return None
    for unit, scale in _LARGE_UNITS:
        if unit in text:
            high, _, low = text.partition(unit)
            high_value = parse_chinese_number(high) if high else 1.0
            low_value = parse_chinese_number(low) if low else 0.0
            if high_value is None or low_value is None:
                return None
            return sign * (high_value * scale + low_value)
    value = _below_ten_thousand(text)
    return None if value is None else sign * value


def normalize_number(text: str) -> str:
    """`text` with a number in canonical digits ("3万" -> "30000", "2.50" -> "2.5");
    any other text unchanged."""
    value = parse_chinese_number(text)
    if value is None:
        return text
    return str(int(value)) if float(value).is_integer() else repr(float(value))
