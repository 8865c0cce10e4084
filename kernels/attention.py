"""Sparse self-attention patterns and their efficient implementations (docs/sparse_attention.md).

Glossary of shapes: B batch, N length, H heads, D head dim (E for values). Public arrays are
``(B, N, H, D)`` like `jax.nn.dot_product_attention`; the kernels below work sequence-first,
``(N, B, H, D)``, so that cutting the sequence into blocks or residue groups is a reshape.

A pattern is a frozen dataclass (hashable, so usable as a static jit argument) whose
``allows(i, j)`` is its index set A(i) ∋ j (docs/sparse_attention.md §2: the posts' intent, not
the reference-code bugs of §7):

  ==================== =====================================================================
  pattern              query i may attend key j iff
  ==================== =====================================================================
  Full()               always
  Atrous(r)            (i − j) mod r = 0
  Local(k, d)          |i − j| ≤ k·d and (i − j) mod d = 0
  Sparse(r)            |i − j| < r or (i − j) mod r = 0 (each key once: self is not doubled)
  Strided(l)           j ≤ i and (i − j ≤ l or (i − j) mod l = 0)
  Fixed(l, c)          j ≤ i and (⌊j/l⌋ = ⌊i/l⌋ or j mod l ≥ l − c)
  ==================== =====================================================================

`Strided` and `Fixed` are the Sparse Transformer's patterns, which are causal by definition
(arXiv 1904.10509: all its patterns are causal; the strided band {max(0, i−l) … i} is written
one-sided), so their index sets include j ≤ i and ``causal`` changes nothing for them. The
post's own patterns are bidirectional (docs/sparse_attention.md §1.2) and ``causal=True``
adds j ≤ i.

`attention` never builds an (N, N) array, not even for `Full`: every pattern is computed as
query blocks against windows of key blocks, a few MiB of logits at a time in a `lax.map`
whose chunks are recomputed in the backward pass (`jax.checkpoint`), so memory is O(N).

* Atrous: a layout transform. Position t·r + g goes to residue group g at slot t; each group
  is a short dense sequence, and (i − j) mod r = 0 holds exactly within a group, so every
  computed logit is used (mask-based kernels waste 1 − 1/r of theirs).
* Local: blocked banded attention. Query blocks of B rows attend to one contiguous key
  window of B + 2k keys built from a few shifted block views; a dilation d first splits
  the sequence into its d residue groups, inside which the band is contiguous. Causal
  windows are one-sided, B + k keys.
* Sparse, Strided: a band part and a residue-group part, each returning its output and its
  log-sum-exp, merged exactly as in flash attention. The key both parts would count (offset 0
  for Sparse; offsets 0 and l for Strided) is masked out of the residue part.
* Fixed: block-diagonal causal attention plus attention to the summary columns of earlier
  blocks (those of the query's own block are already in the diagonal block), merged the
  same way.
* Full: dense, in query blocks (memory-efficient attention).

On CPU (``implementation="auto"``, the default) the bands of Local, Sparse and Strided and
the dense groups of Full and Atrous (a band as wide as the group) run instead in the C++
kernel `kernels.cpu.band_attention` on the same sequence-first layout (Full on the
caller's batch-first layout, which the kernel also reads); the XLA code above is what GPUs
and TPUs run, and the tests hold the two to each other and to the reference.

A query with no allowed key (padding, causal masks) gets a zero output and zero gradients.
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels.cpu import band_attention as cpu_band
from kernels.pallas import band_attention as pallas_band

Array = jax.Array

# The log-sum-exp of a query with no allowed key. Finite, so that merging two empty parts
# gives exp(_EMPTY_LSE − _EMPTY_LSE) = 1 times a zero output instead of exp(−inf + inf) = NaN.
_EMPTY_LSE = -1e30


# ------------------------------------------------------------------------------------------
# Patterns.


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Full:
    """Every query attends every key: A(i) = {0 … N−1} (docs/sparse_attention.md §1.2)."""

    def allows(self, i, j) -> Array:
        """Bool array, the broadcast of int arrays ``i`` (query) and ``j`` (key)."""
        i, j = jnp.asarray(i), jnp.asarray(j)
        return jnp.ones(jnp.broadcast_shapes(i.shape, j.shape), bool)


@dataclasses.dataclass(frozen=True)
class Atrous:
    """Atrous (dilated) self-attention: A(i) = {j : (i − j) mod rate = 0}.

    The post's Atrous pattern, docs/sparse_attention.md §1.2.
    """

    rate: int

    def __post_init__(self):
        _check_positive_int("Atrous rate", self.rate)

    def allows(self, i, j) -> Array:
        """Bool array, the broadcast of int arrays ``i`` (query) and ``j`` (key)."""
        return (jnp.asarray(i) - jnp.asarray(j)) % self.rate == 0


@dataclasses.dataclass(frozen=True)
class Local:
    """Local self-attention: A(i) = {i + m·dilation : |m| ≤ radius} ∩ [0, N).

    The post's Local pattern, docs/sparse_attention.md §1.2.
    """

    radius: int
    dilation: int = 1

    def __post_init__(self):
        _check_positive_int("Local radius", self.radius)
        _check_positive_int("Local dilation", self.dilation)

    def allows(self, i, j) -> Array:
        """Bool array, the broadcast of int arrays ``i`` (query) and ``j`` (key)."""
        offset = jnp.asarray(i) - jnp.asarray(j)
        return (jnp.abs(offset) <= self.radius * self.dilation) & (offset % self.dilation == 0)


@dataclasses.dataclass(frozen=True)
class Sparse:
    """The post's Sparse self-attention: local |i − j| < rate plus atrous (i − j) mod rate = 0.

    The union of docs/sparse_attention.md §1.2 with the local part undilated and self counted
    once (the reference code dilates the local part by ``rate`` and counts self twice,
    docs/sparse_attention.md §7). |i − j| = rate
    is a multiple of the rate, so "< rate" and the post's "≤ rate" give the same set.
    """

    rate: int

    def __post_init__(self):
        _check_positive_int("Sparse rate", self.rate)

    def allows(self, i, j) -> Array:
        """Bool array, the broadcast of int arrays ``i`` (query) and ``j`` (key)."""
        offset = jnp.asarray(i) - jnp.asarray(j)
        return (jnp.abs(offset) < self.rate) | (offset % self.rate == 0)


@dataclasses.dataclass(frozen=True)
class Strided:
    """The Sparse Transformer's strided pattern (docs/sparse_attention.md §1.3), causal.

    A(i) = {max(0, i − stride) … i} ∪ {j ≤ i : (i − j) mod stride = 0}.
    """

    stride: int

    def __post_init__(self):
        _check_positive_int("Strided stride", self.stride)

    def allows(self, i, j) -> Array:
        """Bool array, the broadcast of int arrays ``i`` (query) and ``j`` (key)."""
        offset = jnp.asarray(i) - jnp.asarray(j)
        return (offset >= 0) & ((offset <= self.stride) | (offset % self.stride == 0))


@dataclasses.dataclass(frozen=True)
class Fixed:
    """The Sparse Transformer's fixed pattern (docs/sparse_attention.md §1.3), causal.

    A(i) = {j ≤ i : ⌊j/stride⌋ = ⌊i/stride⌋} ∪ {j ≤ i : j mod stride ∈ {stride − summary …
    stride − 1}}: the query's own block, plus the last ``summary`` columns of every block.
    """

    stride: int
    summary: int

    def __post_init__(self):
        _check_positive_int("Fixed stride", self.stride)
        _check_positive_int("Fixed summary", self.summary)
        if self.summary > self.stride:
            raise ValueError(
                f"Fixed summary must lie in [1, stride={self.stride}], got {self.summary}")

    def allows(self, i, j) -> Array:
        """Bool array, the broadcast of int arrays ``i`` (query) and ``j`` (key)."""
        i, j = jnp.asarray(i), jnp.asarray(j)
        same_block = i // self.stride == j // self.stride
        summary_column = j % self.stride >= self.stride - self.summary
        return (j <= i) & (same_block | summary_column)


Pattern = Full | Atrous | Local | Sparse | Strided | Fixed
IMPLEMENTATIONS = ("auto", "xla", "cpu_kernel", "pallas", "cudnn")
_PATTERNS = (Full, Atrous, Local, Sparse, Strided, Fixed)


# ------------------------------------------------------------------------------------------
# Argument checks: shapes are static, so these run before anything is traced.


def _validate(q, k, v, pattern, key_mask) -> None:
    if not isinstance(pattern, _PATTERNS):
        raise TypeError(
            f"pattern must be one of {[p.__name__ for p in _PATTERNS]}, got {pattern!r}")
    if q.ndim != 4:
        raise ValueError(f"q must have shape (batch, length, heads, head_dim), got {q.shape}")
    if not all(jnp.issubdtype(x.dtype, jnp.floating) for x in (q, k, v)):
        raise ValueError(f"q, k, v must be floating point, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape}, got {k.shape}")
    if v.ndim != 4 or v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"v must have shape (batch, length, heads, value_dim) = {k.shape[:3]} + (E,) to "
            f"match k {k.shape}, got {v.shape}")
    if key_mask is not None and np.shape(key_mask) != q.shape[:2]:
        raise ValueError(
            f"key_mask must have shape (batch, length) = {q.shape[:2]} to match q {q.shape}, "
            f"got {np.shape(key_mask)}")


def _is_causal(pattern: Pattern, causal: bool) -> bool:
    return causal or isinstance(pattern, (Strided, Fixed))


# ------------------------------------------------------------------------------------------
# Building blocks. Inside the kernel arrays are sequence-first, [L, *batch, F], with batch
# (B, H) or (groups, B, H): cutting the sequence into blocks or residue groups is then a
# reshape, and blocks are moved next to F once, right before their matmuls. Key validity
# rides along as a bool [L, *batch', 1] (batch' broadcastable to batch) through the same
# layout helpers.

# Logits per iteration of the chunked loops. A chunk's temporaries then stay in cache: on a
# 2-core CPU, Local(64) at N = 8192 ran fwd+bwd about 1.5x faster in chunks of a few MiB
# than in one pass over the whole sequence (measured).
_CHUNK_BYTES = 2 << 20
# Dense attention over long groups (Atrous, Full) cut into query blocks: bigger blocks made
# bigger matmuls, and 8 MiB ran Atrous(8) fwd+bwd about 15% faster than 2 MiB (measured).
_DENSE_CHUNK_BYTES = 8 << 20


def _attend(q: Array, k: Array, v: Array, mask: Array) -> tuple[Array, Array]:
    """Masked softmax attention over the last two axes, with its log-sum-exp.

    Logits are laid out keys-major, [..., W, Bq]: XLA:CPU's batched matmul ran the
    query-key product about twice as fast this way round (measured).

    Args:
      q: [..., Bq, D] queries, already multiplied by the softmax scale.
      k: [..., W, D] keys.
      v: [..., W, E] values.
      mask: bool, broadcastable to [..., W, Bq]; True where the query may attend the key.

    Returns:
      out: [..., Bq, E] in the dtype of ``v``; zeros for a query with no allowed key.
      lse: [..., Bq] float32 log Σ_allowed exp(logit); `_EMPTY_LSE` where no key is allowed.
    """
    logits = jnp.einsum("...qd,...kd->...kq", q, k, preferred_element_type=jnp.float32)
    logits = jnp.where(mask, logits, -jnp.inf)
    # The shift only guards exp against overflow, it cancels in out and lse: no gradient.
    shift = jnp.max(logits, axis=-2, keepdims=True)
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
    weights = jnp.exp(logits - shift)  # exactly 0 where masked
    total = jnp.sum(weights, axis=-2, keepdims=True)
    # A where() over log(0) would leak NaN into the gradient; divide and log by a safe total.
    has_keys = total > 0
    safe_total = jnp.where(has_keys, total, 1.0)
    out = jnp.einsum("...kq,...ke->...qe", weights.astype(v.dtype), v,
                     preferred_element_type=jnp.float32)
    out = out / jnp.swapaxes(safe_total, -1, -2)
    lse = jnp.where(has_keys, shift + jnp.log(safe_total), _EMPTY_LSE)
    return out.astype(v.dtype), lse[..., 0, :]


def _merge(parts: list[tuple[Array, Array]]) -> Array:
    """Exact softmax over the union of disjoint key sets, from each set's (out, lse)."""
    total_lse = functools.reduce(jnp.logaddexp, [lse for _, lse in parts])
    return sum(out * jnp.exp(lse - total_lse)[..., None].astype(out.dtype)
               for out, lse in parts)


