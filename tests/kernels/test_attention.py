"""Tests for kernels/attention.py: index sets, parity with the dense reference, memory, errors."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import attention as attn
from kernels.attention import Atrous, Fixed, Full, Local, Sparse, Strided
from kernels.cpu import band_attention as cpu_band

ALL_PATTERNS = [Full(), Atrous(1), Atrous(2), Atrous(5), Local(1), Local(3), Local(9),
                Local(4, 2), Local(2, 3), Sparse(1), Sparse(3), Sparse(6), Strided(1),
                Strided(4), Strided(7), Fixed(1, 1), Fixed(4, 1), Fixed(6, 6), Fixed(8, 3)]


def enumerate_allowed(pattern, i, length):
    """A(i) built by walking offsets, not by a formula (docs/sparse_attention.md §1.2–§1.3)."""
    if isinstance(pattern, Full):
        keys = set(range(length))
    elif isinstance(pattern, Atrous):
        keys = {i + m * pattern.rate for m in range(-length, length + 1)}
    elif isinstance(pattern, Local):
        k, d = pattern.radius, pattern.dilation
        keys = {i + m * d for m in range(-k, k + 1)}
    elif isinstance(pattern, Sparse):
        r = pattern.rate
        keys = {i + m for m in range(-(r - 1), r)} | {i + m * r for m in range(-length, length + 1)}
    elif isinstance(pattern, Strided):
        step = pattern.stride
        keys = set(range(max(0, i - step), i + 1)) | {i - m * step for m in range(length + 1)}
    elif isinstance(pattern, Fixed):
        step, c = pattern.stride, pattern.summary
        own_block = set(range(i // step * step, i + 1))
        summaries = {b * step + col for b in range(length // step + 1)
                     for col in range(step - c, step)}
        keys = own_block | {j for j in summaries if j <= i}
    else:
        raise AssertionError(pattern)
    return {j for j in keys if 0 <= j < length}


def brute_force_mask(pattern, length, causal=False):
    mask = np.zeros((length, length), bool)
    for i in range(length):
        for j in enumerate_allowed(pattern, i, length):
            mask[i, j] = not causal or j <= i
    return mask


def random_inputs(seed, batch, length, heads, head_dim=8, value_dim=None, p_valid=0.8):
    rng = np.random.default_rng(seed)
    shape = (batch, length, heads, head_dim)
    q, k = rng.normal(size=shape), rng.normal(size=shape)
    v = rng.normal(size=shape[:3] + (value_dim or head_dim,))
    key_mask = rng.random((batch, length)) < p_valid
    cotangent = rng.normal(size=v.shape)
    return [jnp.asarray(x, jnp.float32) for x in (q, k, v, cotangent)] + [jnp.asarray(key_mask)]


# The band parts of Local, Sparse and Strided by blocked XLA, and by the CPU kernel
# (kernels/cpu; tests/kernels/test_cpu_band_attention.py skips when it cannot be built).
IMPLEMENTATIONS = ["xla", "cpu_kernel"]


def efficient(implementation):
    """`attn.attention` with one implementation of the band parts."""
    if implementation == "cpu_kernel" and not cpu_band.available():
        pytest.skip("the CPU band-attention kernel could not be built here")
    return functools.partial(attn.attention, implementation=implementation)


@functools.partial(jax.jit, static_argnames=("fn", "pattern", "causal"))
def output_and_grads(q, k, v, key_mask, cotangent, fn, pattern, causal):
    """fn's output and the vector-Jacobian product with ``cotangent`` w.r.t. q, k, v."""
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, pattern, causal=causal, key_mask=key_mask),
                       q, k, v)
    return (out,) + vjp(cotangent)


def assert_matches_reference(pattern, causal, q, k, v, key_mask, cotangent,
                             implementation="xla"):
    args = (q, k, v, key_mask, cotangent)
    fast = output_and_grads(*args, fn=efficient(implementation), pattern=pattern, causal=causal)
    slow = output_and_grads(*args, fn=attn.reference_attention, pattern=pattern, causal=causal)
    for name, got, want in zip(("out", "dq", "dk", "dv"), fast, slow):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{name} {pattern}")


