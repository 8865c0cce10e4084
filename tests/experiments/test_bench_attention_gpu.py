"""Tests for the GPU attention benchmark (experiments/benchmarks/attention_gpu.py).

On a CPU the quick run measures ours (Pallas in interpret mode, XLA, auto) and XLA dense at
n = 64, and leaves cuDNN and torch out with notes. The torch side is tested apart: its rows
come back as JSON lines, merged from a canned file and from an eager run on the CPU, and the
findings are checked against hand-made rows whose ratios are known.
"""

import dataclasses
import json
import subprocess
import types

import jax
import numpy as np
import pytest

from experiments.benchmarks import attention_gpu as bench
from experiments.benchmarks import harness
from kernels import attention

QUICK_GROUPS = [bench.group_name(64, "bfloat16", mode) for mode in bench.MODES]


@pytest.fixture(scope="module")
def quick_report():
    # One family keeps the compiles to eight (Pallas interprets slowly on a CPU); the slow
    # test below runs all four.
    report = harness.Report(bench.NAME, repeats=1)
    bench.run(report, quick=True, families=("Local",))
    return report


def _rows_by_key(report):
    return {bench.row_key(row): row for row in report.rows}


def test_quick_run_measures_ours_and_xla_dense_in_each_group(quick_report):
    rows = _rows_by_key(quick_report)
    assert {row.group for row in quick_report.rows} == set(QUICK_GROUPS)
    for mode in bench.MODES:
        keys = sorted(key[3:] for key in rows if key[2] == mode)
        assert keys == [("Full", bench.XLA_DENSE, ""), ("Local", bench.OURS, "auto"),
                        ("Local", bench.OURS, "pallas"), ("Local", bench.OURS, "xla")]
        (baseline,) = [row for row in quick_report.rows if row.baseline and row.group.endswith(
            f" {mode}")]
        assert bench.row_key(baseline)[4] == bench.XLA_DENSE  # no cuDNN on a CPU
    for row in quick_report.rows:
        assert row.median_s > 0 and row.compile_s > 0 and row.repeats == 1
        assert row.temp_bytes is not None and row.peak_device_bytes is None  # CPU: no stats
    auto = rows[64, "bfloat16", bench.FWD, "Local", bench.OURS, "auto"]
    assert auto.impl == "Local(64) ours (auto = xla)"  # bfloat16 on a CPU: XLA
    assert auto.extra["resolved"] == "xla"


def test_quick_rows_count_the_allowed_pairs_of_the_dense_mask(quick_report):
    for row in quick_report.rows:
        length, family, mode = row.extra["length"], row.extra["family"], row.extra["mode"]
        pattern = bench.patterns(length)[family]
        pairs = int(np.sum(np.asarray(attention.dense_mask(pattern, length))))
        per_pair = 4 * bench.QUICK_HEAD_DIM * bench.QUICK_HEADS * (1 if mode == "fwd" else 3)
        assert row.flops == pairs * per_pair, row.impl


def test_quick_forward_rows_compute_what_ours_in_xla_computes(quick_report):
    rows = _rows_by_key(quick_report)
    pallas = rows[64, "bfloat16", bench.FWD, "Local", bench.OURS, "pallas"]
    assert pallas.extra["rel_error"] < bench.TARGET_REL_ERROR["bfloat16"]
    (finding,) = [f for f in quick_report.findings if f.what.startswith("bfloat16 fwd: largest")]
    assert finding.verdict() == "met" and finding.value == 100 * max(
        row.extra["rel_error"] for row in quick_report.rows
        if row.extra.get("rel_error") is not None and row.impl != "Local(64) ours (xla)")


