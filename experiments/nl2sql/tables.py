"""TableQA files: questions with SQL, tables, and their sqlite databases.

Formats (https://github.com/ZhuiyiTechnology/TableQA; docs/nl2sql.md §1.1):
  * questions, one JSON object per line: `table_id`, `question`, and (not in test files)
    `sql` = {`sel`: [col], `agg`: [agg] parallel to sel, `cond_conn_op`: 0/1/2,
    `conds`: [[col, op, "value"], ...]};
  * tables, one JSON object per line: `id`, `header`, `types` ("text"/"real"), `rows`
    (and `name`, `title`);
  * a sqlite database with one table `Table_<id>` per table, columns col_1, col_2, ….

A malformed record stops with `FILE:LINE: field 'NAME': problem`. SQL runs only through
sqlite3 with bound parameters, on read-only connections.
"""

import dataclasses
import json
import pathlib
import re
import sqlite3

from experiments import data

OPS = {0: ">", 1: "<", 2: "==", 3: "!="}
SQL_OPS = {0: ">", 1: "<", 2: "=", 3: "!="}
AGGS = {0: "", 1: "AVG", 2: "MAX", 3: "MIN", 4: "COUNT", 5: "SUM"}
CONNS = {0: "", 1: "and", 2: "or"}
COLUMN_TYPES = ("text", "real")
_TABLE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclasses.dataclass(frozen=True)
class Query:
    """One SQL query of TableQA: selected columns with their aggregations, conditions."""

    sel: tuple[int, ...]
    agg: tuple[int, ...]
    conn: int
    conds: tuple[tuple[int, int, str], ...]

    def to_json(self) -> dict:
        return {"sel": list(self.sel), "agg": list(self.agg), "cond_conn_op": self.conn,
                "conds": [list(cond) for cond in self.conds]}


@dataclasses.dataclass(frozen=True)
class Table:
    """A table: `header[j]` of type `types[j]` ("text" or "real"), `rows` of cells."""

    id: str
    header: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple, ...]
    title: str = ""


@dataclasses.dataclass(frozen=True)
class Example:
    """A question on a table, with its query (None in test files) and its file line."""

    question: str
    table_id: str
    query: Query | None
    line: int


def _int_in(value, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def parse_query(sql) -> Query:
    """The `sql` field of a question record.

    Raises:
      ValueError: naming what is malformed (the caller adds file, line and field).
    """
    if not isinstance(sql, dict):
        raise ValueError("must be an object with sel, agg, cond_conn_op, conds")
    for key in ("sel", "agg", "cond_conn_op", "conds"):
        if key not in sql:
            raise ValueError(f"lacks {key!r}")
    sel, agg, conds = sql["sel"], sql["agg"], sql["conds"]
    if not isinstance(sel, list) or not isinstance(agg, list) or len(sel) != len(agg):
        raise ValueError(f"sel and agg must be lists of one length, got {sel!r}, {agg!r}")
    if not isinstance(conds, list):
        raise ValueError(f"conds must be a list, got {conds!r}")
    parsed_conds = []
    for cond in conds:
        if not isinstance(cond, list) or len(cond) != 3:
            raise ValueError(f"a condition must be [col, op, value], got {cond!r}")
        value = cond[2]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"a condition value must be a string, got {value!r}")
        parsed_conds.append((_int_in(cond[0], 0, 10_000, "a condition column"),
                             _int_in(cond[1], 0, 3, "a condition op"), str(value)))
    return Query(sel=tuple(_int_in(s, 0, 10_000, "a sel column") for s in sel),
                 agg=tuple(_int_in(a, 0, 5, "an agg") for a in agg),
                 conn=_int_in(sql["cond_conn_op"], 0, 2, "cond_conn_op"),
                 conds=tuple(parsed_conds))


