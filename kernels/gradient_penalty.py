"""Gradient penalties for GAN critics: WGAN-div, WGAN-GP and zero-centred R1/R2.

A critic is any callable ``critic(x) -> scores`` mapping a batch ``x`` of shape
``(batch, ...)`` to scores of shape ``(batch,)``; close over its parameters (and its
batch-norm mode) before passing it in. Every penalty here differentiates the critic with
respect to its input, so taking ``jax.grad`` of a penalty with respect to the critic's
parameters is a double backward pass.

Gradients are those of the *sum* of the batch's scores, ∇ₓ Σ_b T(x)_b, as in the seed
(SPEC §2.3): with batch norm in training mode a sample's score depends on the whole batch,
and these cross-sample terms are kept. ``gradient_norms(..., per_sample=True)`` gives each
sample's own gradient instead.

Every norm runs over all non-batch axes (all pixels and channels, SPEC §2.3). Squared
norms are accumulated in at least float32 whatever the input dtype, so bfloat16 batches
give float32 penalties. Penalties are invariant under the critic's sign, so they pair with
any sign convention of ``kernels.gan_losses``.

The r(x) sampling strategies of the WGAN-div paper (SPEC §2.2) are:

- ``real_fake_interpolation``: x̂ᵢ = x_fakeᵢ + tᵢ (x_realᵢ − x_fakeᵢ), tᵢ ~ U(0, 1);
  the WGAN-GP points, and the official WGAN-div code's choice (SPEC §2.4).
- ``real_real_and_fake_fake_interpolation``: each real sample interpolated with another
  real sample, each fake sample with another fake sample; weight ½ each.
- ``mixed_pairs_interpolation``: the 2·batch real and fake samples shuffled together and
  split into batch random pairs (each sample used once), each pair interpolated.
- ``real_and_fake``: the raw real and fake batches, weight ½ each, no interpolation;
  the seed's choice (SPEC §2.3).
- ``fake``: the fake batch only.
- ``real``: the real batch only.

Strategies that return two populations (``real_and_fake``,
``real_real_and_fake_fake_interpolation``) call the critic once per population, as the
seed calls its critic separately on real and fake batches so that batch norm normalises
each with its own statistics (SPEC §0.1, §2.3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Critic = Callable[[jax.Array], jax.Array]

INTERPOLATING_STRATEGIES = (
    "real_fake_interpolation",
    "real_real_and_fake_fake_interpolation",
    "mixed_pairs_interpolation",
)
STRATEGIES = INTERPOLATING_STRATEGIES + ("real_and_fake", "fake", "real")


# ----------------------------------------------------------------------------------------
# Argument checks: run on static shapes and Python numbers, before anything is traced.


def _static_float(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError) as error:
        raise ValueError(
            f"{name} must be a concrete number (a static argument), got {value!r}"
        ) from error


def _check_batch(name: str, x) -> None:
    shape = jnp.shape(x)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"{name} must have shape (batch, ...) with batch >= 1, got {shape}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(
            f"{name} must be floating point to be differentiated, got dtype "
            f"{jnp.result_type(x)}"
        )


def _check_pair(x_real, x_fake) -> None:
    _check_batch("x_real", x_real)
    _check_batch("x_fake", x_fake)
    if jnp.shape(x_real) != jnp.shape(x_fake):
        raise ValueError(
            f"x_real and x_fake must have the same shape, got x_real {jnp.shape(x_real)} "
            f"and x_fake {jnp.shape(x_fake)}"
        )


def _check_strategy(strategy: str, key) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {STRATEGIES}")
    if strategy in INTERPOLATING_STRATEGIES and key is None:
        raise ValueError(f"strategy {strategy!r} samples random points and needs a key")


def _check_weight(weight) -> float:
    weight = _static_float("weight", weight)
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    return weight


# ----------------------------------------------------------------------------------------
# Gradients and their norms.


def _accumulation_dtype(dtype) -> jnp.dtype:
    # bfloat16 keeps 8 mantissa bits: a sum of many squared pixels in bfloat16 stops
    # growing long before it is done. Accumulate in float32 (float64 stays float64).
    return jnp.promote_types(dtype, jnp.float32)


def _checked_scores(critic: Critic, x: jax.Array) -> jax.Array:
    scores = critic(x)
    if jnp.shape(scores) != (x.shape[0],):
        raise ValueError(
            f"critic must map x of shape {x.shape} to scores of shape ({x.shape[0]},), "
            f"got {jnp.shape(scores)}"
        )
    return scores


def _input_gradients(critic: Critic, x: jax.Array, per_sample: bool) -> jax.Array:
    """∇ₓ of the critic's scores, shape and dtype of x."""
    if per_sample:

        def single_score(sample):
            return _checked_scores(critic, sample[None])[0]

        return jax.vmap(jax.grad(single_score))(x)

    def summed_scores(batch):
        scores = _checked_scores(critic, batch)
        return jnp.sum(scores.astype(_accumulation_dtype(scores.dtype)))

    return jax.grad(summed_scores)(x)