def test_quick_run_notes_what_a_cpu_leaves_out_and_states_every_target(quick_report):
    notes = "\n".join(quick_report.notes)
    assert "cuDNN rows not measured" in notes and "torch rows (SDPA, FlexAttention) not" in notes
    targets = {f.what: (f.target, f.verdict()) for f in quick_report.findings}
    where = "at n=64 bfloat16"
    for what, target in [
            (f"Full fwd+bwd {where}, time of ours (Pallas) / cuDNN full",
             bench.TARGET_FULL_SLOWDOWN),
            (f"Atrous(8) fwd+bwd {where}, time of cuDNN full / ours (Pallas)",
             bench.TARGET_ATROUS_SPEEDUP),
            (f"Sparse(8) fwd+bwd {where}, time of cuDNN full / ours (Pallas)",
             bench.TARGET_SPARSE_SPEEDUP),
            (f"Local(64) fwd+bwd {where}, time of FlexAttention / ours (Pallas)",
             bench.TARGET_LOCAL_OVER_FLEX),
            (f"Sparse(8) fwd+bwd {where}, time of FlexAttention / ours (Pallas)", 1.0)]:
        assert targets[what] == (target, "not measured"), what
    every = [f for f in quick_report.findings if f.what.startswith("every efficient pattern")]
    assert every[0].target == 1.0 and every[0].strict and every[0].value is None
    local = [f for f in quick_report.findings if f.what.startswith("Local(64) fwd+bwd")
             and "ours in XLA / ours in Pallas" in f.what][0]
    rows = _rows_by_key(quick_report)
    assert local.value == pytest.approx(
        rows[64, "bfloat16", bench.FWD_BWD, "Local", bench.OURS, "xla"].median_s
        / rows[64, "bfloat16", bench.FWD_BWD, "Local", bench.OURS, "pallas"].median_s)
    assert f"- {local.markdown()}" in quick_report.markdown()


@pytest.mark.slow
def test_quick_run_of_every_family():
    report = harness.Report(bench.NAME, repeats=1)
    bench.run(report, quick=True)
    keys = {bench.row_key(row) for row in report.rows}
    for mode in bench.MODES:
        for family in bench.FAMILIES:
            for implementation in bench.IMPLEMENTATIONS:
                assert (64, "bfloat16", mode, family, bench.OURS, implementation) in keys
    (finding,) = [f for f in report.findings if f.what.startswith("bfloat16 fwd: largest")]
    assert finding.verdict() == "met", finding.detail


# ------------------------------------------------------------------------------------------
# The plan: what a GPU run measures, in which order.


def test_gpu_plan_runs_the_targets_group_first_and_cudnn_in_bfloat16_only():
    scope = bench.make_scope(False)
    jax_cases, torch_cases, notes = bench.plan(scope, "gpu")
    assert jax_cases[0].group == "n=32768 bf16 fwd+bwd"
    assert torch_cases[0] == bench.Case(32768, "bfloat16", bench.FWD_BWD, "Local", bench.FLEX)
    cudnn = [c for c in jax_cases if c.path in (bench.CUDNN, bench.CUDNN_RESIDUE)]
    assert {c.dtype for c in cudnn} == {"bfloat16"}
    assert len(cudnn) == 2 * len(scope.lengths) * len(bench.MODES)
    assert any("float32" in note for note in notes)
    groups = {c.group for c in jax_cases}
    assert len(groups) == len(scope.lengths) * len(scope.dtypes) * len(bench.MODES)
    for group in groups:  # XLA dense, the largest, is the last of its group
        in_group = [c for c in jax_cases if c.group == group]
        assert in_group[-1].path == bench.XLA_DENSE
        assert [c.implementation for c in in_group[:3]] == list(bench.IMPLEMENTATIONS)
    assert {(c.family, c.path) for c in torch_cases} == {
        ("Local", "flex"), ("Sparse", "flex"), ("Atrous", "flex"), ("Full", "torch_sdpa")}


def test_cpu_plan_has_no_cudnn_nor_torch_rows():
    jax_cases, torch_cases, notes = bench.plan(bench.make_scope(True), "cpu")
    assert not torch_cases and len(notes) == 2
    assert {c.path for c in jax_cases} == {bench.OURS, bench.XLA_DENSE}