def _string(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _json_records(path, skip_bad: bool, skipped: data.Skipped):
    """(line number, dict) for each non-blank line of a JSON-lines file."""
    lines, bad = data.read_numbered_lines(path, skip_bad=skip_bad)
    skipped.errors.extend(bad.errors)
    for number, text in lines:
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            yield number, data.RecordError(path, number, None, f"invalid JSON: {error.msg}")
            continue
        if not isinstance(record, dict):
            yield number, data.RecordError(path, number, None, "a record must be an object")
            continue
        yield number, record


def _field(path, number: int, record: dict, name: str, parse):
    if name not in record:
        raise data.RecordError(path, number, name, "missing")
    try:
        return parse(record[name])
    except (ValueError, TypeError) as error:
        raise data.RecordError(path, number, name, str(error)) from None


def _parse_table(path, number: int, record: dict) -> Table:
    def table_id(value):
        if not isinstance(value, str) or not _TABLE_ID.match(value):
            raise ValueError(f"must be letters, digits, '_' or '-', got {value!r}")
        return value

    def header(value):
        if not isinstance(value, list) or not value or not all(
                isinstance(h, str) for h in value):
            raise ValueError("must be a non-empty list of strings")
        return tuple(value)

    def types(value):
        if not isinstance(value, list) or any(t not in COLUMN_TYPES for t in value):
            raise ValueError(f"must be a list of {' / '.join(COLUMN_TYPES)}, got {value!r}")
        if len(value) != len(head):
            raise ValueError(f"{len(value)} types for {len(head)} header columns")
        return tuple(value)

    def rows(value):
        if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
            raise ValueError("must be a list of rows (lists)")
        for row in value:
            if len(row) != len(head):
                raise ValueError(f"a row of {len(row)} cells for {len(head)} columns")
        return tuple(tuple(r) for r in value)

    id_ = _field(path, number, record, "id", table_id)
    head = _field(path, number, record, "header", header)
    return Table(id=id_, header=head, types=_field(path, number, record, "types", types),
                 rows=_field(path, number, record, "rows", rows),
                 title=str(record.get("title", "")))


def _collect(path, records, parse, skip_bad: bool, skipped: data.Skipped) -> list:
    parsed = []
    for number, record in records:
        try:
            if isinstance(record, data.RecordError):
                raise record
            parsed.append(parse(number, record))
        except data.RecordError as error:
            if not skip_bad:
                raise
            skipped.errors.append(error)
    return parsed


def read_tables(path, *, skip_bad: bool = False) -> tuple[dict[str, Table], data.Skipped]:
    """The tables of a `*.tables.json` file by id, and the records skipped under skip_bad.

    Raises:
      experiments.data.RecordError: a malformed record (file, line, field).
    """
    skipped = data.Skipped()
    tables = _collect(path, _json_records(path, skip_bad, skipped),
                      lambda number, record: _parse_table(path, number, record),
                      skip_bad, skipped)
    return {table.id: table for table in tables}, skipped


def read_questions(path, tables: dict[str, Table] | None = None, *, skip_bad: bool = False,
                   require_sql: bool = True) -> tuple[list[Example], data.Skipped]:
    """The questions of a TableQA file, checked against `tables` when given.

    Args:
      path: one JSON object per line.
      tables: id -> Table; every table_id must be there and every column index in range.
      skip_bad: skip (and count) malformed records instead of raising.
      require_sql: every record must carry `sql` (False: test files, where it may lack).

    Returns:
      (examples, skipped).

    Raises:
      experiments.data.RecordError: "FILE:LINE: field 'NAME': problem".
    """
    def parse(number, record):
        question = _field(path, number, record, "question", _string)
        table_id = _field(path, number, record, "table_id", _string)
        query = None
        if "sql" in record or require_sql:
            query = _field(path, number, record, "sql", parse_query)
        if tables is not None:
            _check_against_table(path, number, table_id, query, tables)
        return Example(question, table_id, query, number)

    skipped = data.Skipped()
    examples = _collect(path, _json_records(path, skip_bad, skipped), parse, skip_bad,
                        skipped)
    return examples, skipped


def _check_against_table(path, number, table_id, query, tables) -> None:
    if table_id not in tables:
        raise data.RecordError(path, number, "table_id", f"{table_id!r} is not in the tables")
    width = len(tables[table_id].header)
    if query is None:
        return
    for column in list(query.sel) + [cond[0] for cond in query.conds]:
        if column >= width:
            raise data.RecordError(path, number, "sql",
                                   f"column {column} out of range: the table has {width}")


def companion_paths(questions_path) -> tuple[pathlib.Path, pathlib.Path]:
    """(tables, db) next to `NAME.json`: `NAME.tables.json` and `NAME.db`."""
    path = pathlib.Path(questions_path)
    stem = path.name[:-len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(stem + ".tables.json"), path.with_name(stem + ".db")


def table_name(table_id: str) -> str:
    """The sqlite table of a TableQA table, quoted (ids are checked to be [A-Za-z0-9_-])."""
    if not _TABLE_ID.match(table_id):
        raise ValueError(f"table id {table_id!r} has characters outside [A-Za-z0-9_-]")
    return f'"Table_{table_id}"'


def real_or_none(cell) -> float | None:
    """A real cell as float; None for cells that are not numbers ("None", "-", "")."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    try:
        return float(str(cell).replace(",", ""))
    except ValueError:
        return None


def write_database(tables: dict[str, Table], path) -> pathlib.Path:
    """Writes a TableQA-layout sqlite file: `Table_<id>` with columns col_1 … col_n, typed
    TEXT / REAL; real cells that are not numbers become NULL. Replaces an existing file."""
    path = pathlib.Path(path)
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    try:
        for table in tables.values():
            columns = ", ".join(f"col_{j + 1} {'REAL' if kind == 'real' else 'TEXT'}"
                                for j, kind in enumerate(table.types))
            connection.execute(f"CREATE TABLE {table_name(table.id)} ({columns})")
            marks = ", ".join("?" * len(table.header))
            connection.executemany(
                f"INSERT INTO {table_name(table.id)} VALUES ({marks})",
                [[real_or_none(cell) if kind == "real" else str(cell)
                  for cell, kind in zip(row, table.types)] for row in table.rows])
        connection.commit()
    finally:
        connection.close()
    return path


def connect_read_only(path) -> sqlite3.Connection:
    """A read-only sqlite connection (the URI mode=ro; the file must exist)."""
    path = pathlib.Path(path).resolve()
    if not path.is_file():
        raise data.RecordError(path, None, None, "no such database file")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
