"""Banded softmax attention as a CPU FFI kernel (band_attention.cc), differentiable.

Query i of a group attends the keys lo ≤ j − i ≤ hi that ``valid`` allows. This is the band
part of `kernels.attention`'s Local, Sparse and Strided patterns; there `_band_attention`
calls `band_attention` on CPU and its own blocked XLA path elsewhere, and the tests hold the
two to each other and to the dense reference. Arrays are sequence-first, [L, G, F], as
`kernels.attention` holds them inside, so neither side transposes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from kernels import cpu

Array = jax.Array

_FORWARD = "kexue_band_attention_forward"
_BACKWARD = "kexue_band_attention_backward"
# The kernel's vectors are 8 floats wide (band_attention.cc: VL).
FEATURE_MULTIPLE = 8


@functools.cache
def available() -> bool:
    """Whether the kernel is built and registered with XLA (False: no compiler, see `cpu`)."""
    return cpu.register("band_attention", {_FORWARD: "KexueBandAttentionForward",
                                           _BACKWARD: "KexueBandAttentionBackward"})


def unsupported_reason(q: Array, v: Array) -> str | None:
    """Why the kernel cannot take these arrays, or None when it can (and is available)."""
    if not all(x.dtype == jnp.float32 for x in (q, v)):
        return f"needs float32, got {q.dtype} and {v.dtype}"
    if q.shape[-1] % FEATURE_MULTIPLE or v.shape[-1] % FEATURE_MULTIPLE:
        return (f"needs head dims that are multiples of {FEATURE_MULTIPLE}, got "
                f"{q.shape[-1]} and {v.shape[-1]}")
    if not available():
        return "the kernel could not be built (see the warning from kernels.cpu)"
    return None


def _forward_call(q, k, v, valid, lo, hi):
    shapes = (jax.ShapeDtypeStruct(v.shape, jnp.float32),
              jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32))  # out, lse
    return jax.ffi.ffi_call(_FORWARD, shapes, vmap_method="broadcast_all")(
        q, k, v, valid, lo=np.int64(lo), hi=np.int64(hi))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _band(q, k, v, valid, lo, hi):
    return _forward_call(q, k, v, valid, lo, hi)


def _band_forward(q, k, v, valid, lo, hi):
    out, lse = _forward_call(q, k, v, valid, lo, hi)
    return (out, lse), (q, k, v, valid, out, lse)


def _band_backward(lo, hi, residuals, cotangents):
    q, k, v, valid, out, lse = residuals
    dout, dlse = cotangents
    shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
    dq, dk, dv = jax.ffi.ffi_call(_BACKWARD, shapes, vmap_method="broadcast_all")(
        q, k, v, valid, out, lse, dout, dlse, lo=np.int64(lo), hi=np.int64(hi))
    return dq, dk, dv, None


_band.defvjp(_band_forward, _band_backward)


def band_attention(q: Array, k: Array, v: Array, valid: Array, *, lo: int,
                   hi: int) -> tuple[Array, Array]:
    """Softmax attention of query i to the allowed keys j with lo ≤ j − i ≤ hi, per group.

    Args:
      q: [L, G, D] float32 queries (sequence first, G groups such as batch × heads), already
        multiplied by the softmax scale.
      k: [L, G, D] float32 keys.
      v: [L, G, E] float32 values.
      valid: bool [L, G]; False for keys nobody may attend.
      lo, hi: the band's offsets, lo ≤ 0 ≤ hi (static).

    Returns:
      out: [L, G, E], zeros for a query with no allowed key.
      lse: [L, G] float32 log Σ_allowed exp(logit), −1e30 where no key is allowed.

    Raises:
      ValueError: on arrays the kernel does not take (`unsupported_reason`), shapes that do
        not match, or lo > 0 or hi < 0.
    """
    reason = unsupported_reason(q, v)
    if reason is not None:
        raise ValueError(f"band_attention: {reason}")
    if lo > 0 or hi < 0:
        raise ValueError(f"band_attention: need lo <= 0 <= hi, got lo={lo}, hi={hi}")
    if not (q.ndim == 3 and q.shape == k.shape and v.shape[:-1] == q.shape[:-1]
            and valid.shape == q.shape[:-1]):
        raise ValueError(f"band_attention: shapes q {q.shape}, k {k.shape}, v {v.shape}, "
                         f"valid {valid.shape} do not match [L, G, D], [L, G, E], [L, G]")
    return _band(q, k, v, valid.astype(bool), int(lo), int(hi))
