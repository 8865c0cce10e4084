"""Flash-style banded softmax attention in Pallas: Triton on a GPU, interpret mode on a CPU.

Query i of a group attends the keys j with lo ≤ j − i ≤ hi that ``valid`` allows, optionally
without j = i (``exclude_self``) and only inside aligned segments (⌊i/segment⌋ = ⌊j/segment⌋).
That one kernel serves every part of `kernels.attention`'s patterns but Fixed's summary
columns (docs/sparse_attention.md):

  ==================================== ======================================================
  part                                 band
  ==================================== ======================================================
  Local(k, d)                          lo = −k, hi = k (causal: 0), residue layout mod d
  Full, Atrous(r): dense groups        lo = 1 − slots, hi = slots − 1 (causal: 0), residue
                                       layout mod r (Full: r = 1)
  Sparse(r): local part                lo = 1 − r, hi = r − 1 (causal: 0)
  Sparse(r): strided part              residue layout mod r, every slot but self
                                       (``exclude_self``; causal: hi = −1)
  Strided(l): local / strided part     lo = −l, hi = 0 / residue layout mod l, hi = −2
  Fixed(l, c): own block               lo = 1 − l, hi = 0, ``segment`` = l
  ==================================== ======================================================

Arrays are sequence-first, [L, G, F] (G groups: batch × heads, or residue groups × batch ×
heads), as `kernels.attention` holds them inside, so no transpose is needed on either side.

Forward: a grid of (query blocks, groups). A program holds ``block_q`` queries and loops over
only the key blocks of ``block_k`` keys its band reaches (for Local(k): about
(block_q + 2k) / block_k of them, whatever the length), with an online softmax whose running
maximum and sum are float32 (Dao et al. 2022, arXiv 2205.14135). It writes the output and the
log-sum-exp per query, from which `kernels.attention` merges the parts of a pattern exactly.

Backward (arXiv 2307.08691, §3.1.2), probabilities recomputed from the saved log-sum-exp, and
the cotangent of the log-sum-exp included since the parts of a pattern merge through it:

  delta_i = dout_i·out_i − dlse_i,  P_ij = exp(s_ij − lse_i),  dS_ij = P_ij (dout_i·v_j − delta_i)
  dq kernel, grid (query blocks, groups), over the band's key blocks:   dq_i = Σ_j dS_ij k_j
  dkv kernel, grid (key blocks, groups), over the query blocks whose band reaches the key
  block:   dk_j = Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dout_i

Each gradient row is written by exactly one program: no atomics. A query with no allowed key
gets a zero output, log-sum-exp −1e30 and zero gradients.

Written for GPUs (the Triton lowering: power-of-two blocks, tl.dot's 16-wide minimum); on a
TPU the Mosaic lowering is untried. Groups go on the second grid axis, which CUDA caps at
65535 programs.

Precision: float32 matmuls run as TF32 on NVIDIA GPUs by default (fast); pass
``precision=jax.lax.Precision.HIGHEST``, or call under ``jax.default_matmul_precision("highest")``
(how `kernels.attention.attention` reaches it), for IEEE float32 products.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

Array = jax.Array

# The log-sum-exp of a query with no allowed key (kernels/attention.py's _EMPTY_LSE).
EMPTY_LSE = -1e30
# Triton needs every block dimension to be a power of two, and tl.dot every matmul
# dimension ≥ 16: blocks, head dims and value dims are padded up to that.
MIN_BLOCK = 16
# The default query and key block cap, until GPU timings choose better ones.
MAX_BLOCK = 64
# Matmul precisions that `jax.default_matmul_precision` spells as full float32.
_FLOAT32_SETTINGS = ("highest", "float32", "F32_F32_F32")


@dataclasses.dataclass(frozen=True)
class _Band:
    """Everything static about one call: the band, the blocks and how the kernels run."""

    lo: int
    hi: int
    exclude_self: bool
    segment: int | None
    length: int  # L before padding: positions at or past it are neither keys nor queries
    block_q: int
    block_k: int
    precision: jax.lax.Precision | None
    interpret: bool


# ------------------------------------------------------------------------------------------
# Pieces shared by the three kernels (traced inside them).


def _dot(a: Array, b: Array, band: _Band, contract: tuple[int, int]) -> Array:
    """2-D matmul contracting a's axis ``contract[0]`` with b's ``contract[1]``, in float32."""
    return jax.lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                               precision=band.precision, preferred_element_type=jnp.float32)


def _div(x: Array, divisor: int) -> Array:
    """x // divisor for non-negative int x, in x's dtype (Triton lowers lax.div directly)."""
    return jax.lax.div(x, jnp.asarray(divisor, x.dtype))