def _pad_rows(x: Array, before: int, after: int) -> Array:
    """Pads axis 0 with zeros (False for bool); a negative ``after`` cuts rows instead."""
    if after < 0:
        x, after = x[:x.shape[0] + after], 0
    return jnp.pad(x, [(before, after)] + [(0, 0)] * (x.ndim - 1))


def _to_blocks(x: Array, block: int, num_blocks: int, before: int = 0) -> Array:
    """[L, *batch, F] → [num_blocks, *batch, block, F], after ``before`` rows of padding."""
    x = _pad_rows(x, before, num_blocks * block - before - x.shape[0])
    x = x.reshape(num_blocks, block, *x.shape[1:])
    return jnp.moveaxis(x, 1, -2)


def _from_blocks(x: Array, length: int) -> Array:
    """Inverse of `_to_blocks`: [T, *batch, block, F] → [length, *batch, F]."""
    x = jnp.moveaxis(x, -2, 1)
    return x.reshape(-1, *x.shape[2:])[:length]


def _to_residue_groups(x: Array, rate: int) -> Array:
    """[L, *batch, F] → [⌈L/rate⌉, rate, *batch, F]: position t·rate + g is slot t of group g.

    A reshape: groups become one more batch axis. The tail is padded with zeros (False).
    """
    slots = -(-x.shape[0] // rate)
    x = _pad_rows(x, 0, slots * rate - x.shape[0])
    return x.reshape(slots, rate, *x.shape[1:])


def _from_residue_groups(x: Array, length: int) -> Array:
    """Inverse of `_to_residue_groups`: [slots, rate, *batch, F] → [length, *batch, F]."""
    return x.reshape(-1, *x.shape[2:])[:length]


def _blockwise_attention(q_blocks, k_blocks, v_blocks, valid_blocks, block_mask: Callable, *,
                         window: int, views: int = 1, share: int = 1) -> tuple[Array, Array]:
    """Attention of query blocks to windows of key blocks, a chunk of blocks at a time.

    Query block t attends the first ``window`` keys of the concatenated key blocks
    ⌊t/share⌋ … ⌊t/share⌋ + views − 1, where ``block_mask(t)`` allows it. Each chunk is
    recomputed in the backward pass (`jax.checkpoint`), so neither pass holds more than one
    chunk of logits and the residuals are O(N).

    Args:
      q_blocks: [T, *batch, Bq, D].
      k_blocks, v_blocks: [Tk, *batch, Bk, D], [Tk, *batch, Bk, E], with Tk = T + views − 1
        when ``share`` is 1; otherwise ``views`` must be 1 and Tk = T / share.
      valid_blocks: bool [Tk, *batch', Bk, 1], batch' broadcastable to batch.
      block_mask: maps int block indices [c] to a bool [c or 1, window, Bq] keys-major mask.
      window, views, share: as above.

    Returns:
      out: [T, *batch, Bq, E] and lse: [T, *batch, Bq] as in `_attend`.
    """
    num_blocks, batch, query_block = q_blocks.shape[0], q_blocks.shape[1:-2], q_blocks.shape[-2]
    if share == 1:
        block_bytes = 4 * math.prod(batch) * window * query_block
        chunk = max(1, min(num_blocks, _CHUNK_BYTES // block_bytes))
        num_chunks = -(-num_blocks // chunk)
        q_blocks = _pad_rows(q_blocks, 0, num_chunks * chunk - num_blocks)
        k_blocks, v_blocks, valid_blocks = (
            _pad_rows(x, 0, num_chunks * chunk + views - 1 - x.shape[0])
            for x in (k_blocks, v_blocks, valid_blocks))
    else:  # one key block for `share` query blocks: a chunk is one query block
        assert views == 1 and num_blocks == share * k_blocks.shape[0], (views, share)
        chunk, num_chunks = 1, num_blocks

    def key_windows(x, first):  # [chunk, *batch, window, F]
        x = jax.lax.dynamic_slice_in_dim(x, first // share, chunk + views - 1)
        x = jnp.concatenate([x[s:s + chunk] for s in range(views)], axis=-2)
        return x[..., :window, :]

    def attend_chunk(first):
        q = jax.lax.dynamic_slice_in_dim(q_blocks, first, chunk)
        k, v, valid = (key_windows(x, first) for x in (k_blocks, v_blocks, valid_blocks))
        mask = jnp.expand_dims(block_mask(first + jnp.arange(chunk)), tuple(range(1, q.ndim - 2)))
        return _attend(q, k, v, mask & valid)

    attend_chunk = jax.checkpoint(attend_chunk, prevent_cse=False)
    out, lse = jax.lax.map(attend_chunk, jnp.arange(num_chunks) * chunk)
    return (out.reshape(-1, *out.shape[2:])[:num_blocks],
            lse.reshape(-1, *lse.shape[2:])[:num_blocks])


def _band_block_size(band: int, length: int) -> int:
    """Query block for a band of ``band`` = hi − lo + 1 keys.

    A block of B queries computes B·(B + band − 1) logits for B·band useful ones, but small
    blocks make many small matmuls, which XLA:CPU runs slowly. Measured fwd+bwd on a 2-core
    CPU at N = 8192: band 17 was fastest with B = 16; bands 65, 129 and 181 with B = 64
    (32 was as fast for 129, 128 slower everywhere).
    """
    half = -(-band // 2)
    return min(length, 64, max(16, 1 << (half - 1).bit_length()))


def _band_mask(t, *, window: int, block: int, width: int) -> Array:
    """[1, window, block]: key w of the window is in query u's band iff 0 ≤ w − u ≤ width."""
    del t  # the same in every block
    offset = jnp.arange(window)[:, None] - jnp.arange(block)[None, :]
    return ((offset >= 0) & (offset <= width))[None]


def _dispatch(implementation: str, kernel: Callable, blocked: Callable, q, k, v, key_valid):
    """``kernel(q, k, v, key_valid)`` (the CPU or Pallas kernel) or ``blocked(...)`` (XLA).

    "xla": blocked. "cpu_kernel", "pallas": kernel. "auto": the CPU kernel when the
    computation runs on a CPU and the kernel takes the arrays, blocked elsewhere
    (`jax.lax.platform_dependent` picks the branch when the platform is known, at lowering).
    """
    if implementation == "xla" or (implementation == "auto"
                                   and cpu_band.unsupported_reason(q, v) is not None):
        return blocked(q, k, v, key_valid)
    if implementation in ("cpu_kernel", "pallas"):
        return kernel(q, k, v, key_valid)
    # "auto" on a GPU was resolved by `attention` (Pallas or cuDNN); here the CPU kernel on a
    # CPU, XLA elsewhere (a TPU).
    return jax.lax.platform_dependent(q, k, v, key_valid, cpu=kernel, default=blocked)


def _band_attention(q, k, v, key_valid, *, lo: int, hi: int, implementation: str = "xla",
                    block: int | None = None) -> tuple[Array, Array]:
    """Attention of query i to the keys lo ≤ j − i ≤ hi (lo ≤ 0 ≤ hi).

    By query blocks in XLA (`_blocked_band_attention`) or by the CPU or Pallas kernel, as
    ``implementation`` says (`_dispatch`).

    Args:
      q, k, v: [L, *batch, D], [L, *batch, D], [L, *batch, E].
      key_valid: bool [L, *batch', 1].
      lo, hi: the band's offsets.
      implementation: "xla", "cpu_kernel", "pallas" or "auto" (static).
      block: the XLA path's query block B; by default `_band_block_size`.

    Returns:
      out: [L, *batch, E] and lse: [L, *batch].
    """
    length = q.shape[0]
    lo, hi = max(lo, 1 - length), min(hi, length - 1)  # offsets beyond the sequence: no key
    return _dispatch(implementation,
                     functools.partial(_kernel_band_attention, lo=lo, hi=hi,
                                       implementation=implementation),
                     functools.partial(_blocked_band_attention, lo=lo, hi=hi, block=block),
                     q, k, v, key_valid)


def _kernel_band_attention(q, k, v, key_valid, *, lo: int, hi: int,
                           implementation: str = "cpu_kernel") -> tuple[Array, Array]:
    """`_band_attention` by the CPU kernel (by Pallas for "pallas"), on the same layout."""
    if implementation == "pallas":
        return pallas_band.batched_band_attention(q, k, v, key_valid, lo=lo, hi=hi)
    length, batch = q.shape[0], q.shape[1:-1]
    flat = [x.reshape(length, -1, x.shape[-1]) for x in (q, k, v)]  # [L, G, F]
    valid = jnp.broadcast_to(key_valid[..., 0], (length, *batch)).reshape(length, -1)
    out, lse = cpu_band.band_attention(*flat, valid, lo=lo, hi=hi)
    return out.reshape(length, *batch, v.shape[-1]), lse.reshape(length, *batch)


def _blocked_band_attention(q, k, v, key_valid, *, lo: int, hi: int,
                            block: int | None = None) -> tuple[Array, Array]:
    """`_band_attention` in XLA, by query blocks.

    Query block t (rows t·B … t·B + B − 1) needs keys t·B + lo … t·B + B − 1 + hi: a window
    of W = B + hi − lo keys, cut from ⌈W/B⌉ consecutive blocks of the keys padded by −lo
    rows in front. The band is then the same [W, B] mask 0 ≤ w − u ≤ hi − lo in every block.
    Arguments and results as in `_band_attention`, with lo, hi already inside the sequence.
    """
    length = q.shape[0]
    block = block or _band_block_size(hi - lo + 1, length)
    num_blocks = -(-length // block)
    window = block + hi - lo
    views = -(-window // block)
    q_blocks = _to_blocks(q, block, num_blocks)
    k_blocks, v_blocks, valid_blocks = (_to_blocks(x, block, num_blocks + views - 1, -lo)
                                        for x in (k, v, key_valid))
    band = functools.partial(_band_mask, window=window, block=block, width=hi - lo)
    out, lse = _blockwise_attention(q_blocks, k_blocks, v_blocks, valid_blocks, band,
                                    window=window, views=views)
    return _from_blocks(out, length), _from_blocks(lse[..., None], length)[..., 0]


def _dense_query_block(slots: int, batch_size: int) -> int:
    """Queries per chunk for dense attention over ``slots`` keys (`_DENSE_CHUNK_BYTES`)."""
    parts = -(-4 * batch_size * slots * slots // _DENSE_CHUNK_BYTES)
    return -(-slots // parts)


def _residue_mask(t, *, parts: int, query_block: int, slots: int,
                  allowed_offsets: Callable) -> Array:
    """[c, slots, query_block]: query block t holds slots (t mod parts)·query_block + u."""
    query_slot = (t % parts)[:, None, None] * query_block + jnp.arange(query_block)
    key_slot = jnp.arange(slots)[:, None]
    return allowed_offsets(query_slot - key_slot)


def _residue_attention(q, k, v, key_valid, *, rate: int,
                       allowed_offsets: Callable) -> tuple[Array, Array]:
    """Dense attention inside each residue group mod ``rate`` (rate 1: the whole sequence).

    Query i and key j share a group iff (i − j) mod rate = 0, and then i − j = rate·(slot_i −
    slot_j), so every logit computed here belongs to the Atrous set: no masked-out work
    except what ``allowed_offsets`` removes on top.

    Args:
      q, k, v: [L, *batch, D], [L, *batch, D], [L, *batch, E].
      key_valid: bool [L, *batch', 1].
      rate: the number of residue groups.
      allowed_offsets: maps int slot offsets slot_i − slot_j to a bool mask.

    Returns:
      out: [L, *batch, E] and lse: [L, *batch].
    """
    length = q.shape[0]
    q, k, v, key_valid = (_to_residue_groups(x, rate) for x in (q, k, v, key_valid))
    slots = q.shape[0]
    # Keys: one block per group, [rate, *batch, slots, F]. Queries: each group cut into
    # `parts` blocks of `query_block` slots, so a chunk's logits stay small for long groups.
    k_blocks, v_blocks, valid_blocks = (jnp.moveaxis(x, 0, -2) for x in (k, v, key_valid))
    query_block = _dense_query_block(slots, math.prod(q.shape[2:-1]))
    parts = -(-slots // query_block)
    q_blocks = jnp.swapaxes(_to_blocks(q, query_block, parts), 0, 1)  # [rate, parts, …]
    q_blocks = q_blocks.reshape(rate * parts, *q_blocks.shape[2:])

    block_mask = functools.partial(_residue_mask, parts=parts, query_block=query_block,
                                   slots=slots, allowed_offsets=allowed_offsets)
    out, lse = _blockwise_attention(q_blocks, k_blocks, v_blocks, valid_blocks, block_mask,
                                    window=slots, share=parts)

    def ungroup(x):  # [rate · parts, *batch, query_block, F] → [L, *batch, F]
        x = jnp.swapaxes(x.reshape(rate, parts, *x.shape[1:]), 0, 1)
        return _from_residue_groups(_from_blocks(x, slots), length)

    return ungroup(out), ungroup(lse[..., None])[..., 0]


def _causal_mask(t, *, block: int) -> Array:
    """[1, block, block]: key w of the query's own block is allowed iff w ≤ u."""
    del t  # the same in every block
    return (jnp.arange(block)[:, None] <= jnp.arange(block)[None, :])[None]


def _causal_block_attention(q, k, v, key_valid, *, stride: int) -> tuple[Array, Array]:
    """Fixed pattern's first part: causal attention inside consecutive blocks of ``stride``."""
    length = q.shape[0]
    num_blocks = -(-length // stride)
    blocks = [_to_blocks(x, stride, num_blocks) for x in (q, k, v, key_valid)]
    causal = functools.partial(_causal_mask, block=stride)
    out, lse = _blockwise_attention(*blocks, causal, window=stride)
    return _from_blocks(out, length), _from_blocks(lse[..., None], length)[..., 0]


def _earlier_block_mask(t, *, window: int, summary: int) -> Array:
    """[c, window, 1]: summary column w (of block ⌊w/summary⌋) is allowed iff that block < t."""
    return (jnp.arange(window) // summary)[None, :, None] < t[:, None, None]


def _summary_attention(q, k, v, key_valid, *, stride: int, summary: int):
    """Fixed pattern's second part: the last ``summary`` columns of every earlier block.

    The summary columns of the query's own block are in `_causal_block_attention` already.
    """
    length = q.shape[0]
    num_blocks = -(-length // stride)

    def summary_columns(x):  # [L, *batch, F] → [1, *batch, num_blocks · summary, F]
        x = _to_blocks(x, stride, num_blocks)[..., stride - summary:, :]
        return jnp.moveaxis(x, 0, -3).reshape(1, *x.shape[1:-2], num_blocks * summary,
                                              x.shape[-1])

    out, lse = _blockwise_attention(
        _to_blocks(q, stride, num_blocks), *(summary_columns(x) for x in (k, v, key_valid)),
        functools.partial(_earlier_block_mask, window=num_blocks * summary, summary=summary),
        window=num_blocks * summary,
        share=num_blocks)
    return _from_blocks(out, length), _from_blocks(lse[..., None], length)[..., 0]


# ------------------------------------------------------------------------------------------
# One function per pattern: [N, B, H, D] arrays (q pre-scaled), key_valid [N, B, 1, 1].


def _any_offset(offset):
    return jnp.ones(offset.shape, bool)


def _nonnegative_offset(offset):
    return offset >= 0


def _grouped_dense_attention(q, k, v, key_valid, *, rate: int, causal: bool,
                             implementation: str) -> Array:
    """Dense attention inside each residue group mod ``rate`` (rate 1: the whole sequence).

    In XLA by `_residue_attention`; by the CPU or Pallas kernel as a band as wide as the
    groups, on the same residue layout (`_dispatch` chooses).
    """
    allowed = _nonnegative_offset if causal else _any_offset
    blocked = functools.partial(_residue_attention, rate=rate, allowed_offsets=allowed)

    def kernel(q, k, v, key_valid):
        length = q.shape[0]
        grouped = [_to_residue_groups(x, rate) for x in (q, k, v, key_valid)]
        slots = grouped[0].shape[0]
        out, lse = _kernel_band_attention(*grouped, lo=1 - slots,
                                          hi=0 if causal else slots - 1,
                                          implementation=implementation)
        return (_from_residue_groups(out, length),
                _from_residue_groups(lse[..., None], length)[..., 0])

    return _dispatch(implementation, kernel, blocked, q, k, v, key_valid)[0]


def _pallas_residue_band(q, k, v, key_valid, *, rate: int, hi: int | None,
                         exclude_self: bool = False) -> tuple[Array, Array]:
    """Pallas: slot offsets slot_j − slot_i ≤ hi (None: any) inside each residue group.

    The strided parts of Sparse and Strided; ``exclude_self`` drops slot offset 0.
    """
    length = q.shape[0]
    grouped = [_to_residue_groups(x, rate) for x in (q, k, v, key_valid)]
    slots = grouped[0].shape[0]
    out, lse = pallas_band.batched_band_attention(
        *grouped, lo=1 - slots, hi=slots - 1 if hi is None else hi, exclude_self=exclude_self)
    return (_from_residue_groups(out, length),
            _from_residue_groups(lse[..., None], length)[..., 0])


def _full(q, k, v, key_valid, pattern: Full, causal: bool, implementation: str):
    del pattern
    return _grouped_dense_attention(q, k, v, key_valid, rate=1, causal=causal,
                                    implementation=implementation)


def _atrous(q, k, v, key_valid, pattern: Atrous, causal: bool, implementation: str):
    return _grouped_dense_attention(q, k, v, key_valid, rate=pattern.rate, causal=causal,
                                    implementation=implementation)


def _local(q, k, v, key_valid, pattern: Local, causal: bool, implementation: str):
    # Dilation d: inside each residue group mod d the band is contiguous, of radius k.
    length, d = q.shape[0], pattern.dilation
    q, k, v, key_valid = (_to_residue_groups(x, d) for x in (q, k, v, key_valid))
    out, _ = _band_attention(q, k, v, key_valid, lo=-pattern.radius,
                             hi=0 if causal else pattern.radius,
                             implementation=implementation)
    return _from_residue_groups(out, length)


def _sparse(q, k, v, key_valid, pattern: Sparse, causal: bool, implementation: str):
    near = pattern.rate - 1
    band = _band_attention(q, k, v, key_valid, lo=-near, hi=0 if causal else near,
                           implementation=implementation)
    # Offset 0 (self) is in the band already; every other multiple of the rate is not.
    if implementation == "pallas":
        strided = _pallas_residue_band(q, k, v, key_valid, rate=pattern.rate,
                                       hi=-1 if causal else None, exclude_self=not causal)
    else:
        far = (lambda o: o > 0) if causal else (lambda o: o != 0)
        strided = _residue_attention(q, k, v, key_valid, rate=pattern.rate,
                                     allowed_offsets=far)
    return _merge([band, strided])


def _strided(q, k, v, key_valid, pattern: Strided, causal: bool, implementation: str):
    del causal  # causal by definition
    band = _band_attention(q, k, v, key_valid, lo=-pattern.stride, hi=0,
                           implementation=implementation)
    # Offsets 0 and stride (slot offsets 0 and 1) are in the band already.
    if implementation == "pallas":
        strided = _pallas_residue_band(q, k, v, key_valid, rate=pattern.stride, hi=-2)
    else:
        strided = _residue_attention(q, k, v, key_valid, rate=pattern.stride,
                                     allowed_offsets=lambda o: o >= 2)
    return _merge([band, strided])


def _fixed(q, k, v, key_valid, pattern: Fixed, causal: bool, implementation: str):
    del causal  # causal by definition
    if implementation == "pallas":  # the summary columns below stay XLA: not a band
        own_block = pallas_band.batched_band_attention(
            q, k, v, key_valid, lo=1 - pattern.stride, hi=0, segment=pattern.stride)
    else:
        own_block = _causal_block_attention(q, k, v, key_valid, stride=pattern.stride)
    summaries = _summary_attention(q, k, v, key_valid, stride=pattern.stride,
                                   summary=pattern.summary)
    return _merge([own_block, summaries])


_IMPLEMENTATIONS = {Full: _full, Atrous: _atrous, Local: _local, Sparse: _sparse,
                    Strided: _strided, Fixed: _fixed}


# The patterns whose every part the CPU kernel computes: on a CPU they run batch-first.
_KERNEL_PATTERNS = (Full, Atrous, Local)


def _batch_first(q, k, v, key_mask, pattern: Pattern, causal: bool,
                 implementation: str) -> Array:
    """`Full`, `Atrous` or `Local` on the caller's [B, N, H, D] layout (q pre-scaled).

    The CPU kernel takes leading axes as more groups, and a residue group is a reshape of
    [N, H, D], so mapping the sequence-first computation over the batch reads the arrays as
    they are. Swapping to sequence-first instead costs two transposes each way, which
    XLA:CPU fuses into the operand copies of the neighbouring matmuls' gradients (in BERT's
    backward pass they took more time than the attention kernel). The XLA path swaps.

    Returns:
      [B, N, H, E].
    """
    sequence_first = _IMPLEMENTATIONS[type(pattern)]
    key_valid = key_mask[:, :, None, None]  # [B, N, 1, 1]

    def kernel(q, k, v, key_valid):
        one = functools.partial(sequence_first, pattern=pattern, causal=causal,
                                implementation="cpu_kernel")
        return jax.vmap(one)(q, k, v, key_valid)

    def blocked(q, k, v, key_valid):
        q, k, v, key_valid = (jnp.swapaxes(x, 0, 1) for x in (q, k, v, key_valid))
        return jnp.swapaxes(sequence_first(q, k, v, key_valid, pattern, causal, "xla"), 0, 1)

    return _dispatch(implementation, kernel, blocked, q, k, v, key_valid)


@functools.partial(jax.jit, static_argnames=("pattern", "causal", "implementation"))
def _attention(q, k, v, key_mask, pattern, causal, implementation):
    scale = 1.0 / math.sqrt(q.shape[-1])
    q = q * jnp.asarray(scale, q.dtype)
    if isinstance(pattern, _KERNEL_PATTERNS) and implementation in ("auto", "cpu_kernel"):
        return _batch_first(q, k, v, key_mask, pattern, _is_causal(pattern, causal),
                            implementation).astype(v.dtype)
    q, k, v = (jnp.swapaxes(x, 0, 1) for x in (q, k, v))
    key_valid = jnp.swapaxes(key_mask, 0, 1)[:, :, None, None]  # [N, B, 1, 1]
    out = _IMPLEMENTATIONS[type(pattern)](q, k, v, key_valid, pattern,
                                          _is_causal(pattern, causal), implementation)
    return jnp.swapaxes(out, 0, 1).astype(v.dtype)


def cudnn_unsupported_reason(pattern: Pattern, *, dtype, head_dim: int, value_dim: int,
                             length: int, has_key_mask: bool) -> str | None:
    """Why ``implementation="cudnn"`` cannot run this call, or None if it can.

    cuDNN's fused attention (`jax.nn.dot_product_attention(implementation="cudnn")`) runs a
    pattern that is dense inside residue groups, `Full` (one group) and `Atrous(r)` (r
    groups), on the residue layout: bfloat16 or float16, equal head and value dims that are
    multiples of 8 up to 128, a length that is a multiple of r, and no key mask.
    """
    if not isinstance(pattern, (Full, Atrous)):
        return f"cuDNN runs Full and Atrous only, not {type(pattern).__name__}"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"cuDNN takes bfloat16 or float16, not {jnp.dtype(dtype).name}"
    if head_dim != value_dim or head_dim % 8 or head_dim > 128:
        return (f"cuDNN takes equal head and value dims, multiples of 8 up to 128; got "
                f"{head_dim} and {value_dim}")
    rate = pattern.rate if isinstance(pattern, Atrous) else 1
    if length % rate:
        return f"the length {length} is not a multiple of the Atrous rate {rate}"
    if has_key_mask:
        return "the cuDNN path takes no key_mask"
    return None


def resolve_implementation(implementation: str, *, platform: str, dtype, head_dim: int,
                           pattern: Pattern | None = None, length: int | None = None,
                           has_key_mask: bool = False) -> str:
    """What ``implementation="auto"`` of `attention` runs for arrays of this kind.

    From the GPU benchmark (docs/sparse_attention.md §4.1 and §8):

    * CPU: "cpu_kernel" for float32 arrays with head dims the kernel takes, when it could be
      built; "xla" otherwise.
    * GPU: "cudnn" for `Full` and `Atrous` where cuDNN takes the call
      (`cudnn_unsupported_reason`; on an H200 at n = 32768 in bfloat16, cuDNN on the residue
      layout ran Atrous(8) 2.1x and Full 2.2x faster than the Pallas kernel); "pallas"
      otherwise (13-27x faster than XLA for every pattern in bfloat16, 8.8x for Full in
      float32).
    * TPU: "xla" (the Pallas kernels' Mosaic lowering is untried).

    Any other name is returned as it is. Without ``pattern`` and ``length`` (e.g. a config
    resolved before a call), the GPU answer is "pallas", the path of every pattern there.

    Args:
      implementation: one of `IMPLEMENTATIONS`.
      platform: "cpu", "gpu" or "tpu" (e.g. ``jax.default_backend()``).
      dtype: the dtype of q and v.
      head_dim: D (and E).
      pattern, length, has_key_mask: the call, for the GPU's choice of cuDNN.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    if implementation != "auto":
        return implementation
    if platform == "gpu":
        if pattern is not None and length is not None and cudnn_unsupported_reason(
                pattern, dtype=dtype, head_dim=head_dim, value_dim=head_dim, length=length,
                has_key_mask=has_key_mask) is None:
            return "cudnn"
        return "pallas"
    if platform != "cpu":
        return "xla"
    probe = jax.ShapeDtypeStruct((1, 1, 1, head_dim), dtype)
    return "cpu_kernel" if cpu_band.unsupported_reason(probe, probe) is None else "xla"


def to_residue_batches(x: Array, rate: int) -> Array:
    """[B, N, H, D] → [rate·B, N/rate, H, D]: position t·rate + g is slot t of row g·B + b.

    Query i and key j share a row iff (i − j) mod rate = 0: Atrous(rate)'s index set, so
    dense attention over the rows is Atrous(rate) attention. N must be a multiple of rate.
    """
    batch, length = x.shape[:2]
    x = x.reshape(batch, length // rate, rate, *x.shape[2:])  # [B, N/rate, rate, H, D]
    x = jnp.moveaxis(x, 2, 0)  # [rate, B, N/rate, H, D]
    return x.reshape(rate * batch, length // rate, *x.shape[3:])


def from_residue_batches(x: Array, rate: int) -> Array:
    """Inverse of `to_residue_batches`: [rate·B, N/rate, H, D] → [B, N, H, D]."""
    batch, slots = x.shape[0] // rate, x.shape[1]
    x = jnp.moveaxis(x.reshape(rate, batch, *x.shape[1:]), 0, 2)  # [B, N/rate, rate, H, D]
    return x.reshape(batch, slots * rate, *x.shape[3:])


@functools.partial(jax.jit, static_argnames=("rate", "causal", "library"))
def residue_dense_attention(q: Array, k: Array, v: Array, *, rate: int, causal: bool = False,
                            library: str = "cudnn") -> Array:
    """Atrous(rate) (Full: rate 1) as `jax.nn.dot_product_attention` over residue rows.

    Args:
      q, k, v: [B, N, H, D], N a multiple of ``rate``.
      rate: the Atrous rate.
      causal: also require j ≤ i (within a residue row, slot order is position order).
      library: `jax.nn.dot_product_attention`'s ``implementation``: "cudnn" (GPU) or "xla".

    Returns:
      [B, N, H, D] in q's dtype.
    """
    rows = [to_residue_batches(x, rate) for x in (q, k, v)]
    out = jax.nn.dot_product_attention(*rows, is_causal=causal, implementation=library)
    return from_residue_batches(out, rate)


def attention(q: Array, k: Array, v: Array, pattern: Pattern, *, causal: bool = False,
              key_mask: Array | None = None, implementation: str = "auto") -> Array:
    """Scaled dot-product self-attention restricted to ``pattern``, without an N×N array.

    Softmax scale 1/sqrt(D) (docs/sparse_attention.md §1.1). Differentiable in q, k and v. Equal to
    `reference_attention` up to float rounding.

    Args:
      q: [B, N, H, D] queries, float.
      k: [B, N, H, D] keys.
      v: [B, N, H, E] values.
      pattern: one of `Full`, `Atrous`, `Local`, `Sparse`, `Strided`, `Fixed` (static).
      causal: also require j ≤ i (`Strided` and `Fixed` are causal regardless).
      key_mask: optional bool [B, N]; False marks padding keys nobody may attend.
      implementation: how the bands (`Local`; the local parts of `Sparse` and `Strided`)
        and the dense groups (`Full`, `Atrous`) are computed: "auto" (the default) by the
        CPU kernel `kernels.cpu.band_attention` when the computation runs on a CPU and the
        kernel takes the arrays (float32, head dims multiples of 8, a C++ compiler on the
        machine), in XLA elsewhere; "xla" always in XLA; "cpu_kernel" always by the CPU
        kernel (CPU only). The strided parts of `Sparse` and `Strided`, and `Fixed`, are
        XLA in these cases. "pallas": every part by the flash-style Pallas kernel
        `kernels.pallas.band_attention` (Triton on a GPU, interpreted on a CPU: slow, for
        tests), but `Fixed`'s summary columns, which stay XLA; its float32 matmuls are TF32
        on a GPU unless called under ``jax.default_matmul_precision("highest")``. "cudnn":
        `Full` and `Atrous` by cuDNN's fused attention on the residue layout
        (`residue_dense_attention`; GPU only, see `cudnn_unsupported_reason`). On a GPU,
        "auto" runs "cudnn" where cuDNN takes the call and "pallas" otherwise
        (`resolve_implementation`).

    Returns:
      [B, N, H, E] in the dtype of ``v``; zeros for a query with no allowed key.

    Raises:
      ValueError: on mismatched shapes, naming the argument and the shapes; on an unknown
        ``implementation``, or "cpu_kernel" / "cudnn" for a call that path does not take.
      TypeError: if ``pattern`` is not one of the pattern classes.
    """
    _validate(q, k, v, pattern, key_mask)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    if implementation == "cpu_kernel":
        reason = cpu_band.unsupported_reason(q, v)
        if reason is not None:
            raise ValueError(f"implementation='cpu_kernel': {reason}")
    # The CPU's "auto" is chosen at lowering (`_dispatch`); a GPU's here, per call.
    if implementation == "auto" and jax.default_backend() == "gpu":
        implementation = resolve_implementation(
            "auto", platform="gpu", dtype=q.dtype, head_dim=q.shape[-1], pattern=pattern,
            length=q.shape[1], has_key_mask=key_mask is not None)
    if implementation == "cudnn":
        reason = cudnn_unsupported_reason(pattern, dtype=q.dtype, head_dim=q.shape[-1],
                                          value_dim=v.shape[-1], length=q.shape[1],
                                          has_key_mask=key_mask is not None)
        if reason is None and jax.default_backend() != "gpu":
            reason = f"cuDNN needs a GPU, and JAX runs on {jax.default_backend()}"
        if reason is not None:
            raise ValueError(f"implementation='cudnn': {reason}")
        return residue_dense_attention(
            q, k, v, rate=pattern.rate if isinstance(pattern, Atrous) else 1,
            causal=bool(causal), library="cudnn").astype(v.dtype)
    if key_mask is None:
        key_mask = jnp.ones(q.shape[:2], bool)
    return _attention(q, k, v, jnp.asarray(key_mask, bool), pattern, bool(causal),
                      implementation)


def dense_mask(pattern: Pattern, length: int, *, causal: bool = False) -> Array:
    """The pattern's bool [N, N] mask, query on axis 0 (for references and benchmarks)."""
    positions = jnp.arange(length)
    mask = pattern.allows(positions[:, None], positions[None, :])
    if causal:
        mask &= positions[None, :] <= positions[:, None]
    return mask


def reference_attention(q: Array, k: Array, v: Array, pattern: Pattern, *,
                        causal: bool = False, key_mask: Array | None = None) -> Array:
    """`attention` computed the slow, obvious way: logits for every pair under a dense mask.

    Args and returns as in `attention`; builds [B, H, N, N] logits.
    """
    _validate(q, k, v, pattern, key_mask)
    length = q.shape[1]
    mask = dense_mask(pattern, length, causal=causal)[None, None]  # [1, 1, N, N]
    if key_mask is not None:
        mask = mask & jnp.asarray(key_mask, bool)[:, None, None, :]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    # Disallowed logits go to the float minimum before the softmax (docs/sparse_attention.md §2);
    # rows with no allowed key would then be uniform, so they are zeroed afterwards.
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1) * jnp.any(mask, axis=-1, keepdims=True)
    return jnp.einsum("bhqk,bkhe->bqhe", weights, v)


# ------------------------------------------------------------------------------------------
# Cross-attention: queries and keys of different lengths (a decoder reading an encoder, one
# decoder direction reading the other's states, a decoder step reading its own cache).


def _validate_cross(q, k, v, key_mask, causal_offset) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must have shape (batch, length, heads, head_dim), got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if not all(jnp.issubdtype(x.dtype, jnp.floating) for x in (q, k, v)):
        raise ValueError(f"q, k, v must be floating point, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
        raise ValueError(f"k must have shape (batch, key_length, heads, head_dim) = "
                         f"({q.shape[0]}, Tk, {q.shape[2]}, {q.shape[3]}) to match q "
                         f"{q.shape}, got {k.shape}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must have shape (batch, key_length, heads, value_dim) = "
                         f"{k.shape[:3]} + (E,) to match k {k.shape}, got {v.shape}")
    if key_mask is not None and np.shape(key_mask) != k.shape[:2]:
        raise ValueError(f"key_mask must have shape (batch, key_length) = {k.shape[:2]} to "
                         f"match k {k.shape}, got {np.shape(key_mask)}")
    if causal_offset is not None and np.shape(causal_offset) not in ((), (q.shape[0],)):
        raise ValueError(f"causal_offset must be an int or have shape (batch,) = "
                         f"({q.shape[0]},), got shape {np.shape(causal_offset)}")


def _cross_query_block(num_queries: int, num_keys: int, batch_size: int) -> int:
    """Queries per chunk so that a chunk's float32 logits stay near `_DENSE_CHUNK_BYTES`."""
    return max(1, min(num_queries, _DENSE_CHUNK_BYTES // (4 * batch_size * num_keys)))


@functools.partial(jax.jit, static_argnames=("has_offset",))
def _cross_attention(q, k, v, key_mask, causal_offset, has_offset):
    num_queries, num_keys = q.shape[1], k.shape[1]
    scale = jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
    keys = jnp.moveaxis(k, 1, -2)  # [B, H, Tk, D]
    values = jnp.moveaxis(v, 1, -2)  # [B, H, Tk, E]
    key_valid = key_mask[:, None, :, None]  # [B, 1, Tk, 1], keys-major like `_attend`
    block = _cross_query_block(num_queries, num_keys, math.prod(q.shape[::2]))
    num_blocks = -(-num_queries // block)
    q_blocks = _to_blocks(jnp.swapaxes(q * scale, 0, 1), block, num_blocks)  # [T, B, H, Bq, D]
    key_position = jnp.arange(num_keys)[:, None]  # [Tk, 1]
    offset = jnp.broadcast_to(causal_offset, q.shape[:1])[:, None, None, None]  # [B, 1, 1, 1]

    def attend_block(t):
        query_position = t * block + jnp.arange(block)[None, :]  # [1, Bq]
        mask = key_valid
        if has_offset:
            mask = mask & (key_position <= query_position + offset)  # [B, 1, Tk, Bq]
        return _attend(q_blocks[t], keys, values, mask)

    out, _ = jax.lax.map(jax.checkpoint(attend_block, prevent_cse=False),
                         jnp.arange(num_blocks))
    return jnp.swapaxes(_from_blocks(out, num_queries), 0, 1).astype(v.dtype)


def cross_attention(q: Array, k: Array, v: Array, *, key_mask: Array | None = None,
                    causal_offset=None) -> Array:
    """Scaled dot-product attention of Tq queries to Tk keys, without a [Tq, Tk] array per head.

    Softmax scale 1/sqrt(D), as `attention`. Differentiable in q, k and v. Equal to
    `reference_cross_attention` up to float rounding. Computed in blocks of queries, each
    against all keys and recomputed in the backward pass, so memory stays a few MiB of
    logits at a time however long both sides are.

    Args:
      q: [B, Tq, H, D] queries, float.
      k: [B, Tk, H, D] keys.
      v: [B, Tk, H, E] values.
      key_mask: optional bool [B, Tk]; False marks padding keys nobody may attend.
      causal_offset: optional int, or int array [] or [B] (may be traced, so a decoding
        loop does not recompile per step): query i may attend key j only if
        j ≤ i + causal_offset. 0 is the usual causal mask for Tq = Tk; a decoder at step
        t with one query and a cache of Tk ≥ t + 1 slots uses t.

    Returns:
      [B, Tq, H, E] in the dtype of ``v``; zeros (and zero gradients) for a query with no
      allowed key.

    Raises:
      ValueError: on mismatched shapes, naming the argument and the shapes.
    """
    _validate_cross(q, k, v, key_mask, causal_offset)
    if key_mask is None:
        key_mask = jnp.ones(k.shape[:2], bool)
    has_offset = causal_offset is not None
    offset = jnp.asarray(causal_offset if has_offset else 0, jnp.int32)
    return _cross_attention(q, k, v, jnp.asarray(key_mask, bool), offset, has_offset)


def reference_cross_attention(q: Array, k: Array, v: Array, *, key_mask: Array | None = None,
                              causal_offset=None) -> Array:
    """`cross_attention` computed the slow, obvious way, from [B, H, Tq, Tk] logits.

    Args and returns as in `cross_attention`.
    """
    _validate_cross(q, k, v, key_mask, causal_offset)
    batch, num_queries, num_keys = q.shape[0], q.shape[1], k.shape[1]
    mask = jnp.ones((batch, 1, num_queries, num_keys), bool)
    if key_mask is not None:
        mask = mask & jnp.asarray(key_mask, bool)[:, None, None, :]
    if causal_offset is not None:
        offset = jnp.broadcast_to(jnp.asarray(causal_offset), (batch,))[:, None, None, None]
        i, j = jnp.arange(num_queries)[:, None], jnp.arange(num_keys)[None, :]
        mask = mask & (j <= i + offset)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1) * jnp.any(mask, axis=-1, keepdims=True)
    return jnp.einsum("bhqk,bkhe->bqhe", weights, v)