# ------------------------------------------------------------------------------------------
# Index sets.


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=repr)
@pytest.mark.parametrize("length", [1, 7, 24])
def test_allows_matches_brute_force_enumeration(pattern, length):
    i = np.arange(length)
    got = np.asarray(pattern.allows(i[:, None], i[None, :]))
    np.testing.assert_array_equal(got, brute_force_mask(pattern, length))


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=repr)
def test_dense_mask_with_causal_adds_j_at_most_i(pattern):
    np.testing.assert_array_equal(attn.dense_mask(pattern, 13, causal=True),
                                  brute_force_mask(pattern, 13, causal=True))


def test_sparse_transformer_patterns_are_causal_by_definition():
    for pattern in (Strided(3), Fixed(4, 2)):
        mask = brute_force_mask(pattern, 20)
        assert not np.triu(mask, 1).any()


def test_allows_broadcasts_and_patterns_are_static_jit_args():
    assert Local(2).allows(np.arange(4)[:, None], 1).shape == (4, 1)
    assert bool(Atrous(3).allows(7, 1)) and not bool(Atrous(3).allows(7, 2))
    assert hash(Local(2, 3)) == hash(Local(2, 3)) and Local(2, 3) != Local(2)
    q = jnp.ones((1, 6, 1, 4))
    jitted = jax.jit(attn.attention, static_argnames=("pattern", "causal"))
    np.testing.assert_allclose(jitted(q, q, q, Sparse(2)), q, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# The reference itself, by hand.


def test_reference_matches_hand_written_softmax():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(1, 5, 1, 3)) for _ in range(3))
    key_mask = np.array([[True, True, False, True, True]])
    expected = np.zeros((5, 3))
    for i in range(5):
        keys = [j for j in (i - 1, i, i + 1) if 0 <= j < 5 and key_mask[0, j]]
        logits = [float(q[0, i, 0] @ k[0, j, 0]) / math.sqrt(3) for j in keys]
        weights = np.exp(np.array(logits) - max(logits))
        weights /= weights.sum()
        expected[i] = sum(w * v[0, j, 0] for w, j in zip(weights, keys))
    got = jax.jit(attn.reference_attention, static_argnames="pattern")(
        *(jnp.asarray(x, jnp.float32) for x in (q, k, v)), Local(1), key_mask=key_mask)
    np.testing.assert_allclose(got[0, :, 0], expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# The efficient kernels against the reference, values and gradients.


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@settings(max_examples=9, deadline=None)
@given(pattern=st.sampled_from(ALL_PATTERNS), length=st.sampled_from([1, 6, 23, 70]),
       heads=st.sampled_from([1, 2]), causal=st.booleans(), seed=st.integers(0, 2**16),
       p_valid=st.sampled_from([1.0, 0.7]))
def test_attention_matches_reference(implementation, pattern, length, heads, causal, seed,
                                     p_valid):
    inputs = random_inputs(seed, 2, length, heads, p_valid=p_valid)
    q, k, v, cotangent, key_mask = inputs
    assert_matches_reference(pattern, causal, q, k, v, key_mask, cotangent, implementation)


@pytest.mark.parametrize("pattern, causal, chunk_bytes", [
    (Local(7, 3), True, 1 << 10), (Sparse(17), False, 2 << 10), (Fixed(32, 5), False, 16 << 10),
    (Atrous(4), True, 1 << 10),
], ids=repr)
def test_attention_matches_reference_in_many_chunks(pattern, causal, chunk_bytes, monkeypatch):
    """Small chunks: many loop iterations, padded chunks, groups cut into query blocks.

    The length 301 is used by no other test, so no kernel compiled with the default chunk
    size is taken from the jit cache.
    """
    monkeypatch.setattr(attn, "_CHUNK_BYTES", chunk_bytes)
    q, k, v, cotangent, key_mask = random_inputs(1, 1, 301, 2, value_dim=5)
    assert_matches_reference(pattern, causal, q, k, v, key_mask, cotangent)


@pytest.mark.parametrize("lo, hi, block", [(0, 0, 1), (-3, 0, 2), (-3, 3, 5), (-7, 2, 16),
                                           (-7, 7, 4), (-1, 1, 36)])
def test_band_attention_any_block_size(lo, hi, block):
    q, k, v, _, key_mask = random_inputs(2, 1, 37, 1)
    q, k, v = (x[0] for x in (q, k, v))  # [37, 1, 8]: sequence first, one batch axis
    key_valid = key_mask[0, :, None, None]

    def dense_band(o):
        return (-o >= lo) & (-o <= hi)

    want = jax.jit(functools.partial(attn._residue_attention, rate=1,
                                     allowed_offsets=dense_band))(q, k, v, key_valid)
    got = jax.jit(functools.partial(attn._band_attention, lo=lo, hi=hi, block=block))(
        q, k, v, key_valid)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("pattern", [Atrous(2), Local(2, 3), Sparse(3), Strided(4), Fixed(4, 1)],
                         ids=repr)
def test_queries_without_keys_give_zeros_and_finite_grads(pattern, implementation):
    q, k, v, cotangent, _ = random_inputs(3, 2, 23, 2)
    key_mask = np.zeros((2, 23), bool)
    key_mask[1, -1] = True  # batch 0: no key at all; batch 1: with causal, only the last query
    out, dq, dk, dv = output_and_grads(q, k, v, jnp.asarray(key_mask), cotangent,
                                       fn=efficient(implementation), pattern=pattern,
                                       causal=True)
    has_key = (attn.dense_mask(pattern, 23, causal=True)[None] & key_mask[:, None, :]).any(-1)
    assert not has_key[0].any() and not has_key[1, :-1].any()
    for grad in (out, dq, dk, dv):
        assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(has_key)], 0.0)
    np.testing.assert_array_equal(np.asarray(dq)[~np.asarray(has_key)], 0.0)
    np.testing.assert_array_equal(np.asarray(dk)[0], 0.0)
    np.testing.assert_array_equal(np.asarray(dv)[0], 0.0)


