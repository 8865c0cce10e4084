"""GAN losses as pure functions of critic scores (compare_gan style).

Every loss is a pair of functions with one signature across the zoo:

    critic_loss(real_scores, fake_scores) -> scalar    # minimised by the critic
    generator_loss(fake_scores) -> scalar              # minimised by the generator

bundled as a ``GanLoss`` and looked up by name with ``get_gan_loss`` (the config value).
Scores are the critic's raw outputs, any shape (usually (batch,)); each loss averages over
all their elements, so real and fake batches may differ in size. Losses are computed in at
least float32, so bfloat16 scores give float32 losses. A penalty from
``kernels.gradient_penalty`` is added to the critic loss by the experiment.

Sign convention: the critic gives real samples HIGH scores, for every loss here (the usual
convention; for ``non_saturating`` the scores are the logits of "real"). The seed's WGAN
critics give real samples LOW scores: its D is −T with T ours, and its losses
mean(D(x_r)) − mean(D(x_f)) and mean(D(G(z))) are exactly ``wasserstein`` here. Gradient
penalties depend on ‖∇T‖ only, so they are the same in either convention
(docs/wgan_div.md §2.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class GanLoss(NamedTuple):
    """A GAN loss: ``critic(real_scores, fake_scores)`` and ``generator(fake_scores)``."""

    critic: Callable[[jax.Array, jax.Array], jax.Array]
    generator: Callable[[jax.Array], jax.Array]


def _as_scores(name: str, scores) -> jax.Array:
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got dtype {scores.dtype}")
    if scores.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {scores.shape}")
    return scores.astype(jnp.promote_types(scores.dtype, jnp.float32))


# Non-saturating (Goodfellow et al. 2014, arXiv 1406.2661; the DCGAN preset,
# docs/wgan_div.md §4.1). The seed applies a sigmoid and takes log(σ + 1e-9); with logits,
# −log σ(s) = softplus(−s) and −log(1 − σ(s)) = softplus(s) are exact, never take the log
# of 0, and keep their slope where the ε version flattens (a real logit of −30 costs 30
# here, ≈ 20.7 = −log 1e-9 in the seed's).


def non_saturating_critic_loss(real_logits, fake_logits) -> jax.Array:
    """−E[log σ(real)] − E[log(1 − σ(fake))] = E[softplus(−real)] + E[softplus(fake)].

    Args:
      real_logits: critic logits on real samples, any shape, floating point.
      fake_logits: critic logits on generated samples, any shape, floating point.

    Returns:
      A scalar, float32 (float64 for float64 logits).
    """
    real = _as_scores("real_logits", real_logits)
    fake = _as_scores("fake_logits", fake_logits)
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def non_saturating_generator_loss(fake_logits) -> jax.Array:
    """−E[log σ(fake)] = E[softplus(−fake)], the non-saturating generator loss.

    Args:
      fake_logits: critic logits on generated samples, any shape, floating point.

    Returns:
      A scalar, float32 (float64 for float64 logits).
    """
    return jnp.mean(jax.nn.softplus(-_as_scores("fake_logits", fake_logits)))


def wasserstein_critic_loss(real_scores, fake_scores) -> jax.Array:
    """E[T(fake)] − E[T(real)], the WGAN critic loss (docs/wgan_div.md §2.1).

    Args:
      real_scores: critic scores on real samples, any shape, floating point.
      fake_scores: critic scores on generated samples, any shape, floating point.

    Returns:
      A scalar, float32 (float64 for float64 scores).
    """
    real = _as_scores("real_scores", real_scores)
    fake = _as_scores("fake_scores", fake_scores)
    return jnp.mean(fake) - jnp.mean(real)


def wasserstein_generator_loss(fake_scores) -> jax.Array:
    """−E[T(fake)], the WGAN generator loss.

    Args:
      fake_scores: critic scores on generated samples, any shape, floating point.

    Returns:
      A scalar, float32 (float64 for float64 scores).
    """
    return -jnp.mean(_as_scores("fake_scores", fake_scores))


def hinge_critic_loss(real_scores, fake_scores) -> jax.Array:
    """E[max(0, 1 − T(real))] + E[max(0, 1 + T(fake))] (Lim & Ye 2017; SAGAN, BigGAN).

    Args:
      real_scores: critic scores on real samples, any shape, floating point.
      fake_scores: critic scores on generated samples, any shape, floating point.

    Returns:
      A scalar, float32 (float64 for float64 scores).
    """
    real = _as_scores("real_scores", real_scores)
    fake = _as_scores("fake_scores", fake_scores)
    return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def hinge_generator_loss(fake_scores) -> jax.Array:
    """−E[T(fake)], the hinge generator loss (the same as WGAN's).

    Args:
      fake_scores: critic scores on generated samples, any shape, floating point.

    Returns:
      A scalar, float32 (float64 for float64 scores).
    """
    return -jnp.mean(_as_scores("fake_scores", fake_scores))


NON_SATURATING = GanLoss(non_saturating_critic_loss, non_saturating_generator_loss)
WASSERSTEIN = GanLoss(wasserstein_critic_loss, wasserstein_generator_loss)
HINGE = GanLoss(hinge_critic_loss, hinge_generator_loss)

GAN_LOSSES = {
    "non_saturating": NON_SATURATING,
    "wasserstein": WASSERSTEIN,
    "hinge": HINGE,
}


def get_gan_loss(name: str) -> GanLoss:
    """The loss named ``name``, one of ``GAN_LOSSES``: the value a config holds."""
    if name not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}; valid losses: {tuple(GAN_LOSSES)}")
    return GAN_LOSSES[name]
