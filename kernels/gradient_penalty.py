"""Gradient penalties for GAN critics: WGAN-div, WGAN-GP and zero-centred R1/R2.

A critic is any callable ``critic(x) -> scores`` mapping a batch ``x`` of shape
``(batch, ...)`` to scores of shape ``(batch,)``; close over its parameters (and its
batch-norm mode) before passing it in. Every penalty here differentiates the critic with
respect to its input, so taking ``jax.grad`` of a penalty with respect to the critic's
parameters is a double backward pass.

Gradients are those of the *sum* of the batch's scores, ∇ₓ Σ_b T(x)_b, as in the seed
(docs/wgan_div.md §2.2): with batch norm in training mode a sample's score depends on the
whole batch, and these cross-sample terms are kept. ``gradient_norms(..., per_sample=True)``
gives each sample's own gradient instead.

Every norm runs over all non-batch axes (all pixels and channels, docs/wgan_div.md §2.2). Squared
norms are accumulated in at least float32 whatever the input dtype, so bfloat16 batches
give float32 penalties. Penalties are invariant under the critic's sign, so they pair with
any sign convention of ``kernels.gan_losses``.

The r(x) sampling strategies of the WGAN-div paper (docs/wgan_div.md §2.3) are:

- ``real_fake_interpolation``: x̂ᵢ = x_fakeᵢ + tᵢ (x_realᵢ − x_fakeᵢ), tᵢ ~ U(0, 1);
  the WGAN-GP points, and the official WGAN-div code's choice (docs/wgan_div.md §4.1).
- ``real_real_and_fake_fake_interpolation``: each real sample interpolated with another
  real sample, each fake sample with another fake sample; weight ½ each.
- ``mixed_pairs_interpolation``: the 2·batch real and fake samples shuffled together and
  split into batch random pairs (each sample used once), each pair interpolated.
- ``real_and_fake``: the raw real and fake batches, weight ½ each, no interpolation;
  the seed's choice (docs/wgan_div.md §2.3).
- ``fake``: the fake batch only.
- ``real``: the real batch only.

Strategies that return two populations (``real_and_fake``,
``real_real_and_fake_fake_interpolation``) call the critic once per population, as the
seed calls its critic separately on real and fake batches so that batch norm normalises
each with its own statistics (docs/index.md §2 item 3, docs/wgan_div.md §2.3).

A critic step needs the scores of the real and the fake batch as well as the penalty.
`critic_scores_and_penalty` gives all three for a `Penalty` (the static settings of one of
the penalties above) and shares the work: where the penalty's points are the real or the
fake batch themselves (``real_and_fake``, ``real``, ``fake``, R1, R2), ∇ₓ comes from the
pullback of the forward pass that scored that batch, one ``jax.vjp`` per batch, as the
seed's ``K.gradients`` on its score tensors does, instead of a second forward pass inside
``jax.grad``. The batches still go through the critic in separate calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Critic = Callable[[jax.Array], jax.Array]
# critic(x, state) -> (scores, new state): a critic that carries state between calls
# (batch-norm moving averages, spectral-norm vectors), e.g. a flax apply with
# mutable=["batch_stats"].
StatefulCritic = Callable[[jax.Array, Any], tuple[jax.Array, Any]]

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

    With ``per_sample=False`` (the seed's definition, docs/wgan_div.md §2.2) the gradient is
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
    """The points r(x) on which a penalty evaluates the critic (docs/wgan_div.md §2.3).

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
    return _mean_of_squared_norms(
        [_squared_gradient_norms(critic, b, False) for b in batches], per_point)


def _mean_of_squared_norms(squared_norms: Sequence[jax.Array], per_point: Callable
                           ) -> jax.Array:
    """Mean of per_point(s) over each population's (n,) squared norms, then over them."""
    means = [jnp.mean(per_point(s)) for s in squared_norms]
    return sum(means) / len(means)


# ----------------------------------------------------------------------------------------
# Penalties. Each is scale · mean over populations of mean_i per_point(‖∇ₓT(x_i)‖²).


def _wgan_div_per_point(p: float) -> Callable[[jax.Array], jax.Array]:
    return lambda squared_norms: _norm_power(squared_norms, p)


