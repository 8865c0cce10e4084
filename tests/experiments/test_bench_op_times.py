"""`harness.hlo_op_kinds` and `op_time_by_kind`: where a compiled program's time goes."""

import jax
import jax.numpy as jnp
import pytest

from experiments.benchmarks import harness

HLO = """HloModule jit_f

%fused_dot (p0: f32[4,8], p1: f32[8,2]) -> f32[4,2] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_copy (p0.1: f32[4,8]) -> f32[8,4] {
  %p0.1 = f32[4,8]{1,0} parameter(0)
  %transpose.2 = f32[8,4]{0,1} transpose(%p0.1), dimensions={1,0}
  ROOT %copy.3 = f32[8,4]{1,0} copy(%transpose.2)
}

%fused_tanh (p0.2: f32[4,2]) -> f32[4,2] {
  %p0.2 = f32[4,2]{1,0} parameter(0)
  ROOT %tanh.4 = f32[4,2]{1,0} tanh(%p0.2)
}

ENTRY %main.9 (x: f32[4,8], w: f32[8,2]) -> (f32[4,2], f32[8,4]) {
  %x = f32[4,8]{1,0} parameter(0)
  %w = f32[8,2]{1,0} parameter(1)
  %ynn_fusion = f32[4,2]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_dot
  %copy_fusion = f32[8,4]{1,0} fusion(%x), kind=kLoop, calls=%fused_copy
  %tanh_fusion = f32[4,2]{1,0} fusion(%ynn_fusion), kind=kLoop, calls=%fused_tanh
  %ffi_call.5 = (f32[4,2]{1,0}, f32[4]{0}) custom-call(%tanh_fusion), custom_call_target="k"
  %get-tuple-element.6 = f32[4,2]{1,0} get-tuple-element(%ffi_call.5), index=0
  ROOT %tuple.7 = (f32[4,2]{1,0}, f32[8,4]{1,0}) tuple(%get-tuple-element.6, %copy_fusion)
}
"""


def test_hlo_op_kinds_reads_each_fusion_from_its_computation():
    kinds = harness.hlo_op_kinds(HLO)
    assert kinds["ynn_fusion"] == "matmuls and convolutions"
    assert kinds["copy_fusion"] == "data movement"
    assert kinds["tanh_fusion"] == "elementwise and reductions"
    assert kinds["ffi_call.5"] == "custom calls"       # a tuple-shaped result is skipped over
    assert kinds["get-tuple-element.6"] == "data movement"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads XLA:CPU's trace events")
def test_op_time_by_kind_puts_a_large_matmul_first():
    x = jnp.ones((512, 512))

    def matmul_then_tanh(x):
        return jnp.tanh(x @ x)

    seconds = harness.op_time_by_kind(matmul_then_tanh, x, calls=2)
    assert set(seconds) == set(harness.OP_KINDS)
    assert seconds["matmuls and convolutions"] > seconds["elementwise and reductions"] > 0
    summary = harness.op_time_summary(seconds)
    assert summary.startswith("matmuls and convolutions ")


def _op(name, start, duration):
    return {"ph": "X", "name": name, "ts": start, "dur": duration, "args": {"hlo_op": name}}


def _end(name, time):
    return {"ph": "X", "name": f"end: {name}", "ts": time, "dur": 0.5}


def test_trace_op_seconds_charges_gaps_to_the_asynchronous_ops_in_flight():
    """A hand-built trace (µs): sync ops are their events; an asynchronous dot's unseen work
    is the gap until the next op; two in flight split a gap; an idle gap is not charged."""
    matmul, custom, movement, elementwise = harness.OP_KINDS
    kinds = {"a": matmul, "d": matmul, "e": elementwise, "f": elementwise, "m": matmul,
             "c": movement, "g": elementwise}
    events = [
        _op("a", 0, 100), _end("a", 100),
        _op("d", 100, 2), _end("d", 500),       # launched, runs unseen until 500
        _op("e", 500, 100), _end("e", 600),
        # 600-700: idle, nothing in flight
        _op("f", 700, 10), _end("f", 710),
        _op("m", 710, 1), _end("m", 911),        # both in flight 712-811, m alone to 911
        _op("c", 711, 1), _end("c", 811),
        _op("g", 911, 9), _end("g", 920),
    ]
    seconds = harness.trace_op_seconds(events, kinds)
    want_us = {matmul: 100 + 2 + 398 + 1 + 99 / 2 + 100, custom: 0.0,
               movement: 1 + 99 / 2, elementwise: 100 + 10 + 9}
    assert seconds == pytest.approx({k: v / 1e6 for k, v in want_us.items()})


def test_torch_op_time_by_kind_counts_mm_as_a_matmul():
    torch = pytest.importorskip("torch")
    a = torch.ones(256, 256)
    seconds = harness.torch_op_time_by_kind(lambda: torch.tanh(a @ a), calls=2)
    assert seconds["matmuls and convolutions"] > 0
    assert seconds["elementwise and reductions"] > 0
