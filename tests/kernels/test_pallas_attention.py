"""Tests for kernels/pallas/band_attention.py and `attention(..., implementation="pallas")`.

On a CPU the kernels run in Pallas' interpret mode, so sizes stay small (lengths ≤ 100, blocks
of 16). The `gpu`-marked tests at the end run the same checks compiled, at n = 2048.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention as attn
from kernels.attention import Atrous, Fixed, Full, Local, Sparse, Strided
from kernels.pallas import band_attention as pallas_band

EMPTY_LSE = -1e30
pallas_attention = functools.partial(attn.attention, implementation="pallas")
on_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")


def random_inputs(seed, batch, length, heads, head_dim=8, value_dim=16, dtype=jnp.float32):
    """q, k, v, a cotangent for the output, and a key mask whose last batch row is padded."""
    rng = np.random.default_rng(seed)
    q, k = (rng.normal(size=(batch, length, heads, head_dim)) for _ in range(2))
    v, cotangent = (rng.normal(size=(batch, length, heads, value_dim)) for _ in range(2))
    key_mask = rng.random((batch, length)) < 0.8
    key_mask[-1, -(length // 4):] = False  # trailing padding, as a padded batch has
    return [jnp.asarray(x, dtype) for x in (q, k, v, cotangent)] + [jnp.asarray(key_mask)]


@functools.partial(jax.jit, static_argnames=("fn", "pattern", "causal"))
def output_and_grads(q, k, v, key_mask, cotangent, fn, pattern, causal):
    """fn's output and the vector-Jacobian product with ``cotangent`` w.r.t. q, k, v."""
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, pattern, causal=causal, key_mask=key_mask),
                       q, k, v)
    return (out,) + vjp(cotangent)


def reference_output_and_grads(pattern, causal, q, k, v, cotangent, key_mask, dtype=None):
    """`output_and_grads` of `reference_attention` in ``dtype`` at the highest precision.

    float64 turns on JAX's 64-bit mode for this computation only.
    """
    x64 = jax.enable_x64(True) if dtype == jnp.float64 else contextlib.nullcontext()
    with x64, jax.default_matmul_precision("highest"):
        q, k, v, cotangent = (x.astype(dtype or x.dtype) for x in (q, k, v, cotangent))
        results = output_and_grads(q, k, v, key_mask, cotangent, fn=attn.reference_attention,
                                   pattern=pattern, causal=causal)
        return [np.asarray(x, np.float64) for x in results]


def assert_close_to_reference(pattern, causal, q, k, v, cotangent, key_mask, *, tolerance,
                              reference_dtype=None):
    """Pallas output and gradients against `reference_attention` in ``reference_dtype``."""
    got = output_and_grads(q, k, v, key_mask, cotangent, fn=pallas_attention, pattern=pattern,
                           causal=causal)
    want = reference_output_and_grads(pattern, causal, q, k, v, cotangent, key_mask,
                                      reference_dtype)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert g.dtype == q.dtype, name
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64),
                                   rtol=tolerance, atol=tolerance, err_msg=f"{name} {pattern}")


# ------------------------------------------------------------------------------------------
# attention(..., implementation="pallas") against the dense reference.

# (pattern, causal): Strided and Fixed are causal by definition, so one case each suffices.
CASES = [(pattern, causal) for pattern in (Local(3), Local(2, 3), Atrous(3), Sparse(4), Full())
         for causal in (False, True)] + [(Strided(5), False), (Fixed(8, 3), False)]


@pytest.mark.parametrize("pattern, causal", CASES, ids=repr)
def test_pallas_attention_matches_reference_values_and_gradients(pattern, causal):
    # Length 37: not a multiple of the block (16), of any rate or stride, nor of a dilation.
    q, k, v, cotangent, key_mask = random_inputs(0, batch=2, length=37, heads=2)
    assert_close_to_reference(pattern, causal, q, k, v, cotangent, key_mask, tolerance=1e-5)