def _squared_gradient_norms(critic: Critic, x: jax.Array, per_sample: bool) -> jax.Array:
    """Σ g² over the non-batch axes, (batch,) in at least float32."""
    gradients = _input_gradients(critic, x, per_sample)
    gradients = gradients.astype(_accumulation_dtype(gradients.dtype))
    return jnp.sum(jnp.square(gradients.reshape(gradients.shape[0], -1)), axis=1)


def _norm_power(squared_norms: jax.Array, p: float) -> jax.Array:
    """‖g‖^p computed as (Σ g²)^{p/2}, with a finite gradient at g = 0.

    Taking the square root first and then the power would put the square root's infinite
    slope at zero into every gradient (0 · ∞ = NaN) whatever p is. Raising Σ g² to p/2
    directly has the derivative (p/2)·s^{p/2 − 1}, finite at s = 0 for p ≥ 2. For p < 2 the
    zero point is routed around the power with the double-`where` trick, giving the true
    derivative of ‖g‖^p at g = 0, which is 0 for every p > 1 (and the subgradient 0 for
    p = 1).
    """
    half_p = p / 2
    if half_p == 1:
        return squared_norms
    if half_p > 1:
        return jnp.power(squared_norms, half_p)
    positive = squared_norms > 0
    safe = jnp.where(positive, squared_norms, 1.0)
    return jnp.where(positive, jnp.power(safe, half_p), 0.0)


def gradient_norms(critic: Critic, x: jax.Array, *, per_sample: bool = False) -> jax.Array:
    """Per-sample norms of the critic's input gradient.

    With ``per_sample=False`` (the seed's definition, SPEC §2.3) the gradient is
    ∇ₓ Σ_b critic(x)_b, so for a critic with batch norm in training mode each row also
    carries the other samples' influence through the batch statistics. With
    ``per_sample=True`` each sample is run through the critic alone, as a batch of one,
    under ``jax.vmap``: this drops the cross-sample terms, and batch norm then normalises
    each sample with its own statistics, which changes what the critic computes.

    Args:
      critic: maps (batch, ...) inputs to (batch,) scores.
      x: (batch, ...) floating-point inputs.
      per_sample: differentiate each sample's own score through a batch of one.

    Returns:
      (batch,) norms over all non-batch axes, in float32 (float64 for float64 inputs).
      Differentiable everywhere, including at a zero gradient (derivative 0 there).
    """
    _check_batch("x", x)
    return _norm_power(_squared_gradient_norms(critic, jnp.asarray(x), per_sample), 1.0)


# ----------------------------------------------------------------------------------------
# r(x): the points the penalty is evaluated on.


def _interpolate(start: jax.Array, end: jax.Array, key: jax.Array) -> jax.Array:
    """start + t·(end − start), one t ~ U(0, 1) per sample, in the dtype of the inputs."""
    compute_dtype = _accumulation_dtype(start.dtype)
    t_shape = (start.shape[0],) + (1,) * (start.ndim - 1)
    t = jax.random.uniform(key, t_shape, dtype=compute_dtype)
    start_c, end_c = start.astype(compute_dtype), end.astype(compute_dtype)
    return (start_c + t * (end_c - start_c)).astype(start.dtype)


