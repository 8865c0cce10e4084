"""Tests for models/mlp_gan.py: the mixture-of-Gaussians nets (docs/wgan_div.md §3.4).

The reference is a numpy forward pass with the module's weights copied out; parameter
counts are written from the layer list of `gan_toy.py` (Gulrajani et al. 2017).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import mlp_gan

LAYERS = ("Dense_0", "Dense_1", "Dense_2", "Dense_3")


@functools.cache
def _init(module, input_dim):
    key = jax.random.key(0, impl="rbg")  # same distributions, cheaper to compile on CPU
    return jax.jit(functools.partial(module.init, train=False))(key, jnp.zeros((1, input_dim)))


@functools.cache
def _apply_fn(module, train):
    if train:
        return jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"]))
    return jax.jit(functools.partial(module.apply, train=False))


def _numpy_mlp(params, x, kernels=None):
    """ReLU MLP over Dense_0 … Dense_3; ``kernels`` overrides the stored kernels."""
    h = np.asarray(x, np.float64)
    for i, layer in enumerate(LAYERS):
        kernel = kernels[layer] if kernels else params[layer]["kernel"]
        h = h @ np.asarray(kernel, np.float64) + np.asarray(params[layer]["bias"], np.float64)
        if i < len(LAYERS) - 1:
            h = np.maximum(h, 0)
    return h


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_parameter_counts_follow_gan_toy():
    # 2 → 512 → 512 → 512 → 2 (generator) and 2 → 512 → 512 → 512 → 1 (critic).
    hidden = (2 * 512 + 512) + 2 * (512 * 512 + 512)
    assert _count(_init(mlp_gan.MLPGenerator(), 2)["params"]) == hidden + 512 * 2 + 2
    assert _count(_init(mlp_gan.MLPCritic(), 2)["params"]) == hidden + 512 * 1 + 1
    assert "batch_stats" not in _init(mlp_gan.MLPCritic(), 2)  # no normalisation


@settings(max_examples=5, deadline=None)
@given(batch=st.integers(1, 8), seed=st.integers(0, 2**16), spread=st.floats(0.1, 10.0))
def test_forward_matches_numpy(batch, seed, spread):
    generator, critic = mlp_gan.MLPGenerator(), mlp_gan.MLPCritic()
    g_params, c_params = _init(generator, 2)["params"], _init(critic, 2)["params"]
    z = np.random.default_rng(seed).standard_normal((batch, 2)).astype(np.float32) * spread

    points = _apply_fn(generator, False)({"params": g_params}, z)
    scores = _apply_fn(critic, False)({"params": c_params}, points)
    assert points.shape == (batch, 2) and scores.shape == (batch,)
    np.testing.assert_allclose(points, _numpy_mlp(g_params, z), rtol=1e-4, atol=1e-5 * spread)
    np.testing.assert_allclose(scores, _numpy_mlp(c_params, points)[:, 0], rtol=1e-4,
                               atol=1e-5 * spread)


def test_initializers_are_he_uniform_then_glorot_uniform():
    params = _init(mlp_gan.MLPGenerator(), 2)["params"]
    # gan_toy.py: hidden U(±√3·√(2/fan_in)) = U(±√(6/fan_in)); output Glorot U(±√(6/(in+out))).
    for layer, limit in (("Dense_0", np.sqrt(6 / 2)), ("Dense_1", np.sqrt(6 / 512)),
                         ("Dense_3", np.sqrt(6 / (512 + 2)))):
        kernel = np.asarray(params[layer]["kernel"], np.float64)
        assert np.abs(kernel).max() <= limit
        assert np.abs(kernel).max() > 0.99 * limit
        assert abs(kernel.std() / (limit / np.sqrt(3)) - 1) < 0.05
        assert not np.any(params[layer]["bias"])


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"z must have shape.*z_dim=2.*\(3, 5\)"):
        mlp_gan.MLPGenerator().init(jax.random.key(0), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"x must have shape.*data_dim=2.*\(3,\)"):
        mlp_gan.MLPCritic().init(jax.random.key(0), jnp.zeros((3,)), train=False)
    with pytest.raises(ValueError, match="width"):
        mlp_gan.MLPCritic(width=0)
    with pytest.raises(ValueError, match="sn_power_iterations"):
        mlp_gan.MLPCritic(spectral_norm=True, sn_power_iterations=0)


def test_spectral_norm_critic_runs_on_kernels_divided_by_their_top_singular_value():
    critic = mlp_gan.MLPCritic(spectral_norm=True, sn_power_iterations=5)
    variables = _init(critic, 2)
    rng = np.random.default_rng(0)
    params = dict(variables["params"])
    for layer in LAYERS[:3]:  # give the kernels a spectral gap, as trained ones have
        kernel = np.asarray(params[layer]["kernel"], np.float64)
        a, b = rng.standard_normal(kernel.shape[0]), rng.standard_normal(kernel.shape[1])
        kernel = kernel + 2 * np.linalg.norm(kernel) * np.outer(a, b) / np.linalg.norm(
            a) / np.linalg.norm(b)
        params[layer] = {**params[layer], "kernel": jnp.asarray(kernel, jnp.float32)}

    batch_stats = variables["batch_stats"]
    x = rng.standard_normal((16, 2)).astype(np.float32)
    for _ in range(4):
        _, updates = _apply_fn(critic, True)({"params": params, "batch_stats": batch_stats}, x)
        batch_stats = updates["batch_stats"]
    assert len(batch_stats) == len(LAYERS)  # one SpectralNorm state per dense layer

    scores = _apply_fn(critic, False)({"params": params, "batch_stats": batch_stats}, x)
    divided = {layer: np.asarray(params[layer]["kernel"], np.float64)
               / np.linalg.svd(np.asarray(params[layer]["kernel"], np.float64),
                               compute_uv=False)[0]
               for layer in LAYERS}
    np.testing.assert_allclose(scores, _numpy_mlp(params, x, divided)[:, 0], rtol=1e-3,
                               atol=1e-5)
    # The unnormalised critic gives something else.
    assert not np.allclose(scores, _numpy_mlp(params, x)[:, 0], rtol=1e-2)
