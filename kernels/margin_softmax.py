"""Margin softmax losses for cosine classifiers (docs/sentence_similarity.md §3).

Glossary of shapes: B batch, C classes, D embedding width. ``cos[b, j] = ⟨z_b, c_j⟩`` is the
cosine between an L2-normalised embedding and a unit-norm class centre, t = ``labels[b]`` the
target class, θ = arccos(cos), s the scale.

Every kind replaces the target logit s·cos θ_t by s·ψ(θ_t) and takes a standard softmax
cross-entropy, L = logsumexp_j(logit_j) − s·ψ(θ_t), evaluated as the equal
softplus(logsumexp_{j≠t}(s·cos θ_j) − s·ψ(θ_t)) for precision. Half-precision inputs are
computed in float32 and the losses come back in float32:

  ========== ============================== ==================================================
  kind       ψ(θ_t)                         source
  ========== ============================== ==================================================
  softmax    cos θ_t                        normalised softmax with scale, the post's baseline
  am         cos θ_t − m                    AM-Softmax (arXiv 1801.05599): s = 30, m = 0.35
  simpler_a  min(cos 4θ_t, cos θ_t)         the post's "simpler-A-Softmax"; no m
  arcface    cos(θ_t + m)                   ArcFace (arXiv 1801.07698; s = 64, m = 0.5 there)
  ========== ============================== ==================================================

The logit vector is built directly, never with the seed's "subtract the unmargined target
back" trick: that trick computes log(1 − exp(s·cos θ_t − logZ)), which rounds to log 0 in
float32 when ψ_t lies far below cos θ_t (simpler-A at θ_t = 45°) and NaNs
(docs/sentence_similarity.md §3, "Numerics").

Large class counts (C = 90k in the seed, millions in face recognition):

* `chunked_margin_softmax_loss` scans over column chunks of the (D, C) classifier with an
  online log-sum-exp; a `jax.custom_vjp` recomputes each chunk's logits in the backward
  pass, so neither pass holds a (B, C) buffer.
* `sample_classes` / `sampled_margin_softmax_loss`: Partial-FC class sampling.
* `sharded_margin_softmax_loss`: class centres sharded over a mesh axis with `jax.shard_map`.
* `project_to_unit_norm`: the Keras ``unit_norm(axis=0)`` constraint (a projection after
  each update, docs/index.md §2 item 6) as an optax transformation.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import PartitionSpec

Array = jax.Array

KINDS = ("softmax", "am", "simpler_a", "arcface")

# d/dx sqrt(x) is infinite at x = 0, i.e. sin θ = sqrt(1 − cos²θ) at cos θ = ±1. Below this
# floor the derivative is taken as if x were the floor; the value itself stays exact.
_SQRT_DERIVATIVE_FLOOR = 1e-6


# ----------------------------------------------------------------------------------------
# Argument checks (shapes are static, so these run before and during tracing alike).


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _check_scale(scale: Any) -> None:
    # A traced scale is allowed in the dense loss; only a concrete one can be checked.
    if isinstance(scale, (int, float)) and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")


def _check_labels(labels: Array, batch: int, batch_source: str) -> None:
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(
            f"labels must have shape ({batch},) to match {batch_source}, got {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")


def _check_cos_and_labels(cos: Array, labels: Array) -> None:
    if cos.ndim != 2:
        raise ValueError(f"cos must have shape (batch, classes), got {cos.shape}")
    _check_labels(labels, cos.shape[0], f"cos of shape {cos.shape}")


def _check_embeddings_and_weights(embeddings: Array, class_weights: Array,
                                  labels: Array) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must have shape (batch, dim), got {embeddings.shape}")
    if class_weights.ndim != 2 or class_weights.shape[0] != embeddings.shape[1]:
        raise ValueError(
            f"class_weights must have shape (dim, classes) with dim = {embeddings.shape[1]} "
            f"as in embeddings {embeddings.shape}, got {class_weights.shape}")
    _check_labels(labels, embeddings.shape[0], f"embeddings of shape {embeddings.shape}")


def _compute_dtype(dtype: Any) -> Any:
    """float32 for half-precision inputs, the input dtype otherwise (float64 stays)."""
    return jnp.promote_types(dtype, jnp.float32)


def _nan_where_label_invalid(loss: Array, labels: Array, num_classes: int) -> Array:
    # Labels are traced, so an out-of-range one cannot raise: it poisons its own loss
    # instead, which the trainer's non-finite check stops on (docs/index.md §3).
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, loss, jnp.nan)


# ----------------------------------------------------------------------------------------
# The target's margin function ψ.


@jax.custom_jvp
def _sqrt_with_finite_derivative(x: Array) -> Array:
    """sqrt(max(x, 0)) whose derivative is capped at 1 / (2·sqrt(floor)) near x = 0."""
    return jnp.sqrt(jnp.maximum(x, 0.0))


@_sqrt_with_finite_derivative.defjvp
def _sqrt_with_finite_derivative_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    floored = jnp.maximum(x, _SQRT_DERIVATIVE_FLOOR)
    return _sqrt_with_finite_derivative(x), dx * 0.5 / jnp.sqrt(floored)


def _arcface_target(cos_t: Array, margin: Any) -> Array:
    """cos(θ + m) for θ + m ≤ π, cos θ − m·sin m beyond (insightface's fallback).

    Past θ = π − m, cos(θ + m) would rise again with θ and reward pushing the embedding away
    from its own class. The ArcFace authors' insightface code (``easy_margin=False``)
    switches there to the CosFace-style penalty cos θ − m·sin m, which keeps ψ increasing in
    cos θ: at the switch ψ drops by cos m + m·sin m − 1 (≈ 0.06 at m = 0.35), a step toward
    a larger margin, never a reversal. We follow it.
    """
    sin_t = _sqrt_with_finite_derivative(1.0 - cos_t * cos_t)
    cos_theta_plus_m = cos_t * jnp.cos(margin) - sin_t * jnp.sin(margin)
    past_pi = cos_t < -jnp.cos(margin)  # θ > π − m
    return jnp.where(past_pi, cos_t - margin * jnp.sin(margin), cos_theta_plus_m)


def target_cosine(cos_t: Array, *, kind: str, margin: Any = 0.35) -> Array:
    """The margin function ψ applied to target cosines (docs/sentence_similarity.md §3).

    Args:
      cos_t: (...,) float cosines of the target angle θ_t, in [−1, 1].
      kind: one of `KINDS`.
      margin: m for "am" and "arcface"; ignored by "softmax" and "simpler_a".

    Returns:
      ψ(θ_t), same shape and dtype as ``cos_t``; finite, with finite derivatives, for every
      cos_t in [−1, 1] (ArcFace's sin θ has a capped derivative at cos θ = ±1).
    """
    _check_kind(kind)
    if kind == "softmax":
        return cos_t
    if kind == "am":
        return cos_t - margin
    if kind == "simpler_a":
        # Chebyshev: cos 4θ = 8c⁴ − 8c² + 1 with c = cos θ, no arccos needed.
        cos_sq = cos_t * cos_t
        cos_4theta = 8.0 * cos_sq * (cos_sq - 1.0) + 1.0
        return jnp.minimum(cos_4theta, cos_t)
    return _arcface_target(cos_t, margin)


# ----------------------------------------------------------------------------------------
# Dense loss over a (B, C) cosine matrix.


def _target_cos_and_mask(cos: Array, labels: Array) -> tuple[Array, Array]:
    is_target = labels[:, None] == jnp.arange(cos.shape[1])[None, :]  # [B, C]
    cos_t = jnp.take_along_axis(cos, labels[:, None], axis=1, mode="clip")[:, 0]  # [B]
    return cos_t, is_target


def _margin_loss_from_parts(non_target_lse: Array, cos_t: Array, *, kind: str, scale: Any,
                            margin: Any) -> Array:
    """L = log(exp(lse_{j≠t}) + exp(s·ψ_t)) − s·ψ_t = softplus(lse_{j≠t} − s·ψ_t)."""
    target_logit = scale * target_cosine(cos_t, kind=kind, margin=margin)
    return jax.nn.softplus(non_target_lse - target_logit)


def margin_logits(cos: Array, labels: Array, *, kind: str, scale: Any = 30.0,
                  margin: Any = 0.35) -> Array:
    """Scaled logits with the target entry replaced by s·ψ(θ_t) (docs/sentence_similarity.md §3).

    Args:
      cos: (B, C) cosines, any float dtype.
      labels: (B,) integer target classes in [0, C).
      kind: "softmax" (ψ = cos θ), "am" (cos θ − m), "simpler_a" (min(cos 4θ, cos θ)) or
        "arcface" (cos(θ + m)).
      scale: s.
      margin: m; ignored by "softmax" and "simpler_a".

    Returns:
      (B, C) logits s·cos with column t of row b set to s·ψ(cos[b, t]), in ``cos.dtype``
      (computed in float32 for half-precision input). A row whose label is out of range is
      all NaN.
    """
    _check_kind(kind)
    _check_scale(scale)
    _check_cos_and_labels(cos, labels)
    cos_c = cos.astype(_compute_dtype(cos.dtype))
    cos_t, is_target = _target_cos_and_mask(cos_c, labels)
    psi_t = target_cosine(cos_t, kind=kind, margin=margin)
    logits = scale * jnp.where(is_target, psi_t[:, None], cos_c)
    valid = (labels >= 0) & (labels < cos.shape[1])
    return jnp.where(valid[:, None], logits, jnp.nan).astype(cos.dtype)


def margin_softmax_loss(cos: Array, labels: Array, *, kind: str, scale: Any = 30.0,
                        margin: Any = 0.35) -> Array:
    """Per-example margin softmax cross-entropy (docs/sentence_similarity.md §3).

    L_b = logsumexp_j(logit_bj) − s·ψ(θ_bt) with the logits of `margin_logits`, evaluated as
    softplus(logsumexp_{j≠t}(s·cos θ_bj) − s·ψ(θ_bt)): the plain difference of two numbers
    near s loses a well-classified example's small loss to rounding (even below zero), the
    softplus form keeps its relative precision.

    Args:
      cos: (B, C) cosines, any float dtype.
      labels: (B,) integer target classes in [0, C).
      kind: one of `KINDS`.
      scale: s (30 in the seed).
      margin: m (0.35 in the seed); ignored by "softmax" and "simpler_a".

    Returns:
      (B,) losses in float32 for half-precision or float32 ``cos`` (float64 for float64);
      NaN where a label is out of range. Values and gradients are finite for every cosine
      in [−1, 1].
    """
    _check_kind(kind)
    _check_scale(scale)
    _check_cos_and_labels(cos, labels)
    cos_c = cos.astype(_compute_dtype(cos.dtype))
    cos_t, is_target = _target_cos_and_mask(cos_c, labels)
    non_target_lse = jax.nn.logsumexp(jnp.where(is_target, -jnp.inf, scale * cos_c), axis=1)
    loss = _margin_loss_from_parts(non_target_lse, cos_t, kind=kind, scale=scale,
                                   margin=margin)
    return _nan_where_label_invalid(loss, labels, cos.shape[1])


def reference_margin_softmax_loss(cos: Array, labels: Array, *, kind: str,
                                  scale: Any = 30.0, margin: Any = 0.35) -> Array:
    """The obvious formula, for tests: one-hot, θ = arccos, ψ on every entry.

    Gradients are infinite at cos = ±1 (arccos); use `margin_softmax_loss` for training.

    Args:
      cos: (B, C) float cosines.
      labels: (B,) integer targets in [0, C).
      kind, scale, margin: as in `margin_softmax_loss`.

    Returns:
      (B,) losses in ``cos.dtype``.
    """
    _check_kind(kind)
    _check_cos_and_labels(cos, labels)
    one_hot = jax.nn.one_hot(labels, cos.shape[1], dtype=cos.dtype)
    theta = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
    if kind == "softmax":
        psi = jnp.cos(theta)
    elif kind == "am":
        psi = jnp.cos(theta) - margin
    elif kind == "simpler_a":
        psi = jnp.minimum(jnp.cos(4.0 * theta), jnp.cos(theta))
    else:
        psi = jnp.where(theta + margin <= jnp.pi, jnp.cos(theta + margin),
                        jnp.cos(theta) - margin * jnp.sin(margin))
    logits = scale * (one_hot * psi + (1.0 - one_hot) * cos)
    return -jnp.sum(one_hot * jax.nn.log_softmax(logits, axis=1), axis=1)


# ----------------------------------------------------------------------------------------
# Chunked loss: never a (B, C) buffer.


def _column_chunk(class_weights: Array, index: Array, chunk_size: int):
    """Columns [index·k, index·k + k) of W, shifted left to stay inside W for the last chunk.

    Returns the start column, the (D, k) slice, the (k,) global column ids and a (k,) mask
    that is False on columns the shifted last chunk re-reads (already counted before).
    """
    num_classes = class_weights.shape[1]
    nominal_start = index * chunk_size
    start = jnp.minimum(nominal_start, num_classes - chunk_size)
    weights = lax.dynamic_slice_in_dim(class_weights, start, chunk_size, axis=1)
    column_ids = start + jnp.arange(chunk_size)
    return start, weights, column_ids, column_ids >= nominal_start


def _chunk_logits(embeddings, weights, column_ids, fresh, labels, scale):
    """(B, k) scaled cosines of one chunk and the mask of entries that enter the sum."""
    cos = jnp.matmul(embeddings, weights,
                     preferred_element_type=_compute_dtype(embeddings.dtype))
    keep = fresh[None, :] & (column_ids[None, :] != labels[:, None])
    return scale * cos, keep


def _constant_carry(value: float, shape: tuple[int, ...], dtype: Any, *references: Array):
    """A constant scan carry typed like values computed from ``references``.

    Inside `jax.shard_map` a scan carry must keep its per-device ("varying") type across
    iterations, so a constant initial carry must already vary over every mesh axis that
    the references vary over. `jnp.full_like` inherits that type from its template; a
    scalar that touches every reference carries the union. Outside shard_map this is a
    plain constant.
    """
    template = sum(r.ravel()[0].astype(dtype) for r in references)
    return jnp.full_like(template, value, shape=shape, dtype=dtype)


def _num_chunks(num_classes: int, chunk_size: int) -> int:
    return -(-num_classes // chunk_size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _non_target_logsumexp(embeddings: Array, class_weights: Array, labels: Array,
                          scale: float, chunk_size: int) -> Array:
    """(B,) log Σ_{j ≠ labels_b} exp(s·⟨e_b, w_j⟩), chunk by chunk, in both passes.

    Labels outside [0, C) exclude no column (the sharded loss relies on this for targets
    that live on another device). The backward pass recomputes each chunk's logits from the
    saved (B,) result instead of storing them.
    """
    return _non_target_logsumexp_fwd(embeddings, class_weights, labels, scale, chunk_size)[0]


def _non_target_logsumexp_fwd(embeddings, class_weights, labels, scale, chunk_size):
    dtype = _compute_dtype(embeddings.dtype)
    batch = embeddings.shape[0]

    def accumulate(carry, index):
        running_max, running_sum = carry
        _, weights, column_ids, fresh = _column_chunk(class_weights, index, chunk_size)
        logits, keep = _chunk_logits(embeddings, weights, column_ids, fresh, labels, scale)
        logits = jnp.where(keep, logits, -jnp.inf)
        new_max = jnp.maximum(running_max, jnp.max(logits, axis=1))
        running_sum = (running_sum * jnp.exp(running_max - new_max)
                       + jnp.sum(jnp.exp(logits - new_max[:, None]), axis=1))
        return (new_max, running_sum), None

    # A finite initial max keeps exp(running_max − new_max) free of (−inf) − (−inf).
    references = (embeddings, class_weights, labels)
    init = (_constant_carry(jnp.finfo(dtype).min, (batch,), dtype, *references),
            _constant_carry(0.0, (batch,), dtype, *references))
    num_chunks = _num_chunks(class_weights.shape[1], chunk_size)
    (running_max, running_sum), _ = lax.scan(accumulate, init, jnp.arange(num_chunks))
    lse = running_max + jnp.log(running_sum)  # −inf when no class but the target exists
    return lse, (embeddings, class_weights, labels, lse)


def _non_target_logsumexp_bwd(scale, chunk_size, residuals, lse_cotangent):
    embeddings, class_weights, labels, lse = residuals
    dtype = lse.dtype
    safe_lse = jnp.where(jnp.isfinite(lse), lse, 0.0)

    def accumulate(carry, index):
        d_embeddings, d_weights = carry
        start, weights, column_ids, fresh = _column_chunk(class_weights, index, chunk_size)
        logits, keep = _chunk_logits(embeddings, weights, column_ids, fresh, labels, scale)
        probs = jnp.where(keep, jnp.exp(logits - safe_lse[:, None]), 0.0)  # [B, k]
        d_cos = scale * probs * lse_cotangent[:, None]
        d_embeddings = d_embeddings + jnp.matmul(d_cos, weights.T.astype(dtype))
        d_chunk = jnp.matmul(embeddings.T.astype(dtype), d_cos)  # [D, k], 0 on stale columns
        # Add rather than overwrite: the shifted last chunk overlaps columns already written.
        previous = lax.dynamic_slice_in_dim(d_weights, start, chunk_size, axis=1)
        d_weights = lax.dynamic_update_slice_in_dim(d_weights, previous + d_chunk, start, 1)
        return (d_embeddings, d_weights), None

    references = (embeddings, class_weights, labels, lse_cotangent)
    init = (_constant_carry(0.0, embeddings.shape, dtype, *references),
            _constant_carry(0.0, class_weights.shape, dtype, *references))
    num_chunks = _num_chunks(class_weights.shape[1], chunk_size)
    (d_embeddings, d_weights), _ = lax.scan(accumulate, init, jnp.arange(num_chunks))
    return (d_embeddings.astype(embeddings.dtype), d_weights.astype(class_weights.dtype),
            None)


_non_target_logsumexp.defvjp(_non_target_logsumexp_fwd, _non_target_logsumexp_bwd)


def _check_static_scale(scale: Any) -> float:
    if not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a Python number here (it is a static argument of "
                         f"the chunked kernel), got {type(scale).__name__}")
    _check_scale(scale)
    return float(scale)


def _check_chunk_size(chunk_size: Any, num_classes: int) -> int:
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return min(int(chunk_size), num_classes)


def _target_cosines(embeddings: Array, class_weights: Array, labels: Array) -> Array:
    """(B,) ⟨e_b, w_{labels_b}⟩ in the compute dtype, from a (D, B) gather of columns."""
    dtype = _compute_dtype(embeddings.dtype)
    target_weights = jnp.take(class_weights, labels, axis=1, mode="clip")  # [D, B]
    return jnp.sum(embeddings.astype(dtype) * target_weights.T.astype(dtype), axis=1)


# Columns per chunk, tuned on a 2-core CPU at B = 1024, C = 1M, D = 128 (float32): 2048 was
# never slower than 4096, 8192 or 16384 in interleaved runs, and at least as fast as the dense
# loss. A (1024, 2048) chunk of logits is 8 MiB. Accelerators likely want larger chunks
# (fewer loop iterations); this is untested here.
DEFAULT_CHUNK_SIZE = 2048


def chunked_margin_softmax_loss(embeddings: Array, class_weights: Array, labels: Array, *,
                                kind: str, scale: float = 30.0, margin: Any = 0.35,
                                chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
    """`margin_softmax_loss(embeddings @ class_weights, labels)` without a (B, C) buffer.

    A `lax.scan` over chunks of ``chunk_size`` columns keeps an online log-sum-exp of the
    non-target logits; the target's logit s·ψ(θ_t) comes from a (D, B) gather of the target
    columns. A custom VJP recomputes each chunk's logits in the backward pass, so the
    largest intermediate of either pass is (B, chunk_size). C need not be a multiple of
    ``chunk_size``: the last chunk is shifted left and its re-read columns are masked.

    Args:
      embeddings: (B, D) L2-normalised embeddings, any float dtype.
      class_weights: (D, C) class centres with unit-norm columns (the flax ``Dense`` kernel
        layout, docs/sentence_similarity.md §2), any float dtype.
      labels: (B,) integer targets in [0, C).
      kind: one of `KINDS`.
      scale: s, a Python number (static).
      margin: m; ignored by "softmax" and "simpler_a".
      chunk_size: columns per chunk; values above C mean one chunk.

    Returns:
      (B,) losses in float32 (float64 for float64 inputs); NaN where a label is out of range.
    """
    _check_kind(kind)
    scale = _check_static_scale(scale)
    _check_embeddings_and_weights(embeddings, class_weights, labels)
    num_classes = class_weights.shape[1]
    chunk_size = _check_chunk_size(chunk_size, num_classes)
    non_target_lse = _non_target_logsumexp(embeddings, class_weights, labels, scale,
                                           chunk_size)
    cos_t = _target_cosines(embeddings, class_weights, labels)
    loss = _margin_loss_from_parts(non_target_lse, cos_t, kind=kind, scale=scale,
                                   margin=margin)
    return _nan_where_label_invalid(loss, labels, num_classes)


# ----------------------------------------------------------------------------------------
# Partial-FC class sampling.


def sample_classes(labels: Array, num_classes: int, num_sampled: int,
                   key: Array) -> tuple[Array, Array]:
    """Partial-FC sampling: the batch's positive classes plus random distinct negatives.

    Every class of ``labels`` is kept; the remaining ``num_sampled − #distinct(labels)``
    slots are a uniformly random subset of the other classes. Sizes are static, so the
    function jits; since the number of distinct labels is only known at run time,
    ``num_sampled ≥ B`` is required, which guarantees room for every positive.

    Args:
      labels: (B,) integer classes in [0, num_classes).
      num_classes: C, a Python int.
      num_sampled: how many classes to keep, B ≤ num_sampled ≤ C.
      key: a PRNG key for the negatives.

    Returns:
      class_ids: (num_sampled,) int32, distinct and sorted ascending.
      remapped_labels: (B,) int32 with ``class_ids[remapped_labels] == labels``.
    """
    if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} and "
                         f"dtype {labels.dtype}")
    if not labels.shape[0] <= num_sampled <= num_classes:
        raise ValueError(
            f"num_sampled must satisfy batch ≤ num_sampled ≤ num_classes so that every "
            f"positive fits; got batch {labels.shape[0]}, num_sampled {num_sampled}, "
            f"num_classes {num_classes}")
    is_positive = jnp.zeros((num_classes,), bool).at[labels].set(True)
    # Positives outrank every uniform draw in [0, 1); the top draws among the rest are a
    # uniformly random subset of the negatives.
    priority = jnp.where(is_positive, 2.0, jax.random.uniform(key, (num_classes,)))
    _, class_ids = lax.top_k(priority, num_sampled)
    class_ids = jnp.sort(class_ids).astype(jnp.int32)
    position = jnp.zeros((num_classes,), jnp.int32).at[class_ids].set(
        jnp.arange(num_sampled, dtype=jnp.int32))
    return class_ids, position[labels]


def sampled_margin_softmax_loss(embeddings: Array, class_weights: Array, labels: Array,
                                key: Array, *, num_sampled: int, kind: str,
                                scale: Any = 30.0, margin: Any = 0.35) -> Array:
    """Margin softmax over the positives plus ``num_sampled − #positives`` random classes.

    Partial FC: an approximation of the full loss (the softmax denominator misses the
    unsampled negatives) whose cost scales with ``num_sampled`` instead of C; the gradient
    reaches only the sampled columns of ``class_weights``.

    Args:
      embeddings: (B, D) L2-normalised embeddings.
      class_weights: (D, C) unit-norm class centres.
      labels: (B,) integer targets in [0, C).
      key: PRNG key choosing the negatives.
      num_sampled: classes kept, B ≤ num_sampled ≤ C (see `sample_classes`).
      kind, scale, margin: as in `margin_softmax_loss`.

    Returns:
      (B,) losses in float32 (float64 for float64 inputs); NaN where a label is out of range.
    """
    _check_kind(kind)
    _check_scale(scale)
    _check_embeddings_and_weights(embeddings, class_weights, labels)
    num_classes = class_weights.shape[1]
    class_ids, remapped_labels = sample_classes(labels, num_classes, num_sampled, key)
    sampled_weights = jnp.take(class_weights, class_ids, axis=1)  # [D, num_sampled]
    cos = jnp.matmul(embeddings, sampled_weights,
                     preferred_element_type=_compute_dtype(embeddings.dtype))
    loss = margin_softmax_loss(cos, remapped_labels, kind=kind, scale=scale, margin=margin)
    return _nan_where_label_invalid(loss, labels, num_classes)


# ----------------------------------------------------------------------------------------
# Class centres sharded over a mesh axis.


def sharded_margin_softmax_loss(embeddings: Array, class_weights: Array, labels: Array, *,
                                mesh: jax.sharding.Mesh, axis_name: str, kind: str,
                                scale: float = 30.0, margin: Any = 0.35,
                                chunk_size: int | None = None) -> Array:
    """Margin softmax with ``class_weights`` sharded on its class axis over ``axis_name``.

    Each device holds C / n columns and computes the log-sum-exp of its non-target logits
    (chunked, as in `chunked_margin_softmax_loss`) and, for the rows whose target it owns,
    the target cosine; a psum gathers the target cosines and a pmax-shifted psum combines
    the log-sum-exps. Only (B,) vectors cross devices. Embeddings and labels are replicated.

    Args:
      embeddings: (B, D) L2-normalised embeddings (replicated).
      class_weights: (D, C) unit-norm class centres; C must be divisible by the size of
        ``axis_name``.
      labels: (B,) integer targets in [0, C) (replicated).
      mesh: the device mesh; its axes should be of type Auto (`jax.make_mesh` defaults to
        Explicit: pass ``axis_types`` or build a `jax.sharding.Mesh` directly).
      axis_name: the mesh axis that shards the classes.
      kind, scale, margin: as in `chunked_margin_softmax_loss`.
      chunk_size: columns per chunk on each device; None means the whole local shard.

    Returns:
      (B,) replicated losses in float32 (float64 for float64 inputs); NaN where a label is
      out of range.
    """
    _check_kind(kind)
    scale = _check_static_scale(scale)
    _check_embeddings_and_weights(embeddings, class_weights, labels)
    if axis_name not in mesh.shape:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}")
    num_classes = class_weights.shape[1]
    num_shards = mesh.shape[axis_name]
    if num_classes % num_shards:
        raise ValueError(f"class_weights {class_weights.shape} has {num_classes} classes, not "
                         f"divisible by the {num_shards} devices of mesh axis {axis_name!r}")
    local_classes = num_classes // num_shards
    chunk_size = _check_chunk_size(chunk_size or local_classes, local_classes)

    def local_loss(embeddings, local_weights, labels):
        # Replicated embeddings meet per-device weights in the custom-VJP kernel: cast them
        # to per-device explicitly so that the kernel's cotangents are typed like its
        # inputs; the transpose of this cast sums the per-device gradients.
        embeddings = lax.pcast(embeddings, (axis_name,), to="varying")
        local_labels = labels - lax.axis_index(axis_name) * local_classes
        owns_target = (local_labels >= 0) & (local_labels < local_classes)
        local_cos_t = _target_cosines(embeddings, local_weights, local_labels)
        cos_t = lax.psum(jnp.where(owns_target, local_cos_t, 0.0), axis_name)
        # Non-local targets fall outside [0, local_classes) and exclude no local column.
        local_lse = _non_target_logsumexp(embeddings, local_weights, local_labels, scale,
                                          chunk_size)
        # The shift only guards exp against overflow; lse does not depend on it, so no
        # gradient flows through it (pmax has none).
        shift = lax.pmax(lax.stop_gradient(local_lse), axis_name)
        shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
        non_target_lse = shift + jnp.log(lax.psum(jnp.exp(local_lse - shift), axis_name))
        return _margin_loss_from_parts(non_target_lse, cos_t, kind=kind, scale=scale,
                                       margin=margin)

    loss = jax.shard_map(
        local_loss, mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(None, axis_name), PartitionSpec()),
        out_specs=PartitionSpec())(embeddings, class_weights, labels)
    return _nan_where_label_invalid(loss, labels, num_classes)


# ----------------------------------------------------------------------------------------
# The unit-norm constraint as an optimizer transformation.


def _sum_of_squares(x: Array, axis) -> Array:
    """Σ x² over `axis`, keepdims. For the columns of a 2-D kernel it is a ones-row matmul:
    XLA:CPU reduces a row-major (D, C) array over its major axis ~100× slower than a GEMV
    (0.37 s against 3 ms at 128 × 90k, measured by the sentence-similarity benchmark)."""
    if x.ndim == 2 and axis in (0, (0,)):
        ones = jnp.ones((1, x.shape[0]), x.dtype)
        return jnp.matmul(ones, jnp.square(x), precision=lax.Precision.HIGHEST)  # [1, C]
    return jnp.sum(jnp.square(x), axis=axis, keepdims=True)


def project_to_unit_norm(axis: int | tuple[int, ...] = 0,
                         eps: float = 1e-12) -> optax.GradientTransformation:
    """Keras's ``unit_norm(axis)`` constraint: a projection after the update (docs/index.md §2).

    Turns updates u into normalize(p + u) − p, so that
    ``optax.apply_updates`` lands on p_new = (p + u) / ‖p + u‖ with the norm taken over
    ``axis`` (axis 0: every column of a (D, C) Dense kernel has unit norm,
    docs/sentence_similarity.md §2). Put it last in an `optax.chain`, and wrap
    it in `optax.masked` to constrain only the classifier kernel. Keras divides by
    (eps + ‖w‖); dividing by max(‖w‖, eps) instead gives norms of exactly 1 (up to rounding)
    and leaves zero vectors at zero.

    Args:
      axis: the axis (or axes) over which each vector is normalised.
      eps: floor on the norm.

    Returns:
      A stateless `optax.GradientTransformation` whose update needs ``params``.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("project_to_unit_norm needs params: call "
                             "update(updates, state, params)")

        def project(update, param):
            dtype = _compute_dtype(param.dtype)
            moved = param.astype(dtype) + update.astype(dtype)
            norm = jnp.sqrt(_sum_of_squares(moved, axis))
            projected = moved / jnp.maximum(norm, eps)
            return (projected - param.astype(dtype)).astype(update.dtype)

        return jax.tree.map(project, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)