def _other_member_pairs(x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pairs every sample with a different random sample of the same batch.

    The batch is shuffled into a random cycle and each sample is paired with its successor,
    so no sample is paired with itself (for batch ≥ 2) and each is a partner exactly once.
    """
    n = x.shape[0]
    order = jax.random.permutation(key, n)
    partner = jnp.zeros(n, dtype=order.dtype).at[order].set(jnp.roll(order, -1))
    return x, x[partner]


def _penalty_batches(
    x_real: jax.Array, x_fake: jax.Array, strategy: str, key
) -> Sequence[jax.Array]:
    """The r(x) points as equally weighted populations, one critic call each."""
    if strategy == "real_and_fake":
        return (x_real, x_fake)
    if strategy == "fake":
        return (x_fake,)
    if strategy == "real":
        return (x_real,)
    if strategy == "real_fake_interpolation":
        return (_interpolate(x_fake, x_real, key),)
    if strategy == "real_real_and_fake_fake_interpolation":
        pair_real, pair_fake, t_real, t_fake = jax.random.split(key, 4)
        return (
            _interpolate(*_other_member_pairs(x_real, pair_real), t_real),
            _interpolate(*_other_member_pairs(x_fake, pair_fake), t_fake),
        )
    if strategy == "mixed_pairs_interpolation":
        pair_key, t_key = jax.random.split(key)
        pool = jnp.concatenate([x_real, x_fake])
        order = jax.random.permutation(pair_key, pool.shape[0])
        batch = x_real.shape[0]
        return (_interpolate(pool[order[:batch]], pool[order[batch:]], t_key),)
    raise AssertionError(strategy)  # unreachable: _check_strategy ran first


def penalty_points(
    x_real: jax.Array, x_fake: jax.Array, strategy: str, key: jax.Array | None
) -> jax.Array:
    """The points r(x) on which a penalty evaluates the critic (SPEC §2.2).

    Args:
      x_real: (batch, ...) real samples.
      x_fake: (batch, ...) generated samples, same shape as x_real.
      strategy: one of ``STRATEGIES`` (see the module docstring).
      key: PRNG key; needed by the three ``*_interpolation`` strategies, ignored otherwise.

    Returns:
      The points in the dtype of the inputs: (batch, ...) for ``real_fake_interpolation``,
      ``mixed_pairs_interpolation``, ``fake`` and ``real``; (2·batch, ...) for
      ``real_and_fake`` (real then fake) and ``real_real_and_fake_fake_interpolation``
      (real–real points then fake–fake points). A penalty averages over all returned points
      with equal weight, but calls the critic separately on the two halves of a
      (2·batch, ...) result, so a critic with batch statistics gives a different penalty
      than one call on these points would.
    """
    _check_pair(x_real, x_fake)
    _check_strategy(strategy, key)
    batches = _penalty_batches(jnp.asarray(x_real), jnp.asarray(x_fake), strategy, key)
    return batches[0] if len(batches) == 1 else jnp.concatenate(batches)


def _mean_over_populations(critic: Critic, batches, per_point: Callable) -> jax.Array:
    """Mean of per_point(Σ g²) over each population, then over populations."""
    means = [jnp.mean(per_point(_squared_gradient_norms(critic, b, False))) for b in batches]
    return sum(means) / len(means)


# ----------------------------------------------------------------------------------------
# Penalties.


def wgan_div_penalty(
    critic: Critic,
    x_real: jax.Array,
    x_fake: jax.Array,
    *,
    k: float = 2.0,
    p: float = 6.0,
    strategy: str = "real_and_fake",
    key: jax.Array | None = None,
) -> jax.Array:
    """The Wasserstein-divergence penalty k·E_{x∼r}[‖∇ₓT(x)‖^p] (SPEC §2.1).

    The critic minimises (in the seed's sign convention) E_real[T] − E_fake[T] + this
    penalty. The defaults k = 2, p = 6 and ``strategy="real_and_fake"`` are the seed's
    (SPEC §2.3): k·½·[mean_i ‖∇T(x_real)_i‖^p + mean_i ‖∇T(x_fake)_i‖^p], with the critic
    called once on the real batch and once on the fake batch. The official code uses
    ``real_fake_interpolation`` and k = 10 (SPEC §2.4).

    ‖g‖^p is computed as (Σ g²)^{p/2} in float32, never as a square root raised to p: the
    value and its gradient are finite at a zero input gradient (a constant critic).

    Args:
      critic: maps (batch, ...) inputs to (batch,) scores.
      x_real: (batch, ...) real samples, floating point.
      x_fake: (batch, ...) generated samples, same shape as x_real.
      k: penalty weight, > 0; a static Python number.
      p: power of the gradient norm, > 1; a static Python number.
      strategy: where r(x) puts its points, one of ``STRATEGIES`` (module docstring).
      key: PRNG key, required by the ``*_interpolation`` strategies.

    Returns:
      A scalar, float32 (float64 for float64 inputs).

    Raises:
      ValueError: p ≤ 1, k ≤ 0, an unknown strategy, a missing key, mismatched or empty
        batches, or a critic whose scores are not (batch,).
    """
    k = _static_float("k", k)
    p = _static_float("p", p)
    if p <= 1:
        raise ValueError(f"p must be > 1 for W_k,p to be a divergence (SPEC §2.1), got {p}")
    if k <= 0:
        raise ValueError(f"k must be > 0 (SPEC §2.1), got {k}")
    _check_pair(x_real, x_fake)
    _check_strategy(strategy, key)
    batches = _penalty_batches(jnp.asarray(x_real), jnp.asarray(x_fake), strategy, key)
    return k * _mean_over_populations(critic, batches, lambda s: _norm_power(s, p))


def wgan_gp_penalty(
    critic: Critic,
    x_real: jax.Array,
    x_fake: jax.Array,
    key: jax.Array | None,
    *,
    weight: float = 10.0,
    center: float = 1.0,
    strategy: str = "real_fake_interpolation",
) -> jax.Array:
    """The WGAN-GP penalty λ·E_{x̂}[(‖∇ₓT(x̂)‖ − center)²] (Gulrajani et al. 2017).

    The seed (SPEC §2.5) uses λ = 10, center 1, uniform real–fake interpolates, and
    sqrt(Σ g² + 1e-9) for the norm. Here the norm is the exact sqrt(Σ g²) with its zero
    point guarded by a double `where`, so it has no 1e-9 bias (the seed's norm is off by at
    most 3.2e-5) and still a finite gradient (0) at a zero input gradient.

    Args:
      critic: maps (batch, ...) inputs to (batch,) scores.
      x_real: (batch, ...) real samples, floating point.
      x_fake: (batch, ...) generated samples, same shape as x_real.
      key: PRNG key for the interpolation; may be None for a non-sampling strategy.
      weight: λ ≥ 0.
      center: the target norm; 1 for WGAN-GP, 0 for a zero-centred penalty.
      strategy: r(x), one of ``STRATEGIES``; the seed and WGAN-GP use the default. The
        WGAN-div paper compares WGAN-GP across all six (SPEC §2.2).

    Returns:
      A scalar, float32 (float64 for float64 inputs).
    """
    weight = _check_weight(weight)
    center = _static_float("center", center)
    _check_pair(x_real, x_fake)
    _check_strategy(strategy, key)
    batches = _penalty_batches(jnp.asarray(x_real), jnp.asarray(x_fake), strategy, key)
    return weight * _mean_over_populations(
        critic, batches, lambda s: jnp.square(_norm_power(s, 1.0) - center)
    )


def _zero_centred_penalty(critic: Critic, x: jax.Array, weight: float) -> jax.Array:
    return weight / 2 * _mean_over_populations(critic, (x,), lambda s: s)


def r1_penalty(critic: Critic, x_real: jax.Array, *, weight: float) -> jax.Array:
    """The zero-centred R1 penalty (γ/2)·E_real[‖∇ₓT(x)‖²] (Mescheder et al. 2018).

    Args:
      critic: maps (batch, ...) inputs to (batch,) scores.
      x_real: (batch, ...) real samples, floating point.
      weight: γ ≥ 0 (10 in Mescheder et al.'s CelebA-HQ runs).

    Returns:
      A scalar, float32 (float64 for float64 inputs).
    """
    weight = _check_weight(weight)
    _check_batch("x_real", x_real)
    return _zero_centred_penalty(critic, jnp.asarray(x_real), weight)


def r2_penalty(critic: Critic, x_fake: jax.Array, *, weight: float) -> jax.Array:
    """The zero-centred R2 penalty (γ/2)·E_fake[‖∇ₓT(x)‖²] (Mescheder et al. 2018).

    Args:
      critic: maps (batch, ...) inputs to (batch,) scores.
      x_fake: (batch, ...) generated samples, floating point.
      weight: γ ≥ 0.

    Returns:
      A scalar, float32 (float64 for float64 inputs).
    """
    weight = _check_weight(weight)
    _check_batch("x_fake", x_fake)
    return _zero_centred_penalty(critic, jnp.asarray(x_fake), weight)
