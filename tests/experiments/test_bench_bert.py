"""`launch.py bench bert --quick`: the rows, the baseline and the finding it derives."""

import pytest

from experiments.benchmarks import bert as bench
from experiments.benchmarks import harness


def test_fwd_bwd_flops_by_hand():
    # Per token and layer 2·(4·4² + 2·4·8) + 4·2·4 = 2·(64 + 64) + 32 = 288; ×3 × B·T·layers.
    assert bench.fwd_bwd_flops(batch=1, length=2, hidden=4, intermediate=8, layers=1) == (
        3.0 * 2 * 288)


def test_inputs_pad_the_last_quarter_of_every_other_row():
    ids, mask = bench.make_inputs(batch=4, length=8, vocab_size=50)
    assert ids.shape == mask.shape == (4, 8) and ids.min() >= 5 and ids.max() < 50
    assert mask[0].tolist() == [1] * 6 + [0] * 2 and mask[1].tolist() == [1] * 8


def test_quick_run_times_torch_as_the_baseline_then_jax():
    pytest.importorskip("transformers")
    report = harness.Report("bert", repeats=1)
    bench.run(report, quick=True)
    torch_row, jax_row = report.rows
    assert torch_row.baseline and torch_row.impl.startswith("torch BertModel")
    assert jax_row.impl == "jax BertEncoder float32" and not jax_row.baseline
    assert jax_row.extra["max_rss_bytes"] > 0
    (finding,) = report.findings
    assert finding.value == pytest.approx(torch_row.median_s / jax_row.median_s)


def test_quick_run_notes_where_each_framework_spends_its_time():
    pytest.importorskip("transformers")
    report = harness.Report("bert", repeats=1)
    bench.run(report, quick=True)
    torch_row, jax_row = report.rows
    for row in (torch_row, jax_row):
        seconds = row.extra["op_seconds"]
        assert set(seconds) == set(harness.OP_KINDS)
        assert seconds["matmuls and convolutions"] > 0 and sum(seconds.values()) > 0
    notes = [note for note in report.notes if "op time of one traced call" in note]
    assert len(notes) == 2 and "matmuls and convolutions" in notes[0]
