"""How `kernels.attention.attention` routes a call on a GPU, testable on a CPU.

* "cudnn": Full and Atrous as dense attention over residue rows
  (`residue_dense_attention`), here with XLA's dense attention in cuDNN's place: the layout,
  causality and gradients are ours, the fused kernel is the library's.
* "auto" on a GPU (`resolve_implementation`): cuDNN where it takes the call, Pallas
  elsewhere, as the GPU benchmark measured (docs/sparse_attention.md §4.1).
* The Pallas kernels lower to Triton for CUDA from this CPU (JAX's cross-platform
  lowering), so a change that breaks the GPU lowering fails here, not on a lent GPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention as attn
from kernels.attention import Atrous, Fixed, Full, Local, Sparse, Strided
from kernels.pallas import band_attention as pallas_band


def random_qkv(seed, shape, dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return [jax.random.normal(key, shape, dtype) for key in keys]


def test_residue_batches_round_trip_and_group_positions_by_residue():
    x = jnp.arange(2 * 24 * 3).reshape(2, 24, 3, 1)
    grouped = attn.to_residue_batches(x, 8)
    assert grouped.shape == (16, 3, 3, 1)
    # Row g·B + b holds positions g, g + 8, g + 16 of batch row b.
    np.testing.assert_array_equal(grouped[5 * 2 + 1, :, 0, 0], x[1, [5, 13, 21], 0, 0])
    np.testing.assert_array_equal(attn.from_residue_batches(grouped, 8), x)


@pytest.mark.parametrize("pattern", [Full(), Atrous(4), Atrous(8)], ids=repr)
@pytest.mark.parametrize("causal", [False, True])
def test_residue_dense_attention_matches_the_reference_with_gradients(pattern, causal):
    q, k, v = random_qkv(0, (2, 48, 2, 8))
    cotangent = random_qkv(1, (2, 48, 2, 8))[0]
    rate = pattern.rate if isinstance(pattern, Atrous) else 1
    ours = functools.partial(attn.residue_dense_attention, rate=rate, causal=causal,
                             library="xla")
    reference = functools.partial(attn.reference_attention, pattern=pattern, causal=causal)
    with jax.default_matmul_precision("highest"):
        got, got_vjp = jax.vjp(ours, q, k, v)
        want, want_vjp = jax.vjp(reference, q, k, v)
        pairs = [(got, want)] + list(zip(got_vjp(cotangent), want_vjp(cotangent)))
    for name, (g, w) in zip(("out", "dq", "dk", "dv"), pairs):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5, err_msg=name)


GPU = functools.partial(attn.resolve_implementation, "auto", platform="gpu",
                        dtype=jnp.bfloat16, head_dim=64, length=4096)


def test_auto_on_a_gpu_takes_cudnn_for_dense_patterns_cudnn_takes():
    assert GPU(pattern=Full()) == "cudnn"
    assert GPU(pattern=Atrous(8)) == "cudnn"
    assert GPU(pattern=Full(), dtype=jnp.float16) == "cudnn"


@pytest.mark.parametrize("change, why", [
    (dict(pattern=Local(64)), "not a dense pattern"),
    (dict(pattern=Sparse(64)), "two parts merged by log-sum-exp"),
    (dict(pattern=Strided(64)), "two parts merged by log-sum-exp"),
    (dict(pattern=Fixed(64, 8)), "not dense in residue groups"),
    (dict(pattern=Full(), dtype=jnp.float32), "cuDNN takes half precision only"),
    (dict(pattern=Full(), head_dim=12), "head dim not a multiple of 8"),
    (dict(pattern=Full(), head_dim=256), "head dim over 128"),
    (dict(pattern=Atrous(8), length=4100), "length not a multiple of the rate"),
    (dict(pattern=Full(), has_key_mask=True), "a key mask"),
    (dict(pattern=None), "no call to choose for"),
])
def test_auto_on_a_gpu_takes_pallas_where_cudnn_does_not(change, why):
    assert GPU(**change) == "pallas", why


def test_auto_elsewhere_and_named_implementations():
    assert attn.resolve_implementation("auto", platform="tpu", dtype=jnp.bfloat16,
                                       head_dim=64, pattern=Full(), length=64) == "xla"
    assert attn.resolve_implementation("xla", platform="gpu", dtype=jnp.bfloat16,
                                       head_dim=64, pattern=Full(), length=64) == "xla"
    with pytest.raises(ValueError, match="implementation must be one of"):
        attn.resolve_implementation("flash", platform="gpu", dtype=jnp.bfloat16, head_dim=64)


def test_cudnn_is_refused_with_the_reason():
    q, k, v = random_qkv(2, (1, 32, 2, 8), jnp.bfloat16)
    with pytest.raises(ValueError, match="cudnn.*Full and Atrous only, not Local"):
        attn.attention(q, k, v, Local(4), implementation="cudnn")
    with pytest.raises(ValueError, match="cudnn.*no key_mask"):
        attn.attention(q, k, v, Full(), key_mask=jnp.ones((1, 32), bool),
                       implementation="cudnn")
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="cudnn.*needs a GPU"):
            attn.attention(q, k, v, Full(), implementation="cudnn")


@pytest.mark.parametrize("pattern, causal", [
    (Local(64), False), (Local(16, 4), True), (Atrous(8), False), (Sparse(32), False),
    (Sparse(32), True), (Strided(64), False), (Full(), True), (Fixed(64, 8), False)], ids=repr)
def test_pallas_kernels_lower_to_triton_for_a_gpu(pattern, causal, monkeypatch):
    # Compiled (not interpreted) kernels, lowered for CUDA without a GPU.
    monkeypatch.setattr(pallas_band, "band_attention",
                        functools.partial(pallas_band.band_attention, interpret=False))
    q, k, v = random_qkv(3, (2, 1024, 2, 64), jnp.bfloat16)
    key_mask = jnp.ones((2, 1024), bool)

    def loss(q, k, v):
        out = attn.attention(q, k, v, pattern, causal=causal, key_mask=key_mask,
                             implementation="pallas")
        return jnp.sum(out.astype(jnp.float32) ** 2)

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, k, v).lower(
        lowering_platforms=("cuda",))
    text = lowered.as_text()
    kernels = text.count("__gpu$xla.gpu.triton")
    parts = 2 if isinstance(pattern, (Sparse, Strided)) else 1
    assert kernels == 3 * parts  # forward, dq and dkv per banded part