def _positions(first: Array, count: int, axis: int) -> Array:
    """int32 first … first + count − 1 along ``axis`` of a 2-D [count, 1] or [1, count]."""
    shape = (count, 1) if axis == 0 else (1, count)
    return first + jax.lax.broadcasted_iota(jnp.int32, shape, axis)


def _allowed(band: _Band, query_position: Array, key_position: Array,
             key_valid: Array) -> Array:
    """Bool [bq, bk]: query_position [bq, 1] may attend key_position [1, bk]."""
    offset = key_position - query_position
    mask = (offset >= band.lo) & (offset <= band.hi) & key_valid
    mask &= (query_position < band.length) & (key_position < band.length)
    if band.exclude_self:
        mask &= offset != 0
    if band.segment is not None:
        mask &= _div(query_position, band.segment) == _div(key_position, band.segment)
    return mask


def _block_range(first: Array, last: Array, block: int, length: int) -> tuple[Array, Array]:
    """[begin, end) of the blocks of ``block`` rows that positions first … last touch.

    Clipped to [0, length): a band reaching past either end of the sequence visits no block
    of padding.
    """
    first = jnp.minimum(jnp.maximum(first, 0), length)
    stop = jnp.minimum(jnp.maximum(last + 1, 0), length)
    return _div(first, block), _div(stop + block - 1, block)


def _probabilities(band, q, k, lse, query_position, key_position, key_valid):
    """P = exp(q kᵀ − lse) where allowed, exactly 0 elsewhere: [bq, bk] float32."""
    mask = _allowed(band, query_position, key_position, key_valid)
    return jnp.exp(jnp.where(mask, _dot(q, k, band, (1, 1)), -jnp.inf) - lse)


# ------------------------------------------------------------------------------------------
# Kernels. Refs hold one group: q rows [block_q, D] or [Lp, D]; valid [Lp] int32.


def _forward_kernel(q_ref, k_ref, v_ref, valid_ref, out_ref, lse_ref, *, band: _Band):
    block_q, block_k = band.block_q, band.block_k
    first_query = pl.program_id(0) * block_q
    query_position = _positions(first_query, block_q, 0)
    q = q_ref[...]

    def visit_key_block(block, carry):
        acc, row_max, row_sum = carry
        first_key = pl.multiple_of(block * block_k, block_k)
        keys = pl.ds(first_key, block_k)
        key_position = _positions(first_key, block_k, 1)
        mask = _allowed(band, query_position, key_position, valid_ref[keys][None, :] != 0)
        logits = jnp.where(mask, _dot(q, k_ref[keys, :], band, (1, 1)), -jnp.inf)
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
        # A row with no allowed key so far keeps max −inf; shift it by 0 so that
        # exp(−inf − shift) is 0, never exp(−inf + inf) = NaN.
        shift = jnp.where(new_max == -jnp.inf, 0.0, new_max)
        weights = jnp.exp(logits - shift[:, None])
        rescale = jnp.exp(row_max - shift)
        v = v_ref[keys, :]
        acc = rescale[:, None] * acc + _dot(weights.astype(v.dtype), v, band, (1, 0))
        return acc, new_max, rescale * row_sum + jnp.sum(weights, axis=1)

    begin, end = _block_range(first_query + band.lo, first_query + block_q - 1 + band.hi,
                              block_k, band.length)
    init = (jnp.zeros((block_q, out_ref.shape[-1]), jnp.float32),
            jnp.full((block_q,), -jnp.inf, jnp.float32), jnp.zeros((block_q,), jnp.float32))
    acc, row_max, row_sum = jax.lax.fori_loop(begin, end, visit_key_block, init)
    has_keys = row_sum > 0  # the maximum's own weight is 1
    safe_sum = jnp.where(has_keys, row_sum, 1.0)
    out_ref[...] = (acc / safe_sum[:, None]).astype(out_ref.dtype)
    lse_ref[...] = jnp.where(has_keys, row_max + jnp.log(safe_sum), EMPTY_LSE)


