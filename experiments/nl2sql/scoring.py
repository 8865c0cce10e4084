"""Scores of predicted queries: logic form, components, execution (docs/nl2sql.md §1.7).

* Logic form: same connector, same set of (sel, agg) pairs, same set of (col, op, value)
  conditions with exact value strings.
* Components: sel (set of selected columns), agg (set of (sel, agg)), conn, cond column
  (set of condition columns), op (set of (col, op)), value (set of (col, value)).
* Execution: the predicted and the gold query run in sqlite (bound parameters, read-only
  connection); equal when their result rows are equal as multisets, every selected column
  compared. Condition values on real columns are normalised as numbers on both sides
  (`experiments.text.parse_chinese_number`: "3万4000", "2.5亿", "十二"); every condition is
  kept, also two on one column.

The official baseline's scorer differs in three ways (docs/nl2sql.md §3): it compared only
the last selected column, kept one condition per column (the second overwrote the first),
and misread numbers written with 万, 千 or 两.
"""

import collections
import sqlite3

import numpy as np

from experiments import text
from experiments.nl2sql import tables as tables_lib
from experiments.nl2sql.tables import Query, Table

COMPONENTS = ("sel", "agg", "conn", "cond_col", "op", "value")


def logic_form_match(predicted: Query, gold: Query) -> bool:
    """Same connector, same (sel, agg) set, same (col, op, value) set."""
    return (predicted.conn == gold.conn
            and set(zip(predicted.sel, predicted.agg)) == set(zip(gold.sel, gold.agg))
            and set(predicted.conds) == set(gold.conds))


def component_matches(predicted: Query, gold: Query) -> dict[str, bool]:
    """Each of `COMPONENTS`: whether that part of the query is right."""
    def parts(query: Query) -> dict:
        return {"sel": set(query.sel), "agg": set(zip(query.sel, query.agg)),
                "conn": query.conn, "cond_col": {c for c, _, _ in query.conds},
                "op": {(c, o) for c, o, _ in query.conds},
                "value": {(c, v) for c, _, v in query.conds}}
    mine, theirs = parts(predicted), parts(gold)
    return {name: mine[name] == theirs[name] for name in COMPONENTS}


def bound_value(value: str, column_type: str):
    """A condition value as bound to sqlite: a number for a real column when it reads as
    one (Chinese numerals and 万/亿 included), else the string."""
    if column_type == "real":
        number = text.parse_chinese_number(value)
        if number is not None:
            return number
    return value


def sql_of(query: Query, table: Table) -> tuple[str, list]:
    """(SQL text with ? placeholders, parameters) for `query` on `table`."""
    columns = []
    for column, agg in zip(query.sel, query.agg):
        name = f"col_{column + 1}"
        columns.append(f"{tables_lib.AGGS[agg]}({name})" if agg else name)
    sql = f"SELECT {', '.join(columns) or '*'} FROM {tables_lib.table_name(table.id)}"
    parameters = []
    if query.conds:
        joiner = " OR " if query.conn == 2 else " AND "
        sql += " WHERE " + joiner.join(
            f"col_{column + 1} {tables_lib.SQL_OPS[op]} ?" for column, op, _ in query.conds)
        parameters = [bound_value(value, table.types[column])
                      for column, _, value in query.conds]
    return sql, parameters


def execute(connection: sqlite3.Connection, query: Query, table: Table):
    """The result rows of `query` as a multiset (Counter of row tuples); None on an error
    (a column out of range, an unknown table)."""
    if any(c >= len(table.header) for c in list(query.sel) + [c for c, _, _ in query.conds]):
        return None
    sql, parameters = sql_of(query, table)
    try:
        rows = connection.execute(sql, parameters).fetchall()
    except sqlite3.Error:
        return None
    return collections.Counter(tuple(_rounded(cell) for cell in row) for row in rows)


def _rounded(cell):
    return round(cell, 6) if isinstance(cell, float) else cell


def score(predictions: list[Query | None], examples, tables: dict[str, Table],
          connection: sqlite3.Connection | None) -> dict[str, float]:
    """Accuracies over `examples` (a None prediction, e.g. an example too long to encode,
    counts as wrong everywhere): logic_form, execution (when a connection is given),
    official = (logic_form + execution) / 2, and one per component."""
    if not examples:
        raise ValueError("no examples to score")
    hits = collections.defaultdict(list)
    for predicted, example in zip(predictions, examples, strict=True):
        gold = example.query
        if predicted is None:
            for name in ("logic_form", "execution", *COMPONENTS):
                hits[name].append(False)
            continue
        hits["logic_form"].append(logic_form_match(predicted, gold))
        for name, hit in component_matches(predicted, gold).items():
            hits[name].append(hit)
        if connection is not None:
            table = tables[example.table_id]
            gold_rows = execute(connection, gold, table)
            hits["execution"].append(gold_rows is not None
                                     and execute(connection, predicted, table) == gold_rows)
    result = {name: float(np.mean(values)) for name, values in hits.items()}
    if connection is not None:
        result["official"] = (result["logic_form"] + result["execution"]) / 2
    order = ("official", "logic_form", "execution", *COMPONENTS)
    return {name: result[name] for name in order if name in result}