# ------------------------------------------------------------------------------------------
# No N×N buffer.


MEMORY_CHECK_LENGTH = 16384
ONE_N_BY_N = MEMORY_CHECK_LENGTH**2 * 4  # bytes of one float32 [N, N] array


def _temp_bytes(fn, pattern):
    """Temporary bytes of the compiled forward + backward pass, batch 1, one head."""
    x = jax.ShapeDtypeStruct((1, MEMORY_CHECK_LENGTH, 1, 16), jnp.float32)

    def loss(q, k, v):
        return jnp.sum(fn(q, k, v, pattern, causal=False))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_check_sees_the_reference_n_by_n_buffer():
    assert _temp_bytes(attn.reference_attention, Local(8)) >= ONE_N_BY_N


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("pattern", [Full(), Atrous(16), Local(8, 4), Sparse(128), Strided(128),
                                     Fixed(128, 4)], ids=repr)
def test_no_n_by_n_buffer_forward_and_backward(pattern, implementation):
    # O(N) memory: a few MiB of chunk logits plus a few copies of q, k, v. (The CPU kernel's
    # own scratch is a few KiB per thread, outside XLA's accounting.)
    assert _temp_bytes(efficient(implementation), pattern) < ONE_N_BY_N / 16


# ------------------------------------------------------------------------------------------
# Bad input.


def test_pattern_arguments_are_validated():
    for make, match in [(lambda: Atrous(0), "Atrous rate"), (lambda: Local(0), "Local radius"),
                        (lambda: Local(2, 0), "Local dilation"), (lambda: Sparse(-1), "Sparse"),
                        (lambda: Strided(0), "Strided stride"), (lambda: Local(2.5), "radius"),
                        (lambda: Fixed(4, 0), "Fixed summary"),
                        (lambda: Fixed(4, 5), r"summary must lie in \[1, stride=4\]")]:
        with pytest.raises(ValueError, match=match):
            make()


