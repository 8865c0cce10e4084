"""An embedded generator of TableQA-format data: tables, questions with SQL, sqlite files.

Generated, not real (docs/nl2sql.md §4): a few table schemas with realistic Chinese headers
and values (text and real columns), questions built from templates over one or two selected
columns with an aggregation, and one to three conditions joined by and/or. Condition values
are written as real questions write them: a year 2016 as "2016年" or "16年", a large
number 30000 as "3万", 250000000 as "2.5亿", while the SQL keeps the table's form. Every
"==" value is a cell of its column, so each query returns rows.
"""

import json
import pathlib

import numpy as np

from experiments.nl2sql import tables as tables_lib

# Schemas: (title, [(header, type, value pool or (low, high, step) for real columns)]).
_CITIES = ["北京", "上海", "广州", "深圳", "长沙", "武汉", "成都", "杭州", "南京", "重庆",
           "西安", "苏州", "天津", "郑州"]
SCHEMAS = [
    ("城市房地产成交", [("城市", "text", _CITIES), ("年份", "text", [str(y) for y in
                                                                   range(2010, 2020)]),
                   ("成交面积", "real", (1, 90, 1)), ("成交均价", "real", (8000, 60000, 1000)),
                   ("成交金额", "real", (10000, 900000, 10000))]),
    ("电影票房排行", [("电影名称", "text", ["流浪地球", "战狼2", "哪吒之魔童降世", "红海行动",
                                      "唐人街探案2", "美人鱼", "我不是药神", "飞驰人生",
                                      "疯狂的外星人", "西虹市首富"]),
                ("导演", "text", ["郭帆", "吴京", "饺子", "林超贤", "陈思诚", "周星驰", "文牧野",
                                 "韩寒", "宁浩"]),
                ("上映年份", "text", [str(y) for y in range(2015, 2020)]),
                ("票房", "real", (10000, 500000, 10000)), ("评分", "real", (5, 10, 1))]),
    ("上市公司业绩", [("公司名称", "text", ["贵州茅台", "中国平安", "招商银行", "格力电器",
                                      "万科", "美的集团", "海康威视", "恒瑞医药", "伊利股份"]),
                ("所属行业", "text", ["白酒", "保险", "银行", "家电", "房地产", "安防", "医药",
                                   "食品"]),
                ("营业收入", "real", (100000000, 900000000, 50000000)),
                ("员工人数", "real", (1000, 90000, 1000)), ("净利润增速", "real", (-20, 60, 1))]),
    ("高校招生计划", [("学校名称", "text", ["清华大学", "北京大学", "复旦大学", "浙江大学",
                                      "武汉大学", "中山大学", "南京大学", "四川大学"]),
                ("所在省份", "text", ["北京", "上海", "浙江", "湖北", "广东", "江苏", "四川"]),
                ("招生人数", "real", (500, 9000, 100)), ("录取最低分", "real", (600, 700, 1))]),
]

_AGG_PHRASES = {0: ["{h}", "{h}是多少", "{h}分别是多少"], 1: ["平均{h}", "{h}的平均值"],
                2: ["最高的{h}", "最大{h}"], 3: ["最低的{h}", "最小{h}"],
                4: ["有多少个{h}", "{h}的数量"], 5: ["{h}总共", "{h}的总和"]}
_OP_PHRASES = {0: ["{h}大于{v}", "{h}超过{v}", "{h}高于{v}"],
               1: ["{h}小于{v}", "{h}低于{v}", "{h}不到{v}"],
               2: ["{h}是{v}", "{h}为{v}"], 3: ["{h}不是{v}"]}
_TEXT_EQUAL_PHRASES = ["{h}是{v}", "{v}"]
_CONNECTORS = {1: ["并且", "而且", "且"], 2: ["或者", "或"]}


def real_text(value: float) -> str:
    """A real cell as the SQL and the tables write it: 30000.0 -> "30000", 2.5 -> "2.5"."""
    return str(int(value)) if float(value).is_integer() else str(value)


def make_table(rng: np.random.Generator, index: int) -> tables_lib.Table:
    """A table of one of `SCHEMAS` with 6–12 rows."""
    title, columns = SCHEMAS[index % len(SCHEMAS)]
    n_rows = int(rng.integers(6, 13))
    cells = []
    for _, kind, pool in columns:
        if kind == "text":
            cells.append([str(v) for v in rng.choice(pool, n_rows)])
        else:
            low, high, step = pool
            cells.append([float(v) for v in rng.integers(low // step, high // step + 1,
                                                         n_rows) * step])
    rows = tuple(tuple(column[r] for column in cells) for r in range(n_rows))
    return tables_lib.Table(id=f"gen{index:05d}", header=tuple(c[0] for c in columns),
                            types=tuple(c[1] for c in columns), rows=rows, title=title)


