"""Tests for kernels/cpu: the build cache and the band-attention FFI kernel against a dense band.

The kernel is compiled here like anywhere else (on first use, into the cache). A machine
with no C++ compiler skips these tests with that reason; a compiler that rejects the source
fails them, with its output.
"""

import ctypes
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernels import cpu
from kernels.cpu import band_attention as cpu_band
from tests.kernels import cpu_kernels

EMPTY_LSE = -1e30


@pytest.fixture(autouse=True)
def kernel():
    cpu_kernels.require("band_attention", cpu_band.available)


def dense_band_reference(q, k, v, valid, lo, hi):
    """Every (i, j) logit under the mask lo ≤ j − i ≤ hi & valid[j]; out and log-sum-exp.

    Arrays [L, G, F] (valid [L, G]) as the kernel takes them; computed group-major.
    """
    q, k, v = (jnp.swapaxes(x, 0, 1) for x in (q, k, v))
    valid = jnp.swapaxes(valid, 0, 1)
    length = q.shape[-2]
    offset = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]  # [i, j] → j − i
    allowed = (offset >= lo) & (offset <= hi) & valid[..., None, :]
    logits = jnp.einsum("...id,...jd->...ij", q, k)
    shift = jax.lax.stop_gradient(jnp.max(jnp.where(allowed, logits, -jnp.inf), -1,
                                          keepdims=True))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    weights = jnp.where(allowed, jnp.exp(logits - shift), 0.0)
    total = weights.sum(-1)
    safe_total = jnp.where(total > 0, total, 1.0)
    out = jnp.einsum("...ij,...je->...ie", weights, v) / safe_total[..., None]
    lse = jnp.where(total > 0, shift[..., 0] + jnp.log(safe_total), EMPTY_LSE)
    return jnp.swapaxes(out, 0, 1), jnp.swapaxes(lse, 0, 1)