@pytest.mark.parametrize("fn", [attn.attention, attn.reference_attention])
def test_shapes_are_validated_before_tracing(fn):
    q = jnp.zeros((2, 6, 3, 4))
    cases = [
        (dict(q=q[..., 0], k=q, v=q), r"q must have shape .*\(2, 6, 3\)"),
        (dict(q=q, k=q[:, :5], v=q), r"k must have the shape of q \(2, 6, 3, 4\), got \(2, 5"),
        (dict(q=q, k=q, v=q[:, :, :2]), r"v must have shape .*got \(2, 6, 2, 4\)"),
        (dict(q=q, k=q, v=q, key_mask=jnp.ones((2, 5), bool)),
         r"key_mask must have shape \(batch, length\) = \(2, 6\).*got \(2, 5\)"),
        (dict(q=q, k=q.astype(jnp.int32), v=q), r"must be floating point, got float32, int32"),
    ]
    for kwargs, match in cases:
        kwargs.setdefault("key_mask", None)
        with pytest.raises(ValueError, match=match):
            fn(kwargs["q"], kwargs["k"], kwargs["v"], Local(1), key_mask=kwargs["key_mask"])
    with pytest.raises(TypeError, match="pattern must be one of"):
        fn(q, q, q, "local")


def test_implementation_is_validated():
    q = jnp.zeros((1, 6, 1, 5))
    with pytest.raises(ValueError, match=r"implementation must be one of .*got 'triton'"):
        attn.attention(q, q, q, Local(1), implementation="triton")
    with pytest.raises(ValueError, match="implementation='cpu_kernel': needs head dims that "
                                         "are multiples of 8, got 5 and 5"):
        attn.attention(q, q, q, Local(1), implementation="cpu_kernel")
    with pytest.raises(ValueError, match="implementation='cpu_kernel': needs float32"):
        attn.attention(q.astype(jnp.bfloat16), q, q, Local(1), implementation="cpu_kernel")


# ------------------------------------------------------------------------------------------
# Which implementation runs.


def _compiled_text(head_dim, implementation, pattern=Local(3), dtype=jnp.float32):
    x = jax.ShapeDtypeStruct((1, 40, 2, head_dim), dtype)
    fn = functools.partial(attn.attention, pattern=pattern, implementation=implementation)
    return jax.jit(fn).lower(x, x, x).compile().as_text()


def test_auto_takes_the_cpu_kernel_where_it_applies():
    if not cpu_band.available():
        pytest.skip("the CPU band-attention kernel could not be built here")
    kernel = "kexue_band_attention_forward"
    assert kernel in _compiled_text(8, "auto")
    assert kernel in _compiled_text(8, "auto", Sparse(4))
    assert kernel in _compiled_text(8, "cpu_kernel")
    assert kernel not in _compiled_text(8, "xla")
    assert kernel not in _compiled_text(5, "auto")  # head dim not a multiple of 8
    assert kernel not in _compiled_text(8, "auto", dtype=jnp.bfloat16)
    assert kernel in _compiled_text(8, "auto", Atrous(3))  # dense groups: one wide band
    assert kernel in _compiled_text(8, "auto", Full())
    assert kernel not in _compiled_text(8, "auto", Fixed(4, 2))  # XLA only


@pytest.mark.parametrize("pattern", [Full(), Atrous(4), Local(3), Local(3, dilation=5)],
                         ids=str)
def test_the_cpu_kernel_reads_the_callers_layout(pattern):
    """No transpose or copy of q, k, v or their gradients: the kernel reads [B, N, H, D]
    (a residue group is a reshape when the rate divides N)."""
    if not cpu_band.available():
        pytest.skip("the CPU band-attention kernel could not be built here")
    x = jnp.ones((3, 40, 2, 8))
    key_mask = jnp.arange(40)[None, :] < jnp.array([[40], [25], [7]])

    def loss(q, k, v):
        return jnp.sum(attn.attention(q, k, v, pattern, key_mask=key_mask) ** 2)

    forward = jax.jit(functools.partial(attn.attention, pattern=pattern, key_mask=key_mask))
    for compiled in (forward.lower(x, x, x).compile(),
                     jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile()):
        text = compiled.as_text()
        assert "kexue_band_attention" in text
        assert not re.search(r"\} (copy|transpose)\(", text), text