def test_a_run_without_a_gpu_takes_the_quick_sizes(monkeypatch):
    if jax.default_backend() == "gpu":
        pytest.skip("on a GPU the full sizes run")
    scopes = []

    def record_plan(scope, backend):
        scopes.append(scope)
        return [], [], []

    monkeypatch.setattr(bench, "plan", record_plan)
    report = harness.Report(bench.NAME, repeats=1)
    bench.run(report, quick=False)
    assert scopes == [bench.make_scope(True)]
    assert f"JAX's backend is {jax.default_backend()}, not a GPU: quick sizes" in report.notes


def test_dense_logits_of_the_full_run_are_128_gib_at_65536():
    assert bench.dense_logit_bytes(65536, bench.make_scope(False)) == 8 * 65536 ** 2 * 4


@pytest.mark.parametrize("room, reason", [
    (1 << 10, "its (B, H, n, n) float32 logits alone need"),
    (bench.dense_logit_bytes(64, bench.make_scope(True)) + 1, "its compiled memory analysis")])
def test_a_row_that_would_not_fit_is_skipped_with_a_note(monkeypatch, room, reason):
    monkeypatch.setattr(bench, "memory_budget_bytes", lambda: room)
    report = harness.Report(bench.NAME, repeats=1)
    state = bench._JaxRun(report, bench.make_scope(True), deadline=None)
    case = bench.Case(64, "bfloat16", bench.FWD, "Full", bench.XLA_DENSE)
    assert state.measure(case) is None and not report.rows
    assert len(report.notes) == 1 and reason in report.notes[0]


def test_rows_past_the_time_budget_are_noted_not_measured():
    report = harness.Report(bench.NAME, repeats=1)
    state = bench._JaxRun(report, bench.make_scope(True), deadline=0.0)
    case = bench.Case(64, "bfloat16", bench.FWD, "Local", bench.OURS, "pallas")
    assert state.measure(case) is None
    state.note_skipped()
    assert report.notes == ["not measured (the run's time budget was spent), 1: "
                            "n=64 bf16 fwd Local(64) ours (pallas)"]


@pytest.mark.parametrize("arguments", [dict(lengths=(100,)), dict(lengths=(64, 32)),
                                       dict(dtypes=("float64",)), dict(families=("Fixed",))],
                         ids=str)
def test_scope_refuses_what_it_cannot_measure(arguments):
    with pytest.raises(ValueError):
        bench.make_scope(False, **arguments)


def test_sparse_rate_at_the_target_length_is_181():
    assert bench.label("Sparse", 32768) == "Sparse(181)"


# ------------------------------------------------------------------------------------------
# The functions timed.


def test_dense_attention_on_the_residue_layout_is_atrous_attention():
    q, k, v = (jax.random.normal(key, (2, 48, 2, 8)) for key in
               jax.random.split(jax.random.PRNGKey(0), 3))
    got = bench.residue_dense(q, k, v, rate=8, implementation="xla")
    want = attention.reference_attention(q, k, v, attention.Atrous(8))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_loss_gradients_are_those_of_the_sum_of_squares():
    q, k, v = (jax.random.normal(key, (1, 16, 2, 8)) for key in
               jax.random.split(jax.random.PRNGKey(1), 3))
    def forward(q, k, v):
        return q * k + v  # d Σ (qk + v)² / dq = 2 (qk + v) k
    dq, dk, dv = bench.loss_gradients(forward)(q, k, v)
    np.testing.assert_allclose(dq, 2 * (q * k + v) * k, rtol=1e-6)
    np.testing.assert_allclose(dv, 2 * (q * k + v), rtol=1e-6)


def test_time_back_to_back_sizes_samples_from_the_estimate(monkeypatch):
    clock = {"now": 0.0}

    def call():
        clock["now"] += 0.01  # every call takes 10 ms
        return clock["now"]

    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    timing = bench.time_back_to_back(call, lambda _: None, max_repeats=3, sample_s=0.05,
                                     row_s=10.0)
    assert timing.calls_per_sample == 5 and timing.repeats == 3
    assert timing.median_s == pytest.approx(0.01) and timing.first_s == pytest.approx(0.01)
    assert clock["now"] == pytest.approx(0.01 * (2 + 3 * 5))
    slow = bench.time_back_to_back(call, lambda _: None, max_repeats=3, sample_s=0.05,
                                   row_s=0.0)
    assert slow.repeats == 1  # at least one sample