def _wgan_gp_per_point(center: float) -> Callable[[jax.Array], jax.Array]:
    return lambda squared_norms: jnp.square(_norm_power(squared_norms, 1.0) - center)


def _zero_centred_per_point(squared_norms: jax.Array) -> jax.Array:
    return squared_norms


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
    """The Wasserstein-divergence penalty k·E_{x∼r}[‖∇ₓT(x)‖^p] (docs/wgan_div.md §1.2).

    The critic minimises (in the seed's sign convention) E_real[T] − E_fake[T] + this
    penalty. The defaults k = 2, p = 6 and ``strategy="real_and_fake"`` are the seed's
    (docs/wgan_div.md §2.2): k·½·[mean_i ‖∇T(x_real)_i‖^p + mean_i ‖∇T(x_fake)_i‖^p], with
    the critic called once on the real batch and once on the fake batch. The official code
    uses ``real_fake_interpolation`` and k = 10 (docs/wgan_div.md §4.1).

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
        raise ValueError(f"p must be > 1 for W_k,p to be a divergence "
                         f"(docs/wgan_div.md §1.2), got {p}")
    if k <= 0:
        raise ValueError(f"k must be > 0 (docs/wgan_div.md §1.2), got {k}")
    _check_pair(x_real, x_fake)
    _check_strategy(strategy, key)
    batches = _penalty_batches(jnp.asarray(x_real), jnp.asarray(x_fake), strategy, key)
    return k * _mean_over_populations(critic, batches, _wgan_div_per_point(p))


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

    The seed (docs/wgan_div.md §2.2, §4.1) uses λ = 10, center 1, uniform real–fake
    interpolates, and sqrt(Σ g² + 1e-9) for the norm. Here the norm is the exact sqrt(Σ g²)
    with its zero point guarded by a double `where`, so it has no 1e-9 bias (the seed's norm
    is off by at most 3.2e-5) and still a finite gradient (0) at a zero input gradient.

    Args:
      critic: maps (batch, ...) inputs to (batch,) scores.
      x_real: (batch, ...) real samples, floating point.
      x_fake: (batch, ...) generated samples, same shape as x_real.
      key: PRNG key for the interpolation; may be None for a non-sampling strategy.
      weight: λ ≥ 0.
      center: the target norm; 1 for WGAN-GP, 0 for a zero-centred penalty.
      strategy: r(x), one of ``STRATEGIES``; the seed and WGAN-GP use the default. The
        WGAN-div paper compares WGAN-GP across all six (docs/wgan_div.md §1.3).

    Returns:
      A scalar, float32 (float64 for float64 inputs).
    """
    weight = _check_weight(weight)
    center = _static_float("center", center)
    _check_pair(x_real, x_fake)
    _check_strategy(strategy, key)
    batches = _penalty_batches(jnp.asarray(x_real), jnp.asarray(x_fake), strategy, key)
    return weight * _mean_over_populations(critic, batches, _wgan_gp_per_point(center))


def _zero_centred_penalty(critic: Critic, x: jax.Array, weight: float) -> jax.Array:
    return weight / 2 * _mean_over_populations(critic, (x,), _zero_centred_per_point)


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


# ----------------------------------------------------------------------------------------
# A critic step's scores and penalty together.

PENALTY_KINDS = ("none", "wgan_div", "wgan_gp", "r1", "r2")

# The strategies whose points are the batches themselves, by name.
_RAW_BATCH_STRATEGIES = {"real_and_fake": ("real", "fake"), "real": ("real",),
                         "fake": ("fake",)}


