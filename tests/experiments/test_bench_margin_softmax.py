"""Tests for experiments/benchmarks/margin_softmax.py: quick rows, memory, and like for like.

The memory check holds the chunked loss to its promise (no (B, C) logit buffer in XLA's
compiled temp bytes) against the dense loss, which must have one.
"""

import jax
import numpy as np
import pytest

from experiments.benchmarks import harness, margin_softmax


@pytest.fixture(scope="module")
def margin_report():
    report = harness.Report("margin_softmax", repeats=2)
    margin_softmax.run(report, quick=True)
    return report


def test_margin_softmax_quick_rows(margin_report):
    (case,) = margin_softmax.QUICK_CASES
    rows = [r for r in margin_report.rows if r.group == case.group]
    assert [r.baseline for r in rows] == [True, False, False]
    assert all(r.median_s > 0 and r.compile_s > 0 for r in rows)
    assert all(r.temp_bytes is not None for r in rows)
    assert margin_report.speedup(rows[1]) > 0


def test_chunked_has_no_logit_buffer_and_dense_has_one(margin_report):
    (case,) = margin_softmax.QUICK_CASES
    dense, chunked, sampled = [r for r in margin_report.rows if r.group == case.group]
    logit_bytes = case.batch * case.num_classes * 4
    assert dense.temp_bytes >= logit_bytes
    assert chunked.temp_bytes < logit_bytes
    assert sampled.temp_bytes < logit_bytes
    time_ratio, buffer = margin_report.findings
    assert time_ratio.target == margin_softmax.TARGET_SLOWDOWN and not time_ratio.at_least
    assert time_ratio.value == pytest.approx(chunked.median_s / dense.median_s)
    assert buffer.value == pytest.approx(chunked.temp_bytes / logit_bytes)
    assert buffer.verdict() == "met"
    assert f"- {buffer.markdown()}" in margin_report.markdown()


def test_margin_softmax_paths_agree_on_the_loss():
    # Dense and chunked are the same function; the sampled loss over every class is too.
    case = margin_softmax.Case(num_classes=300, batch=16, chunk_size=64)
    z, w, labels = margin_softmax.make_inputs(case, jax.random.PRNGKey(3))
    dense = jax.jit(margin_softmax.dense_loss)(z, w, labels)
    chunked = jax.jit(margin_softmax.chunked_loss, static_argnames="chunk_size")(
        z, w, labels, chunk_size=case.chunk_size)
    sampled_all = jax.jit(margin_softmax.sampled_loss, static_argnames="num_sampled")(
        z, w, labels, jax.random.PRNGKey(0), num_sampled=case.num_classes)
    np.testing.assert_allclose(chunked, dense, rtol=1e-5)
    np.testing.assert_allclose(sampled_all, dense, rtol=1e-5)


@pytest.mark.parametrize("value, target, at_least, strict, verdict", [
    (1.3, 1.25, False, False, "NOT met"), (1.25, 1.25, False, False, "met"),
    (1.0, 1.0, True, True, "NOT met"), (1.01, 1.0, True, True, "met"),
    (None, 1.0, True, False, "not measured")])
def test_finding_verdicts_come_from_the_numbers(value, target, at_least, strict, verdict):
    finding = harness.Finding("x", value, target=target, at_least=at_least, strict=strict)
    assert finding.verdict() == verdict
    assert harness.Finding("y", 0.79, speed=True).markdown() == "y: 0.79×: slower"