# ------------------------------------------------------------------------------------------
# The torch side's JSON lines and the findings drawn from them.

TARGET_SCOPE = bench.make_scope(False, lengths=(8192, 32768), dtypes=("bfloat16",))


def _row(case, seconds, scope=TARGET_SCOPE):
    return harness.Row(group=case.group, impl=bench.impl_label(case), median_s=seconds,
                       compile_s=1.0, repeats=1, flops=bench.useful_flops(case, scope),
                       extra=bench.case_extra(case, scope))


def _case(family, path, implementation="", length=32768, mode=bench.FWD_BWD):
    return bench.Case(length, "bfloat16", mode, family, path, implementation)


def _canned_torch_lines(tmp_path):
    """A torch side's file: two FlexAttention rows, a note, and three lines not to merge."""
    lines = [bench.row_line(_row(_case("Local", bench.FLEX), 1.6e-3)),
             bench.note_line("n=32768 bf16 fwd+bwd full torch SDPA failed: OutOfMemoryError"),
             bench.row_line(_row(_case("Sparse", bench.FLEX), 1.4e-3)),
             "{not json",
             json.dumps({"row": {"group": "g", "impl": "i", "median_s": 1.0, "colour": 1}}),
             bench.row_line(_row(_case("Local", bench.OURS, "xla"), 1e-3))]  # not torch's
    path = tmp_path / "torch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_torch_lines_are_merged_and_unreadable_ones_noted(tmp_path):
    report = harness.Report(bench.NAME, repeats=1)
    merged = bench.merge_torch_results(report, _canned_torch_lines(tmp_path))
    assert [row.impl for row in merged] == ["Local(64) FlexAttention", "Sparse(181) FlexAttention"]
    assert report.rows == merged and merged[0].median_s == 1.6e-3
    assert bench.row_key(merged[1]) == (32768, "bfloat16", bench.FWD_BWD, "Sparse", "flex", "")
    assert report.notes[0].endswith("failed: OutOfMemoryError")
    assert report.notes[1].startswith("torch.jsonl:4: line not merged")
    assert "unknown fields ['colour']" in report.notes[2]
    assert "torch.jsonl:6: line not merged: not a torch row" in report.notes[3]
    report.write(tmp_path / "out")  # the merged rows go out with the rest
    written = (tmp_path / "out" / f"{bench.NAME}.jsonl").read_text().splitlines()
    assert json.loads(written[0])["impl"] == "Local(64) FlexAttention"


def test_a_missing_torch_file_is_noted(tmp_path):
    report = harness.Report(bench.NAME, repeats=1)
    assert bench.merge_torch_results(report, tmp_path / "none.jsonl") == []
    assert report.notes == ["torch rows: none.jsonl was not written"]