@dataclasses.dataclass(frozen=True)
class Penalty:
    """One of the penalties above with its static settings.

    Called as ``penalty(critic, x_real, x_fake, key=None)`` it is the function of its kind
    (``wgan_div_penalty``, ``wgan_gp_penalty``, ``r1_penalty``, ``r2_penalty``; "none" is
    0), each population through its own critic call; `critic_scores_and_penalty` computes
    the same penalty sharing the scoring calls' forward passes.

    Attributes:
      kind: one of ``PENALTY_KINDS``.
      k, p: the W-div weight (> 0) and power (> 1), kind "wgan_div" (docs/wgan_div.md §2.2).
      weight: λ ≥ 0 of "wgan_gp", γ ≥ 0 of "r1" and "r2".
      center: the target norm of "wgan_gp".
      strategy: r(x) of "wgan_div" and "wgan_gp", one of ``STRATEGIES``.

    Raises:
      ValueError: an unknown kind or strategy, or a value out of its range.
    """

    kind: str = "wgan_div"
    k: float = 2.0
    p: float = 6.0
    weight: float = 10.0
    center: float = 1.0
    strategy: str = "real_and_fake"

    def __post_init__(self):
        if self.kind not in PENALTY_KINDS:
            raise ValueError(f"unknown penalty kind {self.kind!r}; valid kinds: "
                             f"{PENALTY_KINDS}")
        if self.kind in ("wgan_div", "wgan_gp") and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; valid strategies: "
                             f"{STRATEGIES}")
        if self.kind == "wgan_div":
            if _static_float("p", self.p) <= 1:
                raise ValueError(f"p must be > 1 for W_k,p to be a divergence "
                                 f"(docs/wgan_div.md §1.2), got {self.p}")
            if _static_float("k", self.k) <= 0:
                raise ValueError(f"k must be > 0 (docs/wgan_div.md §1.2), got {self.k}")
        if self.kind in ("wgan_gp", "r1", "r2"):
            _check_weight(self.weight)
        if self.kind == "wgan_gp":
            _static_float("center", self.center)

    def __call__(self, critic: Critic, x_real: jax.Array, x_fake: jax.Array,
                 key: jax.Array | None = None) -> jax.Array:
        """The penalty, one critic call per population of points.

        Args:
          critic: maps (batch, ...) inputs to (batch,) scores.
          x_real: (batch, ...) real samples, floating point.
          x_fake: (batch, ...) generated samples, same shape as x_real.
          key: PRNG key, required by the ``*_interpolation`` strategies.

        Returns:
          A scalar, float32 (float64 for float64 inputs; float32 zero for "none").
        """
        _check_pair(x_real, x_fake)
        batches = self._populations(jnp.asarray(x_real), jnp.asarray(x_fake), key)
        if not batches:
            return jnp.zeros((), jnp.float32)
        scale, per_point = self._formula()
        return scale * _mean_over_populations(critic, batches, per_point)

    def _formula(self) -> tuple[float, Callable[[jax.Array], jax.Array]]:
        """(scale, per_point): the penalty is scale · mean over populations of
        mean_i per_point(‖∇ₓT(x_i)‖²)."""
        if self.kind == "wgan_div":
            return float(self.k), _wgan_div_per_point(float(self.p))
        if self.kind == "wgan_gp":
            return float(self.weight), _wgan_gp_per_point(float(self.center))
        return float(self.weight) / 2, _zero_centred_per_point

    def _populations(self, x_real, x_fake, key) -> Sequence[jax.Array]:
        if self.kind == "none":
            return ()
        if self.kind in ("r1", "r2"):
            return (x_real,) if self.kind == "r1" else (x_fake,)
        _check_strategy(self.strategy, key)
        return _penalty_batches(x_real, x_fake, self.strategy, key)

    def raw_batches(self) -> tuple[str, ...] | None:
        """Which batches ("real", "fake") the points are, as they are; None if sampled.

        Returns:
          () for "none"; ("real",) for "r1"; ("fake",) for "r2"; for "wgan_div" and
          "wgan_gp" the strategy's batches (``real_and_fake``: ("real", "fake")), or None
          for the ``*_interpolation`` strategies, whose points are drawn anew.
        """
        if self.kind == "none":
            return ()
        if self.kind in ("r1", "r2"):
            return ("real",) if self.kind == "r1" else ("fake",)
        return _RAW_BATCH_STRATEGIES.get(self.strategy)


class CriticTerms(NamedTuple):
    """What a critic step needs from one pass over its batches.

    Attributes:
      real_scores: (batch,) the critic's scores of x_real.
      fake_scores: (batch,) the critic's scores of x_fake.
      penalty: the penalty, a scalar.
      state: the critic's state after the real call and then the fake call.
    """

    real_scores: jax.Array
    fake_scores: jax.Array
    penalty: jax.Array
    state: Any


