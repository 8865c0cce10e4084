"""Label statistics of a TableQA questions file.

    python -m experiments.nl2sql.stats FILE.json

Prints the distribution of the number of conditions and selected columns, of aggs, ops and
connectors, and how condition values are located in their questions (literally, through
the nearest jieba n-gram, or dropped); docs/nl2sql.md §1.1 lists the figures for val.json.
"""

import collections
import json
import sys

from experiments.errors import UserError
from experiments.nl2sql import labels, tables


def label_statistics(examples) -> dict[str, dict]:
    """Counts over examples with SQL: {"conds": {n: count}, "sel": …, "agg": {name: …},
    "ops": {symbol: …}, "conn": {name: …}, "values": {literal/ngram/dropped: …}}."""
    counts = {key: collections.Counter()
              for key in ("conds", "sel", "agg", "ops", "conn", "values")}
    for example in examples:
        query = example.query
        counts["conds"][len(query.conds)] += 1
        counts["sel"][len(query.sel)] += 1
        counts["agg"].update(tables.AGGS[a] or "none" for a in query.agg)
        counts["ops"].update(tables.OPS[op] for _, op, _ in query.conds)
        counts["conn"][tables.CONNS[query.conn] or "0"] += 1
        counts["values"].update(labels.locate_value(value, example.question)[1]
                                for _, _, value in query.conds)
    return {key: dict(sorted(counter.items(), key=lambda item: (-item[1], str(item[0]))))
            for key, counter in counts.items()}


def format_statistics(statistics: dict[str, dict], total: int) -> str:
    """The statistics as a markdown table."""
    lines = [f"{total} questions", "", "| quantity | distribution |", "|---|---|"]
    for key, counter in statistics.items():
        lines.append(f"| {key} | " + " · ".join(f"{name}: {count:,}"
                                                  for name, count in counter.items()) + " |")
    return "\n".join(lines)


def main(argv) -> int:
    if len(argv) != 1:
        print("usage: python -m experiments.nl2sql.stats FILE.json", file=sys.stderr)
        return 2
    try:
        examples, _ = tables.read_questions(argv[0])
    except UserError as error:
        print(f"stats: {error}", file=sys.stderr)
        return 2
    statistics = label_statistics(examples)
    print(format_statistics(statistics, len(examples)))
    print(json.dumps(statistics, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