def test_findings_hold_each_target_to_the_rows(tmp_path):
    report = harness.Report(bench.NAME, repeats=1)
    bench.merge_torch_results(report, _canned_torch_lines(tmp_path))  # Flex: 1.6, 1.4 ms
    seconds = {"Full": 11e-3, "Atrous": 2e-3, "Local": 1e-3, "Sparse": 1.5e-3}
    for length in TARGET_SCOPE.lengths:
        for mode in bench.MODES:
            scale = (length / 32768) * (0.5 if mode == bench.FWD else 1.0)
            report.rows.append(_row(_case("Full", bench.CUDNN, length=length, mode=mode),
                                    10e-3 * scale))
            for family, time in seconds.items():
                report.rows.append(_row(_case(family, bench.OURS, "pallas", length, mode),
                                        time * scale))
    report.rows.append(_row(_case("Local", bench.OURS, "xla"), 3e-3))
    bench.record_findings(report, TARGET_SCOPE)
    found = {f.what: f for f in report.findings}
    where = "at n=32768 bfloat16"

    def check(what, value, verdict):
        assert found[what].value == pytest.approx(value), what
        assert found[what].verdict() == verdict, what

    check(f"Full fwd+bwd {where}, time of ours (Pallas) / cuDNN full", 1.1, "met")
    check(f"Atrous(8) fwd+bwd {where}, time of cuDNN full / ours (Pallas)", 5.0, "NOT met")
    check(f"Sparse(181) fwd+bwd {where}, time of cuDNN full / ours (Pallas)", 10 / 1.5, "met")
    check(f"Local(64) fwd+bwd {where}, time of FlexAttention / ours (Pallas)", 1.6, "met")
    check(f"Sparse(181) fwd+bwd {where}, time of FlexAttention / ours (Pallas)", 1.4 / 1.5,
          "NOT met")
    check(f"Local(64) fwd+bwd {where}, time of ours in XLA / ours in Pallas", 3.0, "faster")
    assert found[f"Full fwd+bwd {where}, time of ours (Pallas) / cuDNN full"].detail == \
        "fwd 1.10×"
    every = found["every efficient pattern, bfloat16 fwd and fwd+bwd, n ≥ 8192: the least "
                  "time of cuDNN full / ours (Pallas)"]
    assert every.value == pytest.approx(10 / 2) and every.verdict() == "met"
    assert "Atrous(8) n=8192 fwd 5.0×" in every.detail and "not measured" not in every.detail
    bench.mark_baselines(report)
    assert [bench.row_key(r)[3:] for r in report.rows if r.baseline] == \
        [("Full", bench.CUDNN, "")] * 4


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_torch_side_measures_its_plan_on_a_cpu_eagerly():
    pytest.importorskip("torch.nn.attention.flex_attention")
    from experiments.benchmarks import torch_attention_gpu
    scope = bench.make_scope(True, dtypes=("float32",))
    cases = [bench.Case(64, "float32", bench.FWD, "Local", bench.FLEX),
             bench.Case(64, "float32", bench.FWD, "Full", bench.TORCH_SDPA),
             bench.Case(64, "float32", bench.FWD_BWD, "Full", bench.TORCH_SDPA),
             bench.Case(64, "float32", bench.FWD, "Fixed", bench.FLEX)]  # no such family here
    plan = bench.torch_plan(cases[:3], scope, max_repeats=1, budget_s=None, quick=True)
    plan["cases"].append(dict(plan["cases"][0], case=dataclasses.asdict(cases[3]),
                              pattern=["Nonsense", []]))
    plan.update(device="cpu", compile=False)
    lines = []
    torch_attention_gpu.run(plan, lines.append)
    rows, notes = bench.read_torch_lines(lines)
    assert [bench.row_key(row)[2:5] for row in rows] == [
        (bench.FWD, "Local", bench.FLEX), (bench.FWD, "Full", bench.TORCH_SDPA),
        (bench.FWD_BWD, "Full", bench.TORCH_SDPA)]
    assert all(row.median_s > 0 and row.repeats == 1 for row in rows)
    assert rows[0].flops == bench.useful_flops(cases[0], scope)
    assert "block_sparsity" in rows[0].extra and rows[2].extra["mode"] == bench.FWD_BWD
    assert len(notes) == 1 and "unknown pattern 'Nonsense'" in notes[0]


def test_torch_subprocess_runs_and_its_notes_are_merged():
    # On a machine without CUDA the subprocess says so in a note: the command, the module
    # path and the file hand-over are what this checks.
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU would run the rows for real")
    report = harness.Report(bench.NAME, repeats=1)
    case = bench.Case(64, "bfloat16", bench.FWD, "Local", bench.FLEX)
    bench.run_torch(report, [case], bench.make_scope(True), budget_s=60)
    assert report.rows == [] and report.notes == [
        f"torch rows not measured: torch {torch.__version__} sees no CUDA device"]


def test_main_refuses_bad_lengths_before_measuring(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--lengths", "100", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "multiples of 8" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("script", ["scripts/gpu_check.sh", "scripts/fetch_device_wheels.sh"])
def test_device_scripts_parse(script):
    root = bench.REPO_ROOT
    subprocess.run(["bash", "-n", str(root / script)], check=True)
