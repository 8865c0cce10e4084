"""Decoding the heads' probabilities into a query, with the post's corrections
(docs/nl2sql.md §1.6).

Departures from the seed's code: the value scan covers question positions 1…L only (the
seed also read [CLS] and then appended the last question character), and a run that ends
at the last question character is flushed (the seed dropped it).
"""

import numpy as np
from rapidfuzz.distance import Levenshtein

from experiments import text
from experiments.nl2sql.labels import NO_OP, NOT_SELECTED
from experiments.nl2sql.tables import Query, Table

_NUMERIC = set("0123456789.")


def value_runs(cop: np.ndarray, question_length: int) -> list[tuple[int, int, int]]:
    """Maximal runs of one op over question positions 1…L.

    Args:
      cop: int [T], the argmax op per position (NO_OP = none).
      question_length: L.

    Returns:
      [(start, end, op)]: positions start…end−1 of the sequence; the final run flushed.
    """
    runs, start, current = [], None, NO_OP
    for position in range(1, question_length + 1):
        op = int(cop[position])
        if op != current:
            if current != NO_OP:
                runs.append((start, position, current))
            start, current = position, op
    if current != NO_OP:
        runs.append((start, question_length + 1, current))
    return runs


def _cell_strings(table: Table, column: int) -> set[str]:
    return {_cell_text(row[column]) for row in table.rows}


def _cell_text(cell) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def correct_condition(column: int, op: int, value: str, table: Table) -> tuple[int, int, str]:
    """The post's corrections of one decoded condition.

    A number written with 万/亿/Chinese numerals becomes digits first (our addition). Then: a
    value with a character outside [0-9.] gets op "=="; an "==" value that is no cell of the
    table becomes the nearest cell by edit distance; if that value is not in the predicted
    column, the column becomes the first column holding it.
    """
    if table.types[column] == "real":
        value = text.normalize_number(value)
    if set(value) - _NUMERIC - {"-"}:
        op = 2
    if op == 2:
        cells = [_cell_text(cell) for row in table.rows for cell in row]
        if cells and value not in cells:
            value = min(cells, key=lambda cell: Levenshtein.distance(value, cell))
        if value not in _cell_strings(table, column):
            for other in range(len(table.header)):
                if value in _cell_strings(table, other):
                    column = other
                    break
    return column, op, value


def decode(probabilities: dict[str, np.ndarray], question: str, table: Table) -> Query:
    """One example's query from its head outputs.

    Args:
      probabilities: "conn" [3], "sel" [NH, 7], "cop" [T, 5], "csel" [T, NH] (softmaxed or
        logits; only argmaxes and means of csel rows are used).
      question: the question (one token per character after [CLS]).
      table: the example's table.
    """
    n_headers = len(table.header)
    sel_classes = np.argmax(probabilities["sel"][:n_headers], axis=-1)
    sel = [j for j in range(n_headers) if sel_classes[j] != NOT_SELECTED]
    agg = [int(sel_classes[j]) for j in sel]
    cop = np.argmax(probabilities["cop"], axis=-1)
    conds = []
    for start, end, op in value_runs(cop, len(question)):
        column_scores = np.mean(probabilities["csel"][start:end, :n_headers], axis=0)
        column = int(np.argmax(column_scores))
        value = question[start - 1:end - 1]
        conds.append(correct_condition(column, op, value, table))
    conds = sorted(set(conds))
    conn = 0 if len(conds) <= 1 else 1 + int(np.argmax(probabilities["conn"][1:3]))
    return Query(sel=tuple(sel), agg=tuple(agg), conn=conn, conds=tuple(conds))