def _check_scores(scores, x: jax.Array) -> None:
    if jnp.shape(scores) != (x.shape[0],):
        raise ValueError(
            f"critic must map x of shape {x.shape} to scores of shape ({x.shape[0]},), "
            f"got {jnp.shape(scores)}"
        )


def _scores_and_squared_norms(critic: StatefulCritic, x: jax.Array, state, with_gradient: bool):
    """(scores (B,), new state, Σ g² (B,) of g = ∇ₓ Σ_b scores_b, or None) from one forward."""
    if not with_gradient:
        scores, state = critic(x, state)
        _check_scores(scores, x)
        return scores, state, None
    scores, pullback, state = jax.vjp(lambda batch: critic(batch, state), x, has_aux=True)
    _check_scores(scores, x)
    (gradient,) = pullback(jnp.ones_like(scores))
    gradient = gradient.astype(_accumulation_dtype(gradient.dtype))
    squared_norms = jnp.sum(jnp.square(gradient.reshape(gradient.shape[0], -1)), axis=1)
    return scores, state, squared_norms


def critic_scores_and_penalty(
    critic: StatefulCritic,
    state: Any,
    x_real: jax.Array,
    x_fake: jax.Array,
    penalty: Penalty | Callable[..., jax.Array],
    key: jax.Array | None = None,
    *,
    share_forward: bool = True,
) -> CriticTerms:
    """The critic's scores of both batches and the penalty, sharing forward passes.

    The critic scores x_real with ``state`` and then x_fake with the state the real call
    returned, each batch in its own call (batch norm normalises each with its own
    statistics, docs/index.md §2 item 3). With ``share_forward`` a population of penalty points
    that is one of these batches (``Penalty.raw_batches``) takes ∇ₓ Σ_b T(x)_b from the
    pullback of the call that scored it, so a penalised critic step runs one forward pass
    per batch, as PyTorch's ``autograd.grad`` on the scores and the seed's ``K.gradients``
    do. Other points (the ``*_interpolation`` strategies) go through
    ``critic(points, final state)``, its state update dropped.

    Sharing gives the same values and gradients as ``share_forward=False`` (the penalty
    evaluated by its own calls of ``critic(·, final state)``, state updates dropped) when
    the critic's scores do not depend on the state it is given: true of training-mode
    batch norm, which normalises with the batch's statistics and only writes the moving
    averages; false of spectral norm, whose power iteration starts from the stored vector.

    Args:
      critic: ``critic(x, state) -> (scores, new_state)``, x (batch, ...) to (batch,)
        scores; ``state`` is any pytree (None for a stateless critic).
      state: the critic's state before the real call.
      x_real: (batch, ...) real samples, floating point.
      x_fake: (batch, ...) generated samples, same shape as x_real.
      penalty: a `Penalty`, or any ``penalty(critic_fn, x_real, x_fake, key) -> scalar``
        with ``critic_fn: x -> scores``, which is then evaluated by its own calls.
      key: PRNG key for the penalty's sampled points.
      share_forward: reuse the scoring passes for the penalty where its points allow.

    Returns:
      `CriticTerms`: real and fake scores (batch,), the penalty (a scalar: float32, float64
      for float64 inputs) and the state after both scoring calls.

    Raises:
      ValueError: mismatched or empty batches, scores not (batch,), a sampling strategy
        without a key.
    """
    _check_pair(x_real, x_fake)
    x_real, x_fake = jnp.asarray(x_real), jnp.asarray(x_fake)
    shared = penalty.raw_batches() if isinstance(penalty, Penalty) and share_forward else None
    real_scores, state, real_squared = _scores_and_squared_norms(
        critic, x_real, state, with_gradient="real" in (shared or ()))
    fake_scores, state, fake_squared = _scores_and_squared_norms(
        critic, x_fake, state, with_gradient="fake" in (shared or ()))
    if not shared:  # nothing to share: the penalty's own calls at the final state
        final_state = state

        def critic_fn(x):
            return critic(x, final_state)[0]

        value = penalty(critic_fn, x_real, x_fake, key)
    else:
        scale, per_point = penalty._formula()
        squared = {"real": real_squared, "fake": fake_squared}
        value = scale * _mean_of_squared_norms([squared[name] for name in shared], per_point)
    return CriticTerms(real_scores, fake_scores, value, state)