def _dq_kernel(q_ref, k_ref, v_ref, valid_ref, dout_ref, lse_ref, delta_ref, dq_ref, *,
               band: _Band):
    block_q, block_k = band.block_q, band.block_k
    first_query = pl.program_id(0) * block_q
    query_position = _positions(first_query, block_q, 0)
    q, dout = q_ref[...], dout_ref[...]
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]

    def visit_key_block(block, dq):
        first_key = pl.multiple_of(block * block_k, block_k)
        keys = pl.ds(first_key, block_k)
        k = k_ref[keys, :]
        probs = _probabilities(band, q, k, lse, query_position,
                               _positions(first_key, block_k, 1),
                               valid_ref[keys][None, :] != 0)
        dlogits = probs * (_dot(dout, v_ref[keys, :], band, (1, 1)) - delta)
        return dq + _dot(dlogits.astype(k.dtype), k, band, (1, 0))

    begin, end = _block_range(first_query + band.lo, first_query + block_q - 1 + band.hi,
                              block_k, band.length)
    dq = jax.lax.fori_loop(begin, end, visit_key_block,
                           jnp.zeros((block_q, dq_ref.shape[-1]), jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, valid_ref, dout_ref, lse_ref, delta_ref, dk_ref, dv_ref,
                *, band: _Band):
    block_q, block_k = band.block_q, band.block_k
    first_key = pl.program_id(0) * block_k
    key_position = _positions(first_key, block_k, 1)
    key_valid = valid_ref[...][None, :] != 0
    k, v = k_ref[...], v_ref[...]

    def visit_query_block(block, carry):
        dk, dv = carry
        first_query = pl.multiple_of(block * block_q, block_q)
        rows = pl.ds(first_query, block_q)
        q, dout = q_ref[rows, :], dout_ref[rows, :]
        probs = _probabilities(band, q, k, lse_ref[rows][:, None],
                               _positions(first_query, block_q, 0), key_position,
                               key_valid)
        dv = dv + _dot(probs.astype(dout.dtype), dout, band, (0, 0))
        dlogits = probs * (_dot(dout, v, band, (1, 1)) - delta_ref[rows][:, None])
        return dk + _dot(dlogits.astype(q.dtype), q, band, (0, 0)), dv

    # Query i reaches key j iff lo ≤ j − i ≤ hi, i.e. j − hi ≤ i ≤ j − lo.
    begin, end = _block_range(first_key - band.hi, first_key + block_k - 1 - band.lo,
                              block_q, band.length)
    init = (jnp.zeros((block_k, dk_ref.shape[-1]), jnp.float32),
            jnp.zeros((block_k, dv_ref.shape[-1]), jnp.float32))
    dk, dv = jax.lax.fori_loop(begin, end, visit_query_block, init)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ------------------------------------------------------------------------------------------
# pallas_call wrappers: arrays already padded, [Lp, G, F] with Lp a multiple of both blocks,
# F a power of two ≥ 16; valid [Lp, Gv] int32 with group g reading column g // (G / Gv).


def _compiler_params(*arrays):
    # Triton's, whatever the default backend, so that a CPU can lower the kernels for a GPU
    # (tests/kernels/test_attention_routing.py); a TPU would take Mosaic's defaults.
    if jax.default_backend() == "tpu":
        return None
    # Heuristics of jax.experimental.pallas.ops.gpu.attention; a GPU session tunes them.
    widest = max(x.shape[-1] for x in arrays)
    return plgpu.CompilerParams(num_warps=4 if widest <= 64 else 8, num_stages=2)


def _blocked(block: int, features: int | None = None) -> pl.BlockSpec:
    """Program (t, g) sees rows t·block … of group g: [block, F], or [block] (features None)."""
    if features is None:
        return pl.BlockSpec((block, pl.squeezed), lambda t, g: (t, g))
    return pl.BlockSpec((block, pl.squeezed, features), lambda t, g: (t, g, 0))


def _whole(rows: int, features: int | None = None) -> pl.BlockSpec:
    """Program (t, g) sees every row of group g: [rows, F], or [rows] (features None)."""
    if features is None:
        return pl.BlockSpec((rows, pl.squeezed), lambda t, g: (0, g))
    return pl.BlockSpec((rows, pl.squeezed, features), lambda t, g: (0, g, 0))


def _valid_spec(rows: int, per_column: int, blocked: bool) -> pl.BlockSpec:
    """Program (t, g) sees column g // per_column of valid: block t of ``rows``, or all."""
    return pl.BlockSpec((rows, pl.squeezed),
                        lambda t, g: (t if blocked else 0, _div(g, per_column)))


def _forward(q, k, v, valid, band: _Band):
    rows, groups, head_dim = q.shape
    value_dim, block = v.shape[-1], band.block_q
    return pl.pallas_call(
        functools.partial(_forward_kernel, band=band),
        out_shape=(jax.ShapeDtypeStruct(v.shape, v.dtype),
                   jax.ShapeDtypeStruct((rows, groups), jnp.float32)),
        grid=(rows // block, groups),
        in_specs=[_blocked(block, head_dim), _whole(rows, head_dim), _whole(rows, value_dim),
                  _valid_spec(rows, groups // valid.shape[1], blocked=False)],
        out_specs=[_blocked(block, value_dim), _blocked(block)],
        interpret=band.interpret,
        compiler_params=None if band.interpret else _compiler_params(q, v),
        name="band_attention_forward",
    )(q, k, v, valid)


def _backward(q, k, v, valid, dout, lse, delta, band: _Band):
    rows, groups, head_dim = q.shape
    value_dim = v.shape[-1]
    per_column = groups // valid.shape[1]
    compiler_params = None if band.interpret else _compiler_params(q, v)

    block = band.block_q
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, band=band),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        grid=(rows // block, groups),
        in_specs=[_blocked(block, head_dim), _whole(rows, head_dim), _whole(rows, value_dim),
                  _valid_spec(rows, per_column, blocked=False), _blocked(block, value_dim),
                  _blocked(block), _blocked(block)],
        out_specs=_blocked(block, head_dim),
        interpret=band.interpret,
        compiler_params=compiler_params,
        name="band_attention_dq",
    )(q, k, v, valid, dout, lse, delta)

    block = band.block_k
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, band=band),
        out_shape=(jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)),
        grid=(rows // block, groups),
        in_specs=[_whole(rows, head_dim), _blocked(block, head_dim), _blocked(block, value_dim),
                  _valid_spec(block, per_column, blocked=True), _whole(rows, value_dim),
                  _whole(rows), _whole(rows)],
        out_specs=[_blocked(block, head_dim), _blocked(block, value_dim)],
        interpret=band.interpret,
        compiler_params=compiler_params,
        name="band_attention_dkv",
    )(q, k, v, valid, dout, lse, delta)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _band_attention(q, k, v, valid, band):
    return _forward(q, k, v, valid, band)


def _band_attention_forward(q, k, v, valid, band):
    out, lse = _forward(q, k, v, valid, band)
    return (out, lse), (q, k, v, valid, out, lse)


def _band_attention_backward(band, residuals, cotangents):
    q, k, v, valid, out, lse = residuals
    dout, dlse = cotangents
    delta = (jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
             - dlse.astype(jnp.float32))
    dq, dk, dv = _backward(q, k, v, valid, dout.astype(out.dtype), lse, delta, band)
    return dq, dk, dv, None


_band_attention.defvjp(_band_attention_forward, _band_attention_backward)


# ------------------------------------------------------------------------------------------
# Public entry points.


def resolve_precision(precision=None) -> jax.lax.Precision | None:
    """The matmul precision the kernels use: ``precision``, else JAX's default setting.

    None (the default) reads ``jax.default_matmul_precision``: "highest" / "float32" give
    `jax.lax.Precision.HIGHEST` (IEEE float32 products on a GPU), anything else None (TF32 for
    float32 on NVIDIA GPUs). Strings are read as `jax.lax.Precision` names.
    """
    if precision is None:
        setting = jax.config.jax_default_matmul_precision
        return jax.lax.Precision.HIGHEST if setting in _FLOAT32_SETTINGS else None
    if isinstance(precision, str):
        precision = jax.lax.Precision(precision)
    return None if precision == jax.lax.Precision.DEFAULT else jax.lax.Precision(precision)


def default_block(width: int, length: int) -> int:
    """Query and key block for a band of ``width`` = hi − lo + 1 keys over ``length`` rows.

    No bigger than the band (a block of B queries computes B·(B + width − 1) logits for B·width
    useful ones) nor the sequence, a power of two in [MIN_BLOCK, MAX_BLOCK].
    """
    return min(MAX_BLOCK, max(MIN_BLOCK, pl.next_power_of_2(min(width, length))))


def _pad_to(x: Array, rows: int, features: int | None) -> Array:
    """Zero-pads axis 0 to ``rows`` and the last axis to ``features`` (None: unchanged)."""
    widths = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    if features is not None:
        widths[-1] = (0, features - x.shape[-1])
    return jnp.pad(x, widths)


def band_attention(q: Array, k: Array, v: Array, valid: Array, *, lo: int, hi: int,
                   exclude_self: bool = False, segment: int | None = None,
                   block_q: int | None = None, block_k: int | None = None, precision=None,
                   interpret: bool | None = None) -> tuple[Array, Array]:
    """Softmax attention of query i to the allowed keys j with lo ≤ j − i ≤ hi, per group.

    Differentiable in q, k and v (flash-style kernels, custom VJP), the log-sum-exp included.

    Args:
      q: [L, G, D] queries (sequence first, G groups such as batch × heads), already
        multiplied by the softmax scale; float32, bfloat16 or float16.
      k: [L, G, D] keys.
      v: [L, G, E] values.
      valid: bool [L, Gv], G a multiple of Gv: group g reads column g // (G / Gv) (so
        [L, B] serves groups ordered batch × heads). False for keys nobody may attend.
      lo, hi: the band's offsets (static). Any integers; an empty band (lo > hi once clipped
        to the sequence) gives zeros.
      exclude_self: also forbid j = i.
      segment: if given, also require ⌊i/segment⌋ = ⌊j/segment⌋.
      block_q, block_k: queries and keys per block, powers of two ≥ 16 (Triton); by default
        `default_block` of the band.
      precision: of the matmuls, see `resolve_precision`.
      interpret: run the kernels in Pallas' interpreter; by default True exactly when JAX's
        default backend is a CPU.

    Returns:
      out: [L, G, E] in the dtype of ``v``; zeros for a query with no allowed key.
      lse: [L, G] float32 log Σ_allowed exp(q_i·k_j); `EMPTY_LSE` where no key is allowed.

    Raises:
      ValueError: on shapes that do not match, or blocks that are not powers of two ≥ 16.
    """
    length, groups, head_dim = q.shape if q.ndim == 3 else (None,) * 3
    if not (q.ndim == 3 and k.shape == q.shape and v.ndim == 3 and v.shape[:2] == q.shape[:2]
            and valid.ndim == 2 and valid.shape[0] == length and valid.shape[1] > 0
            and groups % valid.shape[1] == 0):
        raise ValueError(f"band_attention: shapes q {q.shape}, k {k.shape}, v {v.shape}, valid "
                         f"{valid.shape} do not match [L, G, D], [L, G, D], [L, G, E], [L, Gv] "
                         f"with G a multiple of Gv")
    for name, block in (("block_q", block_q), ("block_k", block_k)):
        if block is not None and (block < MIN_BLOCK or block & (block - 1)):
            raise ValueError(f"band_attention: {name} must be a power of two >= {MIN_BLOCK}, "
                             f"got {block}")
    lo, hi = max(int(lo), 1 - length), min(int(hi), length - 1)
    value_dim = v.shape[-1]
    if lo > hi:
        return (jnp.zeros(v.shape, v.dtype), jnp.full((length, groups), EMPTY_LSE, jnp.float32))

    width = hi - lo + 1
    block_q = block_q or default_block(width, length)
    block_k = block_k or default_block(width, length)
    padded = -(-length // max(block_q, block_k)) * max(block_q, block_k)
    band = _Band(lo=lo, hi=hi, exclude_self=bool(exclude_self),
                 segment=None if segment is None else int(segment), length=length,
                 block_q=block_q, block_k=block_k, precision=resolve_precision(precision),
                 interpret=jax.default_backend() == "cpu" if interpret is None else interpret)
    features = [max(MIN_BLOCK, pl.next_power_of_2(d)) for d in (head_dim, value_dim)]
    out, lse = _band_attention(_pad_to(q, padded, features[0]), _pad_to(k, padded, features[0]),
                               _pad_to(v, padded, features[1]),
                               _pad_to(valid.astype(jnp.int32), padded, None), band)
    return out[:length, :, :value_dim], lse[:length]


def batched_band_attention(q: Array, k: Array, v: Array, key_valid: Array, **band) -> tuple[
        Array, Array]:
    """`band_attention` on `kernels.attention`'s layout: any batch axes between L and F.

    Args:
      q, k, v: [L, *batch, D], [L, *batch, D], [L, *batch, E].
      key_valid: bool [L, *batch', 1], batch' broadcastable to batch.
      **band: the keyword arguments of `band_attention` (lo, hi, …).

    Returns:
      out: [L, *batch, E] and lse: [L, *batch].
    """
    length, batch = q.shape[0], q.shape[1:-1]
    flat = [x.reshape(length, -1, x.shape[-1]) for x in (q, k, v)]  # [L, G, F]
    valid = key_valid[..., 0]
    valid_batch = valid.shape[1:]
    # Keys valid per leading batch axes only (trailing axes such as heads broadcast): pass
    # those columns and let group g read column g // (G / Gv), instead of materialising
    # [L, G] in memory.
    leading = len(valid_batch)
    while leading and valid_batch[leading - 1] == 1:
        leading -= 1
    if len(valid_batch) == len(batch) and valid_batch[:leading] == batch[:leading]:
        valid = valid.reshape(length, -1)
    else:
        valid = jnp.broadcast_to(valid, (length, *batch)).reshape(length, -1)
    out, lse = band_attention(*flat, valid, **band)
    return out.reshape(length, *batch, v.shape[-1]), lse.reshape(length, *batch)