@pytest.mark.parametrize("pattern", [Full(), Sparse(9)], ids=repr)
def test_pallas_attention_over_several_blocks_of_64(pattern):
    # 90 positions: Full's band spans two blocks of the default 64, Sparse's local part
    # (17 keys) several blocks of 32.
    q, k, v, cotangent, key_mask = random_inputs(1, batch=1, length=90, heads=2, head_dim=16)
    assert_close_to_reference(pattern, True, q, k, v, cotangent, key_mask, tolerance=1e-5)


@pytest.mark.parametrize("pattern", [Atrous(4), Sparse(3), Fixed(4, 2)], ids=repr)
def test_query_with_no_allowed_key_gives_zeros_and_zero_gradients(pattern):
    q, k, v, cotangent, _ = random_inputs(2, batch=2, length=21, heads=2)
    key_mask = np.ones((2, 21), bool)
    key_mask[0] = False  # batch row 0: no key at all
    key_mask[1, :5] = False  # causal row 1: queries 0 … 4 see no key
    out, dq, dk, dv = output_and_grads(q, k, v, jnp.asarray(key_mask), cotangent,
                                       fn=pallas_attention, pattern=pattern, causal=True)
    for x in (out, dq, dk, dv):
        assert np.isfinite(np.asarray(x)).all()
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[1, :5], 0.0)
    np.testing.assert_array_equal(dq[0], 0.0)
    np.testing.assert_array_equal(dq[1, :5], 0.0)
    np.testing.assert_array_equal(dk[0], 0.0)  # keys nobody may attend get no gradient
    np.testing.assert_array_equal(dv[1, :5], 0.0)


def test_float32_at_highest_precision_matches_a_float64_oracle():
    q, k, v, cotangent, key_mask = random_inputs(3, batch=1, length=50, heads=2, head_dim=16)
    with jax.default_matmul_precision("highest"):
        assert_close_to_reference(Sparse(6), False, q, k, v, cotangent, key_mask,
                                  tolerance=1e-5, reference_dtype=jnp.float64)


def test_bfloat16_matches_a_float32_reference():
    q, k, v, cotangent, key_mask = random_inputs(9, batch=1, length=40, heads=2, head_dim=16,
                                                 dtype=jnp.bfloat16)
    # bfloat16 keeps 8 bits of mantissa: outputs and gradients agree to a few 1e-2.
    assert_close_to_reference(Sparse(5), True, q, k, v, cotangent, key_mask, tolerance=5e-2,
                              reference_dtype=jnp.float32)


# ------------------------------------------------------------------------------------------
# The band kernel itself, against a dense band with the same extras, in blocks of 16.


def dense_band_reference(q, k, v, valid, *, lo, hi, exclude_self=False, segment=None):
    """Every (i, j) logit under the band's mask; out [L, G, E] and lse [L, G]."""
    length = q.shape[0]
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    allowed = (j - i >= lo) & (j - i <= hi)
    if exclude_self:
        allowed &= i != j
    if segment is not None:
        allowed &= i // segment == j // segment
    allowed = jnp.asarray(allowed)[None] & jnp.swapaxes(valid, 0, 1)[:, None, :]  # [G, i, j]
    logits = jnp.where(allowed, jnp.einsum("igd,jgd->gij", q, k), -jnp.inf)
    shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    weights = jnp.exp(logits - shift)
    total = weights.sum(-1)
    safe_total = jnp.where(total > 0, total, 1.0)
    out = jnp.einsum("gij,jge->ige", weights / safe_total[..., None], v)
    lse = jnp.where(total > 0, shift[..., 0] + jnp.log(safe_total), EMPTY_LSE)
    return out, jnp.swapaxes(lse, 0, 1)


# (band, (block_q, block_k)).
BANDS = [
    (dict(lo=-3, hi=3), (16, 16)),  # Local(3)
    (dict(lo=-3, hi=3), (16, 32)),  # key blocks wider than query blocks
    (dict(lo=-5, hi=0), (32, 16)),  # causal band; query blocks wider than key blocks
    (dict(lo=-44, hi=44, exclude_self=True), (16, 16)),  # Sparse's strided part, residues
    (dict(lo=-44, hi=-2), (16, 16)),  # Strided's strided part: all below the diagonal
    (dict(lo=-7, hi=0, segment=8), (16, 16)),  # Fixed(8, ·)'s own block
    (dict(lo=2, hi=20), (16, 16)),  # all above the diagonal
]


