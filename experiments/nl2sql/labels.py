"""Inputs and labels of the NL2SQL model (docs/nl2sql.md §1.2, §1.4).

Sequence: `[CLS] q_1 … q_L [SEP]`, then `[CLS] header_j [SEP]` for each header, one token
per character; header j is read at its `[CLS]`. Labels: per header, its agg (0–5) or 6 for
"not selected"; the connector; per question character, the op of the condition value it
belongs to (4: none) and that condition's column. A condition value that is not a
substring of the question is replaced by the jieba word 1/2/3-gram of the question at the
smallest edit distance (the question says "16年" where the SQL says "2016").
"""

import dataclasses
import functools
import logging

import jieba
import numpy as np
from rapidfuzz.distance import Levenshtein

from experiments.nl2sql import tables as tables_lib
from experiments.nl2sql.tokenization import CharTokenizer

NOT_SELECTED = 6   # the 7th sel class: the column is not selected
NO_OP = 4          # the 5th op class: the character is not part of a condition value


@functools.cache
def _jieba():
    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading lines are not ours to print
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()  # loads the bundled dictionary once, without jieba's log lines
    return tokenizer


def jieba_ngrams(question: str) -> list[str]:
    """The jieba words of `question`, then its word bigrams and trigrams (joined)."""
    words = _jieba().lcut(question)
    return (words + ["".join(pair) for pair in zip(words, words[1:])]
            + ["".join(triple) for triple in zip(words, words[1:], words[2:])])


def locate_value(value: str, question: str) -> tuple[str | None, str]:
    """The question span a condition value is tagged on, and how it was found.

    Returns:
      (span, how): how is "literal" (the value is in the question), "ngram" (the nearest
      jieba n-gram by edit distance, first on ties) or "dropped" (no n-gram: empty question).
    """
    if value in question:
        return value, "literal"
    candidates = jieba_ngrams(question)
    if not candidates:
        return None, "dropped"
    distances = [Levenshtein.distance(value, candidate) for candidate in candidates]
    span = candidates[int(np.argmin(distances))]
    return (span, "ngram") if span and span in question else (None, "dropped")


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One example's token ids and where its headers start (lists, unpadded)."""

    token_ids: list[int]
    header_positions: list[int]
    question_length: int


def encode(tokenizer: CharTokenizer, question: str, header) -> Encoded:
    """`[CLS] q [SEP]` then `[CLS] h [SEP]` per header, one id per character."""
    ids = [tokenizer.cls] + tokenizer.encode(question) + [tokenizer.sep]
    positions = []
    for name in header:
        positions.append(len(ids))
        ids += [tokenizer.cls] + tokenizer.encode(name) + [tokenizer.sep]
    return Encoded(ids, positions, len(question))


def condition_tags(example: tables_lib.Example) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per question character: op (NO_OP if none) and column (0 if none), and how each
    condition's value was located (`locate_value`); the first occurrence is tagged."""
    length = len(example.question)
    ops = np.full(length, NO_OP, np.int32)
    columns = np.zeros(length, np.int32)
    how = []
    for column, op, value in example.query.conds:
        span, found = locate_value(value, example.question)
        how.append(found)
        if span is None:
            continue
        start = example.question.index(span)
        ops[start:start + len(span)] = op
        columns[start:start + len(span)] = column
    return ops, columns, how


@dataclasses.dataclass
class Batchable:
    """Padded arrays for a list of examples, and which examples did not fit.

    `arrays`: token_ids, token_mask, question_mask [N, T]; header_positions, header_mask
    [N, NH]; with labels also sel [N, NH], conn [N], cop, csel [N, T]. `kept[i]` is the
    index into the input list of row i; `too_long` the indices that exceeded maxlen.
    """

    arrays: dict[str, np.ndarray]
    kept: list[int]
    too_long: list[int]


def build_arrays(tokenizer: CharTokenizer, examples, tables, maxlen: int, max_headers: int,
                 with_labels: bool = True) -> Batchable:
    """Encodes `examples` (with their tables) into fixed [N, maxlen] / [N, max_headers]
    arrays; an example longer than `maxlen` tokens or with more headers than `max_headers`
    is left out and listed in `too_long` (the caller reports it)."""
    rows, kept, too_long = [], [], []
    for index, example in enumerate(examples):
        header = tables[example.table_id].header
        encoded = encode(tokenizer, example.question, header)
        if len(encoded.token_ids) > maxlen or len(header) > max_headers:
            too_long.append(index)
            continue
        kept.append(index)
        rows.append((example, encoded))
    n = len(rows)
    arrays = {name: np.zeros((n, maxlen), np.int32)
              for name in ("token_ids", "token_mask", "question_mask")}
    arrays.update({name: np.zeros((n, max_headers), np.int32)
                   for name in ("header_positions", "header_mask")})
    if with_labels:
        arrays["sel"] = np.full((n, max_headers), NOT_SELECTED, np.int32)
        arrays["conn"] = np.zeros(n, np.int32)
        arrays["cop"] = np.full((n, maxlen), NO_OP, np.int32)
        arrays["csel"] = np.zeros((n, maxlen), np.int32)
    for row, (example, encoded) in enumerate(rows):
        length, heads = len(encoded.token_ids), len(encoded.header_positions)
        arrays["token_ids"][row, :length] = encoded.token_ids
        arrays["token_mask"][row, :length] = 1
        arrays["question_mask"][row, 1:1 + encoded.question_length] = 1
        arrays["header_positions"][row, :heads] = encoded.header_positions
        arrays["header_mask"][row, :heads] = 1
        if with_labels:
            query = example.query
            for column, agg in reversed(list(zip(query.sel, query.agg))):
                arrays["sel"][row, column] = agg   # reversed: the first occurrence wins
            arrays["conn"][row] = query.conn
            ops, columns, _ = condition_tags(example)
            arrays["cop"][row, 1:1 + encoded.question_length] = ops
            arrays["csel"][row, 1:1 + encoded.question_length] = columns
    return Batchable(arrays, kept, too_long)