def _inputs(seed, groups, length, head_dim, value_dim, p_valid):
    """[L, G, F] arrays (valid, the lse cotangent [L, G])."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(length, groups, head_dim)) / np.sqrt(head_dim)
    k = rng.normal(size=(length, groups, head_dim))
    v = rng.normal(size=(length, groups, value_dim))
    valid = rng.random((length, groups)) < p_valid
    cot_out = rng.normal(size=v.shape)
    cot_lse = rng.normal(size=(length, groups))
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return f32(q), f32(k), f32(v), jnp.asarray(valid), f32(cot_out), f32(cot_lse)


@functools.partial(jax.jit, static_argnames=("fn", "lo", "hi"))
def _values_and_grads(q, k, v, valid, cot_out, cot_lse, fn, lo, hi):
    (out, lse), vjp = jax.vjp(lambda q, k, v: fn(q, k, v, valid, lo=lo, hi=hi), q, k, v)
    # The cotangent of lse only where it is finite: the reference's −1e30 is a constant.
    return (out, lse) + vjp((cot_out, jnp.where(lse > EMPTY_LSE, cot_lse, 0.0)))


def _check(q, k, v, valid, cot_out, cot_lse, lo, hi):
    """The kernel in float32 against the dense reference in float64 (long bands sum
    a thousand terms, where the float32 reference alone is off by 1e-5)."""
    args = (q, k, v, valid, cot_out, cot_lse)
    got = _values_and_grads(*args, fn=cpu_band.band_attention, lo=lo, hi=hi)
    with jax.enable_x64(True):
        args64 = [jnp.asarray(np.asarray(x, np.float64 if x.dtype == jnp.float32 else x.dtype))
                  for x in args]
        want = [np.asarray(x) for x in _values_and_grads(*args64, fn=dense_band_reference,
                                                         lo=lo, hi=hi)]
    for name, g, w in zip(("out", "lse", "dq", "dk", "dv"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)


@settings(max_examples=10, deadline=None)
@given(groups=st.sampled_from([1, 3, 4]),
       length=st.sampled_from([1, 5, 15, 16, 17, 33, 70]),
       head_dim=st.sampled_from([8, 16, 24]), value_dim=st.sampled_from([8, 32]),
       lo=st.integers(-40, 0), hi=st.integers(0, 40), p_valid=st.sampled_from([1.0, 0.6, 0.0]),
       seed=st.integers(0, 2**16))
@example(groups=2, length=70, head_dim=64, value_dim=64, lo=-64, hi=64, p_valid=1.0, seed=0)
@example(groups=1, length=33, head_dim=8, value_dim=8, lo=0, hi=0, p_valid=0.5, seed=1)
@example(groups=3, length=600, head_dim=16, value_dim=8, lo=-20, hi=5, p_valid=0.9, seed=2)
@example(groups=1, length=1300, head_dim=8, value_dim=16, lo=-600, hi=530, p_valid=0.9, seed=3)
def test_band_attention_matches_dense_band(groups, length, head_dim, value_dim, lo, hi,
                                           p_valid, seed):
    """Values, log-sum-exps and gradients (through both outputs), any tile cut of the band.

    Length 600 spans two chunks of 512 queries (band_attention.cc: kChunkTiles); with a band
    of ±600 over 1300, keys are reached by the queries of three chunks.
    """
    inputs = _inputs(seed, groups, length, head_dim, value_dim, p_valid)
    _check(*inputs, lo=lo, hi=hi)


def test_band_attention_hand_computed_case():
    """Three keys, band [−1, 1], key 2 masked: query 0 sees keys 0, 1; query 2 sees key 1."""
    q = jnp.asarray([[[1.0] * 8], [[0.0] * 8], [[2.0] * 8]])  # [L=3, G=1, D=8]
    k = jnp.asarray([[[0.1] * 8], [[0.2] * 8], [[0.3] * 8]])
    v = jnp.asarray([[[1.0] * 8], [[3.0] * 8], [[5.0] * 8]])
    valid = jnp.asarray([[True], [True], [False]])
    out, lse = cpu_band.band_attention(q, k, v, valid, lo=-1, hi=1)
    s00, s01 = 0.8, 1.6  # q0 · k0, q0 · k1
    w0 = np.exp([s00, s01]) / np.exp([s00, s01]).sum()
    np.testing.assert_allclose(out[0, 0], [w0 @ [1.0, 3.0]] * 8, rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], [2.0] * 8, rtol=1e-6)  # logits 0, 0: mean of 1, 3
    np.testing.assert_allclose(out[2, 0], [3.0] * 8, rtol=1e-6)
    np.testing.assert_allclose(lse[:, 0], [np.log(np.exp([s00, s01]).sum()), np.log(2.0), 3.2],
                               rtol=1e-6)


def test_queries_without_keys_give_zeros_and_zero_grads():
    q, k, v, _, cot_out, cot_lse = _inputs(0, 2, 40, 8, 8, 1.0)
    valid = jnp.zeros((40, 2), bool).at[39, 1].set(True)  # group 1: only queries ≥ 39 − hi
    out, lse, dq, dk, dv = _values_and_grads(q, k, v, valid, cot_out, cot_lse,
                                             fn=cpu_band.band_attention, lo=-3, hi=3)
    out, lse, dq, dk, dv = (np.swapaxes(np.asarray(x), 0, 1) for x in (out, lse, dq, dk, dv))
    has_key = np.zeros((2, 40), bool)
    has_key[1, 36:] = True
    np.testing.assert_array_equal(out[~has_key], 0.0)
    np.testing.assert_array_equal(lse[~has_key], np.float32(EMPTY_LSE))
    np.testing.assert_array_equal(dq[~has_key], 0.0)
    np.testing.assert_array_equal(dk[0], 0.0)
    np.testing.assert_array_equal(dv[1, :39], 0.0)
    assert np.isfinite(dk).all() and np.isfinite(dv).all()


def test_vmap_over_a_leading_axis_matches_one_call_per_slice():
    """vmap hands the kernel [V, L, G, F]: every leading axis is more groups."""
    q, k, v, valid, cot_out, cot_lse = _inputs(5, 6, 21, 8, 16, 0.8)
    stacked = [x.reshape(21, 3, 2, -1).transpose(1, 0, 2, 3) for x in (q, k, v)]
    valid3 = valid.reshape(21, 3, 2).transpose(1, 0, 2)
    band = functools.partial(cpu_band.band_attention, lo=-4, hi=2)
    mapped_out, mapped_lse = jax.jit(jax.vmap(band))(*stacked, valid3)
    for i in range(3):
        out, lse = band(*(x[i] for x in stacked), valid3[i])
        np.testing.assert_allclose(mapped_out[i], out, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(mapped_lse[i], lse, rtol=1e-6, atol=1e-6)
    grads = jax.grad(lambda q: jnp.sum(jax.vmap(band)(q, *stacked[1:], valid3)[0]))(stacked[0])
    want = jax.grad(lambda q: jnp.sum(dense_band_reference(
        q, *(x.transpose(1, 0, 2, 3).reshape(21, 6, -1) for x in stacked[1:]),
        valid, lo=-4, hi=2)[0]))(q)
    np.testing.assert_allclose(grads.transpose(1, 0, 2, 3).reshape(21, 6, -1), want,
                               rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_refused_before_tracing():
    x = jnp.zeros((10, 2, 8))
    valid = jnp.ones((10, 2), bool)
    cases = [
        (dict(q=x.astype(jnp.bfloat16)), "needs float32, got bfloat16"),
        (dict(q=x[..., :5], k=x[..., :5]), "multiples of 8, got 5 and 8"),
        (dict(lo=1), "need lo <= 0 <= hi, got lo=1"),
        (dict(hi=-1), "need lo <= 0 <= hi"),
        (dict(k=x[:9]), r"shapes q \(10, 2, 8\), k \(9, 2, 8\)"),
        (dict(valid=valid[:9]), r"valid \(9, 2\) do not match"),
        (dict(q=x[0], k=x[0], v=x[0], valid=valid[0]), r"shapes q \(2, 8\)"),
    ]
    for overrides, match in cases:
        args = dict(q=x, k=x, v=x, valid=valid, lo=-2, hi=2) | overrides
        with pytest.raises(ValueError, match=match):
            cpu_band.band_attention(args.pop("q"), args.pop("k"), args.pop("v"),
                                    args.pop("valid"), **args)


# ------------------------------------------------------------------------------------------
# The build cache.


def test_build_caches_by_source_and_loads(tmp_path, monkeypatch):
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    monkeypatch.setattr(cpu, "_SOURCE_DIR", source_dir)
    monkeypatch.setenv("KEXUE_JAX_CACHE", str(tmp_path / "cache"))
    (source_dir / "answer.cc").write_text('extern "C" int answer() { return 42; }\n')
    first = cpu.build("answer")
    assert first.parent == tmp_path / "cache" and first.name.startswith("answer-")
    assert ctypes.CDLL(str(first)).answer() == 42
    mtime = first.stat().st_mtime_ns
    assert cpu.build("answer") == first and first.stat().st_mtime_ns == mtime  # no rebuild
    (source_dir / "answer.cc").write_text('extern "C" int answer() { return 43; }\n')
    second = cpu.build("answer")
    assert second != first and ctypes.CDLL(str(second)).answer() == 43
    assert not list(pathlib.Path(tmp_path / "cache").glob("tmp*"))  # no partial files left


def test_build_errors_name_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "_SOURCE_DIR", tmp_path)
    monkeypatch.setenv("KEXUE_JAX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "broken.cc").write_text("this is not C++\n")
    with pytest.raises(cpu.BuildError, match=r"broken\.cc.*(error|Error)"):
        cpu.build("broken")
    assert not list((tmp_path / "cache").glob("*"))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(cpu.BuildError, match="CXX='/nonexistent/c\\+\\+' is not an executable"):
        cpu.build("broken")


def test_library_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("KEXUE_JAX_CPU_KERNELS", "0")
    assert cpu.library("band_attention") is None