@pytest.mark.parametrize("band, blocks", BANDS, ids=str)
def test_band_kernel_matches_dense_band_with_lse_and_its_cotangent(band, blocks):
    rng = np.random.default_rng(4)
    length, groups = 45, 3
    q, k, dout = (jnp.asarray(rng.normal(size=(length, groups, 8)), jnp.float32)
                  for _ in range(3))
    v = jnp.asarray(rng.normal(size=(length, groups, 8)), jnp.float32)
    valid = jnp.asarray(rng.random((length, groups)) < 0.8)
    kernel = functools.partial(pallas_band.band_attention, **band, block_q=blocks[0],
                               block_k=blocks[1])
    reference = functools.partial(dense_band_reference, **band)
    (out, lse), kernel_vjp = jax.vjp(lambda q, k, v: kernel(q, k, v, valid), q, k, v)
    (want_out, want_lse), reference_vjp = jax.vjp(lambda q, k, v: reference(q, k, v, valid),
                                                  q, k, v)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    # The parts of a pattern merge through lse, so its cotangent must flow back too (zero
    # where lse is the empty marker, whose value is a constant).
    dlse = jnp.where(want_lse > EMPTY_LSE / 2, jnp.asarray(rng.normal(size=lse.shape)), 0.0)
    for name, got, want in zip("qkv", kernel_vjp((dout, dlse)), reference_vjp((dout, dlse))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"d{name} {band}")


def test_valid_columns_are_shared_by_consecutive_groups():
    # valid [L, 2] for 6 groups: groups 0–2 read column 0, groups 3–5 column 1.
    rng = np.random.default_rng(5)
    q, k, v = (jnp.asarray(rng.normal(size=(20, 6, 8)), jnp.float32) for _ in range(3))
    valid = jnp.asarray(rng.random((20, 2)) < 0.7)
    out, lse = pallas_band.band_attention(q, k, v, valid, lo=-4, hi=4)
    want_out, want_lse = dense_band_reference(q, k, v, jnp.repeat(valid, 3, axis=1), lo=-4,
                                              hi=4)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)


def test_key_loop_visits_only_the_key_blocks_the_band_reaches():
    # Values past key 31 are NaN. The band ±2 of query block 0 (rows 0–15) reaches keys 0–17,
    # key blocks 0 and 1 of 16; had the loop visited block 2 or 3, 0 · NaN would poison it.
    rng = np.random.default_rng(6)
    q, k, v = (np.asarray(rng.normal(size=(64, 2, 16)), np.float32) for _ in range(3))
    v[32:] = np.nan
    valid = jnp.ones((64, 2), bool)
    out, _ = pallas_band.band_attention(*map(jnp.asarray, (q, k, v)), valid, lo=-2, hi=2,
                                        block_q=16, block_k=16)
    want, _ = dense_band_reference(*map(jnp.asarray, (q[:32], k[:32], v[:32])), valid[:32],
                                   lo=-2, hi=2)
    np.testing.assert_allclose(out[:16], want[:16], rtol=1e-5, atol=1e-5)


def test_empty_band_gives_zeros_and_the_empty_lse():
    q = jnp.ones((5, 2, 8))
    out, lse = pallas_band.band_attention(q, q, q, jnp.ones((5, 1), bool), lo=-8, hi=-5)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(lse, np.float32(EMPTY_LSE))


