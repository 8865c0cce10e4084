"""`launch.py bench matmul`: the three products of a dense layer's step, JAX vs PyTorch."""

import json

import pytest

from experiments import benchmarks


def test_quick_run_times_each_product_in_both_frameworks(tmp_path):
    pytest.importorskip("torch")
    assert benchmarks.main(["matmul", "--quick", "--repeats", "2", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "matmul.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "group" in row]
    groups = {row["group"] for row in rows}
    assert len(groups) == 3 and any("weight gradient" in g for g in groups)
    for group in groups:
        impls = sorted(row["impl"] for row in rows if row["group"] == group)
        assert impls[0] == "jax" and impls[1].startswith("torch"), impls
    assert all(row["median_s"] > 0 for row in rows)
    markdown = (tmp_path / "matmul.md").read_text()
    assert markdown.count("time of PyTorch / JAX") == 3