def test_auto_falls_back_to_xla_when_the_kernel_is_unavailable(monkeypatch):
    monkeypatch.setattr(cpu_band, "available", lambda: False)
    assert "kexue_band_attention" not in _compiled_text(16, "auto", Local(5))
    q, k, v, cotangent, key_mask = random_inputs(4, 1, 30, 2)
    assert_matches_reference(Local(5), False, q, k, v, key_mask, cotangent, "auto")


# ------------------------------------------------------------------------------------------
# Cross-attention: query and key lengths differ, key mask, causal offset.


def numpy_cross_attention(q, k, v, key_mask, causal_offset):
    """Float64 loops over (batch, head, query): softmax over the allowed keys, else zeros."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    batch, num_queries, heads, head_dim = q.shape
    offsets = np.broadcast_to(np.asarray(0 if causal_offset is None else causal_offset),
                              (batch,))
    out = np.zeros(q.shape[:3] + v.shape[3:])
    for b in range(batch):
        for h in range(heads):
            for i in range(num_queries):
                keys = [j for j in range(k.shape[1]) if key_mask[b, j]
                        and (causal_offset is None or j <= i + offsets[b])]
                if not keys:
                    continue
                logits = np.array([q[b, i, h] @ k[b, j, h] for j in keys]) / math.sqrt(head_dim)
                weights = np.exp(logits - logits.max())
                out[b, i, h] = (weights / weights.sum()) @ v[b, keys, h]
    return out


def random_cross_inputs(seed, batch, num_queries, num_keys, heads=2, head_dim=4, value_dim=3,
                        p_valid=0.7):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(batch, num_queries, heads, head_dim))
    k = rng.normal(size=(batch, num_keys, heads, head_dim))
    v = rng.normal(size=(batch, num_keys, heads, value_dim))
    cotangent = rng.normal(size=(batch, num_queries, heads, value_dim))
    key_mask = rng.random((batch, num_keys)) < p_valid
    return [jnp.asarray(x, jnp.float32) for x in (q, k, v, cotangent)] + [key_mask]


@functools.partial(jax.jit, static_argnames=("fn",))
def cross_output_and_grads(q, k, v, key_mask, causal_offset, cotangent, fn):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, key_mask=key_mask,
                                          causal_offset=causal_offset), q, k, v)
    return (out,) + vjp(cotangent)


@settings(max_examples=12, deadline=None)
@given(num_queries=st.sampled_from([1, 5, 17]), num_keys=st.sampled_from([1, 6, 23]),
       offset=st.sampled_from([None, 0, -2, 4, "per_example"]), seed=st.integers(0, 2**16))
def test_cross_attention_matches_numpy_and_reference_gradients(num_queries, num_keys, offset,
                                                               seed):
    q, k, v, cotangent, key_mask = random_cross_inputs(seed, 3, num_queries, num_keys)
    if offset == "per_example":
        offset = jnp.array([0, 3, -1])
    fast = cross_output_and_grads(q, k, v, key_mask, offset, cotangent,
                                  fn=attn.cross_attention)
    np.testing.assert_allclose(fast[0], numpy_cross_attention(q, k, v, key_mask, offset),
                               rtol=1e-5, atol=1e-5)
    slow = cross_output_and_grads(q, k, v, key_mask, offset, cotangent,
                                  fn=attn.reference_cross_attention)
    for name, got, want in zip(("out", "dq", "dk", "dv"), fast, slow):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_cross_attention_gradients_match_finite_differences():
    q, k, v, _, key_mask = random_cross_inputs(5, 2, 4, 7)
    key_mask[1] = False  # a batch element with no key: zero output, gradients still checked

    def loss(q, k, v):
        out = attn.cross_attention(q, k, v, key_mask=key_mask, causal_offset=jnp.array([1, 0]))
        return jnp.sum(jnp.sin(out))

    # The kernel takes its logits in float32 even for float64 inputs, so the differences
    # use a step and a tolerance at float32's precision.
    with jax.enable_x64(True):
        args = [jnp.asarray(x, jnp.float64) for x in (q, k, v)]
        jax.test_util.check_grads(jax.jit(loss), args, order=1, modes=["rev"], eps=1e-3,
                                  atol=1e-3, rtol=1e-3)


def test_cross_attention_in_many_query_blocks(monkeypatch):
    """A tiny chunk size: one query per block, and a final block padded past Tq."""
    monkeypatch.setattr(attn, "_DENSE_CHUNK_BYTES", 4 * 2 * 2 * 9 * 3)  # 3 queries a block
    q, k, v, cotangent, key_mask = random_cross_inputs(6, 2, 11, 9)
    fast = cross_output_and_grads(q, k, v, key_mask, 2, cotangent, fn=attn.cross_attention)
    slow = cross_output_and_grads(q, k, v, key_mask, 2, cotangent,
                                  fn=attn.reference_cross_attention)
    for got, want in zip(fast, slow):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cross_attention_queries_without_keys_give_zeros_and_finite_grads():
    q, k, v, cotangent, _ = random_cross_inputs(7, 2, 6, 5)
    key_mask = np.ones((2, 5), bool)
    key_mask[0] = False  # batch 0: no key; batch 1: offset −3 leaves queries 0..2 empty
    out, dq, dk, dv = cross_output_and_grads(q, k, v, key_mask, jnp.array([0, -3]), cotangent,
                                             fn=attn.cross_attention)
    for x in (out, dq, dk, dv):
        assert np.isfinite(np.asarray(x)).all()
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[1, :3], 0.0)
    assert np.abs(np.asarray(out[1, 3:])).min() > 0
    np.testing.assert_array_equal(dq[0], 0.0)
    np.testing.assert_array_equal(dq[1, :3], 0.0)
    np.testing.assert_array_equal(dk[0], 0.0)
    np.testing.assert_array_equal(dv[0], 0.0)


def test_cross_attention_with_equal_lengths_matches_self_attention():
    q, k, v, _, key_mask = random_cross_inputs(8, 2, 9, 9, head_dim=8, value_dim=8)
    for causal, offset in ((False, None), (True, 0)):
        np.testing.assert_allclose(
            attn.cross_attention(q, k, v, key_mask=key_mask, causal_offset=offset),
            attn.attention(q, k, v, Full(), causal=causal, key_mask=key_mask),
            rtol=1e-5, atol=1e-5)


def test_cross_attention_traced_offset_compiles_once():
    q, k, v, _, key_mask = random_cross_inputs(9, 1, 1, 8)
    traces = []

    @jax.jit
    def decode_step(step):
        traces.append(step)
        return attn.cross_attention(q, k, v, causal_offset=step)

    outs = [decode_step(jnp.int32(t)) for t in range(4)]
    assert len(traces) == 1
    for t, out in enumerate(outs):  # one query at step t sees cache slots 0..t
        np.testing.assert_allclose(out, numpy_cross_attention(q, k, v, np.ones((1, 8), bool), t),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [attn.cross_attention, attn.reference_cross_attention])
def test_cross_attention_shapes_are_validated(fn):
    q, k = jnp.zeros((2, 3, 4, 8)), jnp.zeros((2, 5, 4, 8))
    cases = [
        (dict(q=q[..., 0]), r"q, k, v must have shape"),
        (dict(k=k[:1]), r"k must have shape .* = \(2, Tk, 4, 8\).*got \(1, 5, 4, 8\)"),
        (dict(k=k[..., :4]), r"k must have shape"),
        (dict(v=k[:, :4]), r"v must have shape .*got \(2, 4, 4, 8\)"),
        (dict(key_mask=jnp.ones((2, 3), bool)), r"key_mask must have shape .* = \(2, 5\)"),
        (dict(causal_offset=jnp.zeros((3,), int)), r"causal_offset must be an int or have"),
        (dict(v=k.astype(jnp.int32)), "must be floating point"),
    ]
    for override, match in cases:
        args = dict(q=q, k=k, v=k, key_mask=None, causal_offset=None) | override
        with pytest.raises(ValueError, match=match):
            fn(args["q"], args["k"], args["v"], key_mask=args["key_mask"],
               causal_offset=args["causal_offset"])
