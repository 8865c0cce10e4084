"""Tests for kernels/gan_losses.py: hand-computed values, stability and gradient signs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import gan_losses as gl

LOSS_NAMES = tuple(gl.GAN_LOSSES)


def softplus(s):
    return math.log1p(math.exp(s)) if s < 30 else s + math.log1p(math.exp(-s))


def critic_value(loss, real, fake):
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    return float(jax.jit(loss.critic)(real, fake))


def generator_value(loss, fake):
    return float(jax.jit(loss.generator)(jnp.asarray(fake, jnp.float32)))


def test_non_saturating_hand_computed():
    loss = gl.get_gan_loss("non_saturating")
    np.testing.assert_allclose(critic_value(loss, [0.0], [0.0]), 2 * math.log(2), rtol=1e-6)
    real, fake = [1.0, -1.0], [0.0, 2.0]
    expected = np.mean([softplus(-r) for r in real]) + np.mean([softplus(f) for f in fake])
    np.testing.assert_allclose(critic_value(loss, real, fake), expected, rtol=1e-6)
    np.testing.assert_allclose(
        generator_value(loss, fake), np.mean([softplus(-f) for f in fake]), rtol=1e-6
    )


def test_non_saturating_matches_the_seeds_sigmoid_form_where_that_is_accurate():
    # The seed (docs/wgan_div.md §2.1): −log(σ(r) + 1e-9) − log(1 − σ(f) + 1e-9) on sigmoid outputs.
    def sigmoid(s):
        return 1 / (1 + math.exp(-s))

    real, fake = [2.5, -0.3, 0.7], [-1.2, 0.4]
    seed = np.mean([-math.log(sigmoid(r) + 1e-9) for r in real]) + np.mean(
        [-math.log(1 - sigmoid(f) + 1e-9) for f in fake]
    )
    ours = critic_value(gl.NON_SATURATING, real, fake)
    np.testing.assert_allclose(ours, seed, rtol=1e-6)


def test_non_saturating_stays_exact_for_confident_mistakes():
    # A real logit of −200: σ underflows to 0, the seed's ε form saturates at −log 1e-9 ≈ 20.7,
    # the softplus form costs exactly 200 and keeps slope −1.
    real, fake = jnp.array([-200.0]), jnp.array([-200.0])
    value, (d_real, d_fake) = jax.jit(
        jax.value_and_grad(gl.non_saturating_critic_loss, argnums=(0, 1))
    )(real, fake)
    np.testing.assert_allclose(value, 200.0, rtol=1e-6)
    np.testing.assert_allclose(d_real, [-1.0], rtol=1e-6)
    assert np.all(np.isfinite(d_fake)) and float(d_fake[0]) >= 0.0
    g_value, g_grad = jax.jit(jax.value_and_grad(gl.non_saturating_generator_loss))(
        jnp.array([-200.0])
    )
    np.testing.assert_allclose(g_value, 200.0, rtol=1e-6)
    np.testing.assert_allclose(g_grad, [-1.0], rtol=1e-6)


def test_wasserstein_hand_computed_and_the_seeds_sign_convention():
    loss = gl.get_gan_loss("wasserstein")
    real, fake = [1.0, -1.0, 0.5], [2.0, 0.0]
    np.testing.assert_allclose(critic_value(loss, real, fake), 1.0 - 0.5 / 3, rtol=1e-6)
    np.testing.assert_allclose(critic_value(loss, [1.0], [-1.0]), -2.0, rtol=1e-6)
    np.testing.assert_allclose(generator_value(loss, fake), -1.0, rtol=1e-6)
    # The seed's critic D = −T (real LOW, docs/wgan_div.md §2.1): D loss mean(D_r) − mean(D_f),
    # G loss mean(D(G(z))).
    d_real, d_fake = -np.array(real), -np.array(fake)
    np.testing.assert_allclose(
        critic_value(loss, real, fake), np.mean(d_real) - np.mean(d_fake), rtol=1e-6
    )
    np.testing.assert_allclose(generator_value(loss, fake), np.mean(d_fake), rtol=1e-6)


def test_hinge_hand_computed():
    loss = gl.get_gan_loss("hinge")
    # max(0, 1 − r) = [0, 0.5, 2]; max(0, 1 + f) = [0, 1, 2].
    np.testing.assert_allclose(
        critic_value(loss, [2.0, 0.5, -1.0], [-2.0, 0.0, 1.0]), 2.5 / 3 + 1.0, rtol=1e-6
    )
    np.testing.assert_allclose(critic_value(loss, [1.0], [-1.0]), 0.0, atol=1e-7)
    np.testing.assert_allclose(critic_value(loss, [0.0], [0.0]), 2.0, rtol=1e-6)
    np.testing.assert_allclose(generator_value(loss, [-2.0, 0.0, 1.0]), 1 / 3, rtol=1e-6)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), name=st.sampled_from(LOSS_NAMES))
def test_gradient_signs_real_high_convention(seed, name):
    # Real scores up or fake scores down lowers the critic's loss; fake scores up lowers
    # the generator's. Scores in (−0.9, 0.9) keep every hinge term active.
    loss = gl.get_gan_loss(name)
    rng = np.random.default_rng(seed)
    real = jnp.asarray(rng.uniform(-0.9, 0.9, size=6), jnp.float32)
    fake = jnp.asarray(rng.uniform(-0.9, 0.9, size=4), jnp.float32)
    d_real, d_fake = jax.jit(jax.grad(loss.critic, argnums=(0, 1)))(real, fake)
    assert np.all(d_real < 0) and np.all(d_fake > 0)
    assert np.all(jax.jit(jax.grad(loss.generator))(fake) < 0)
    critic = jax.jit(loss.critic)
    assert critic(real + 0.05, fake) < critic(real, fake) < critic(real, fake + 0.05)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bfloat16_scores_give_float32_losses(name):
    loss = gl.get_gan_loss(name)
    real = jnp.array([0.5, -0.25, 1.5], jnp.bfloat16)
    fake = jnp.array([-0.75, 0.125], jnp.bfloat16)
    critic = jax.jit(loss.critic)(real, fake)
    generator = jax.jit(loss.generator)(fake)
    assert critic.dtype == jnp.float32 and generator.dtype == jnp.float32
    # The values are exact in bfloat16, so the float32 losses must agree with float32 inputs.
    np.testing.assert_allclose(
        critic, critic_value(loss, real.astype(float), fake.astype(float)), rtol=1e-6
    )
    np.testing.assert_allclose(generator, generator_value(loss, fake.astype(float)), rtol=1e-6)


def test_losses_are_looked_up_by_name():
    assert gl.get_gan_loss("non_saturating") is gl.NON_SATURATING
    assert gl.get_gan_loss("wasserstein") is gl.WASSERSTEIN
    assert gl.get_gan_loss("hinge") is gl.HINGE
    with pytest.raises(ValueError, match="unknown GAN loss 'lsgan'") as error:
        gl.get_gan_loss("lsgan")
    assert all(name in str(error.value) for name in LOSS_NAMES)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bad_scores_are_rejected(name):
    loss = gl.get_gan_loss(name)
    with pytest.raises(ValueError, match="real_.* must be floating point"):
        loss.critic(np.array([1, 2]), np.array([0.5]))
    with pytest.raises(ValueError, match=r"fake_.* must not be empty, got shape \(0,\)"):
        loss.critic(np.array([1.0]), np.zeros((0,)))
    with pytest.raises(ValueError, match="fake_.* must be floating point"):
        loss.generator(np.array([1, 2]))