def spoken_value(value: str, kind: str, header: str, rng: np.random.Generator) -> str:
    """How a question writes a condition value: years as "2016年"/"16年", large numbers
    with 万/亿 (sometimes), anything else as it is."""
    if "年" in header and value.isdigit() and len(value) == 4:
        return value + "年" if rng.random() < 0.6 else value[2:] + "年"
    number = float(value) if kind == "real" else None
    if number is not None and rng.random() < 0.5:
        if number >= 1e8 and number % 1e7 == 0:
            return f"{number / 1e8:g}亿"
        if number >= 1e4 and number % 1e3 == 0:
            return f"{number / 1e4:g}万"
    return value


def make_question(rng: np.random.Generator, table: tables_lib.Table
                  ) -> tuple[str, tables_lib.Query]:
    """A question on `table` and its query."""
    width = len(table.header)
    n_sel = 1 if rng.random() < 0.85 else 2
    sel = sorted(int(c) for c in rng.choice(width, n_sel, replace=False))
    agg = [0] * n_sel
    if n_sel == 1 and rng.random() < 0.3:
        agg = [int(rng.choice([1, 2, 3, 5])) if table.types[sel[0]] == "real" else 4]
    n_conds = int(rng.choice([1, 2, 3], p=[0.4, 0.5, 0.1]))
    columns = [int(c) for c in rng.choice([c for c in range(width) if c not in sel],
                                          min(n_conds, width - n_sel), replace=False)]
    row = table.rows[int(rng.integers(len(table.rows)))]
    conds, phrases = [], []
    for column in columns:
        kind = table.types[column]
        op = 2 if kind == "text" else int(rng.choice([0, 1, 2], p=[0.45, 0.35, 0.2]))
        value = real_text(row[column]) if kind == "real" else str(row[column])
        if op in (0, 1):  # a threshold from another row that this row passes
            others = [cell[column] for cell in table.rows
                      if (cell[column] < row[column] if op == 0 else cell[column] > row[column])]
            if others:
                value = real_text(others[int(rng.integers(len(others)))])
            else:
                op = 2
        conds.append((column, op, value))
        spoken = spoken_value(value, kind, table.header[column], rng)
        templates = _TEXT_EQUAL_PHRASES if kind == "text" else _OP_PHRASES[op]
        phrases.append(str(rng.choice(templates)).format(h=table.header[column],
                                                               v=spoken))
    conn = 0 if len(conds) == 1 else int(rng.choice([1, 2]))
    joined = phrases[0]
    for phrase in phrases[1:]:
        joined += str(rng.choice(_CONNECTORS[conn])) + phrase
    asked = "和".join(str(rng.choice(_AGG_PHRASES[a])).format(h=table.header[s])
                     for s, a in zip(sel, agg))
    pattern = str(rng.choice(["{c}的{a}", "请问{c}的{a}", "{a}，条件是{c}", "我想知道{c}的{a}"]))
    question = pattern.format(c=joined, a=asked)
    return question, tables_lib.Query(tuple(sel), tuple(agg), conn, tuple(conds))


def write_split(directory, name: str, num_tables: int, questions_per_table: int, seed: int
                ) -> pathlib.Path:
    """Writes NAME.json, NAME.tables.json and NAME.db under `directory`; returns NAME.json."""
    rng = np.random.default_rng(seed)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tables = {}
    lines = []
    for index in range(num_tables):
        table = make_table(rng, index + 100_000 * seed)
        tables[table.id] = table
        for _ in range(questions_per_table):
            question, query = make_question(rng, table)
            lines.append(json.dumps({"table_id": table.id, "question": question,
                                     "sql": query.to_json()}, ensure_ascii=False))
    questions_path = directory / f"{name}.json"
    tables_path, db_path = tables_lib.companion_paths(questions_path)
    questions_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tables_path.write_text("".join(json.dumps(
        {"id": t.id, "name": f"Table_{t.id}", "title": t.title, "header": list(t.header),
         "types": list(t.types), "rows": [list(r) for r in t.rows]}, ensure_ascii=False)
        + "\n" for t in tables.values()), encoding="utf-8")
    tables_lib.write_database(tables, db_path)
    return questions_path