def test_precision_follows_the_argument_or_the_default_matmul_precision():
    assert pallas_band.resolve_precision() is None
    assert pallas_band.resolve_precision("highest") == jax.lax.Precision.HIGHEST
    assert pallas_band.resolve_precision(jax.lax.Precision.DEFAULT) is None
    with jax.default_matmul_precision("highest"):
        assert pallas_band.resolve_precision() == jax.lax.Precision.HIGHEST
    # And it reaches the kernel's matmuls (the kernel's jaxpr is printed inside pallas_call).
    q = jnp.ones((20, 2, 16))
    run = functools.partial(pallas_band.band_attention, valid=jnp.ones((20, 1), bool), lo=-2,
                            hi=2)
    assert "Precision.HIGHEST" not in str(jax.make_jaxpr(lambda q: run(q, q, q))(q))
    highest = functools.partial(run, precision=jax.lax.Precision.HIGHEST)
    assert "Precision.HIGHEST" in str(jax.make_jaxpr(lambda q: highest(q, q, q))(q))


def test_default_block_follows_the_band_within_bounds():
    assert pallas_band.default_block(7, 1000) == 16
    assert pallas_band.default_block(33, 1000) == 64
    assert pallas_band.default_block(129, 1000) == 64
    assert pallas_band.default_block(1999, 20) == 32


@pytest.mark.parametrize("bad", [dict(block_q=24), dict(block_k=8)], ids=str)
def test_blocks_that_are_not_powers_of_two_of_at_least_16_are_refused(bad):
    q = jnp.ones((20, 2, 8))
    with pytest.raises(ValueError, match="power of two"):
        pallas_band.band_attention(q, q, q, jnp.ones((20, 2), bool), lo=-1, hi=1, **bad)


def test_mismatched_shapes_are_refused():
    q = jnp.ones((20, 2, 8))
    with pytest.raises(ValueError, match="do not match"):
        pallas_band.band_attention(q, q, q, jnp.ones((20, 3), bool), lo=-1, hi=1)


# ------------------------------------------------------------------------------------------
# Compiled on a GPU (Triton), at a realistic size.

GPU_CASES = [(Local(64), False), (Local(64), True), (Local(16, 4), False), (Atrous(8), False),
             (Sparse(32), False), (Sparse(32), True), (Strided(64), False), (Full(), True),
             (Fixed(64, 8), False)]


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("pattern, causal", GPU_CASES, ids=repr)
def test_gpu_float32_at_highest_precision_matches_a_float64_oracle(pattern, causal):
    q, k, v, cotangent, key_mask = random_inputs(7, batch=2, length=2048, heads=4,
                                                 head_dim=64, value_dim=64)
    with jax.default_matmul_precision("highest"):
        assert_close_to_reference(pattern, causal, q, k, v, cotangent, key_mask,
                                  tolerance=1e-5, reference_dtype=jnp.float64)


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("pattern, causal", GPU_CASES, ids=repr)
def test_gpu_bfloat16_matches_a_float32_reference(pattern, causal):
    q, k, v, cotangent, key_mask = random_inputs(8, batch=2, length=2048, heads=4,
                                                 head_dim=64, value_dim=64,
                                                 dtype=jnp.bfloat16)
    # bfloat16 keeps 8 bits of mantissa: outputs and gradients agree to a few 1e-2.
    assert_close_to_reference(pattern, causal, q, k, v, cotangent, key_mask, tolerance=5e-2,
                              reference_dtype=jnp.float32)


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("pattern, causal", [(Full(), False), (Full(), True), (Atrous(8), False)],
                         ids=repr)
def test_gpu_cudnn_path_and_auto_match_a_float32_reference(pattern, causal):
    q, k, v, cotangent, _ = random_inputs(9, batch=2, length=2048, heads=4, head_dim=64,
                                          value_dim=64, dtype=jnp.bfloat16)
    assert attn.resolve_implementation("auto", platform="gpu", dtype=q.dtype, head_dim=64,
                                       pattern=pattern, length=2048) == "cudnn"
    key_mask = jnp.ones((2, 2048), bool)  # all valid: the reference's mask changes nothing
    want = reference_output_and_grads(pattern, causal, q, k, v, cotangent, key_mask,
                                      jnp.float32)
    for implementation in ("cudnn", "auto"):
        got = output_and_grads(q, k, v, None, cotangent,
                               fn=functools.partial(attn.attention,
                                                    implementation=implementation),
                               pattern=pattern, causal=causal)
        for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=5e-2, atol=5e-2,
                                       err_msg=f"{implementation} {name} {pattern}")
