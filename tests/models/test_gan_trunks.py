"""Tests for models/gan_norms.py and models/gan_trunks.py (docs/gan_architectures.md).

References: numpy batch / instance norm, parameter counts from the layer lists, hand-built
up-sampling and pooling.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention as attention_lib
from models import dcgan, gan_norms, gan_trunks

B, Z = 6, 8


@pytest.fixture(autouse=True, scope="module")
def _flat_threefry():
    """These tests initialise eagerly, one compiled sampler per parameter shape, and XLA:CPU
    compiles the default (partitionable) Threefry's 3-D and 4-D draws about 8× slower than
    the classic one's (2.5 s against 0.3 s a conv kernel). They check shapes, counts and
    identities, never the initial values, so they take the classic draw."""
    with jax.threefry_partitionable(False):
        yield


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _numpy_batch_norm(x, epsilon=1e-3):
    axes = tuple(range(x.ndim - 1))
    return (x - x.mean(axes)) / np.sqrt(x.var(axes) + epsilon)


def _numpy_instance_norm(x, epsilon=1e-5):
    axes = tuple(range(1, x.ndim - 1))
    return (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + epsilon)


def _run(norm, x, condition, variables=None):
    variables = variables or norm.init(jax.random.PRNGKey(0), x, condition)
    out, _ = norm.apply(variables, x, condition, mutable=["batch_stats"])
    return np.asarray(out, np.float64), variables


# ---------------------------------------------------------------------------- norms


def test_self_mod_with_zero_heads_is_plain_batch_norm_and_depends_on_z_otherwise():
    x, z = _normal(0, (B, 4, 4, 5)) * 3 + 1, _normal(1, (B, Z))
    zero = gan_norms.SelfModulatedBatchNorm(hidden=16, head_init=nn.initializers.zeros)
    out, _ = _run(zero, x, gan_norms.Condition(z=z))
    np.testing.assert_allclose(out, _numpy_batch_norm(np.asarray(x, np.float64)), rtol=1e-4,
                               atol=1e-5)
    out_other_z, _ = _run(zero, x, gan_norms.Condition(z=z * 5))
    np.testing.assert_allclose(out_other_z, out, atol=1e-6)
    # With the default (Glorot) heads: BN(x)·(1 + γ(z)) + β(z), γ, β per sample.
    modulated = gan_norms.SelfModulatedBatchNorm(hidden=16)
    out, variables = _run(modulated, x, gan_norms.Condition(z=z))
    params = variables["params"]

    def mlp(name):
        p = params[name]
        h = np.maximum(np.asarray(z) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
        return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]

    expected = (_numpy_batch_norm(np.asarray(x, np.float64)) * (1 + mlp("gamma"))[:, None, None]
                + mlp("beta")[:, None, None])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert params["gamma"]["Dense_0"]["kernel"].shape == (Z, 16)


def test_adain_statistics_are_per_sample_and_per_channel():
    x, z = _normal(2, (B, 4, 4, 3)) * 2 - 1, _normal(3, (B, Z))
    norm = gan_norms.AdaptiveInstanceNorm(head_init=nn.initializers.zeros)
    out, variables = _run(norm, x, gan_norms.Condition(z=z))
    np.testing.assert_allclose(out, _numpy_instance_norm(np.asarray(x, np.float64)),
                               rtol=1e-4, atol=1e-5)
    # Sample 0's output does not depend on the rest of the batch (unlike BN's).
    other = x.at[1:].set(_normal(4, (B - 1, 4, 4, 3)) * 10)
    modulated = gan_norms.AdaptiveInstanceNorm()
    first, variables = _run(modulated, x, gan_norms.Condition(z=z))
    second, _ = _run(modulated, other, gan_norms.Condition(z=z), variables)
    np.testing.assert_allclose(first[0], second[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[1], second[1])


def test_conditional_bn_output_changes_with_the_label_and_only_with_it():
    x = jnp.broadcast_to(_normal(5, (1, 2, 2, 4)), (B, 2, 2, 4)) + _normal(6, (B, 2, 2, 4)) * 0
    x = x.at[:, 0, 0, :].add(jnp.arange(B, dtype=jnp.float32)[:, None])  # batch variance > 0
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    norm = gan_norms.ConditionalBatchNorm(num_classes=3)
    out, variables = _run(norm, x, gan_norms.Condition(labels=labels))
    # At initialisation (γ = 1, β = 0 for every class) it is plain BN.
    np.testing.assert_allclose(out, _numpy_batch_norm(np.asarray(x, np.float64)), rtol=1e-4,
                               atol=1e-5)
    params = jax.tree.map(np.array, variables["params"])
    params["gamma"]["embedding"] = np.array([[1.0] * 4, [2.0] * 4, [0.5] * 4])
    params["beta"]["embedding"] = np.array([[0.0] * 4, [1.0] * 4, [-1.0] * 4])
    variables = {**variables, "params": params}
    out, _ = _run(norm, x, gan_norms.Condition(labels=labels), variables)
    base = _numpy_batch_norm(np.asarray(x, np.float64))
    gamma, beta = params["gamma"]["embedding"], params["beta"]["embedding"]
    np.testing.assert_allclose(out, base * gamma[labels][:, None, None]
                               + beta[labels][:, None, None], rtol=1e-4, atol=1e-5)
    # The latent is ignored: only the labels condition it.
    with_z, _ = _run(norm, x, gan_norms.Condition(z=_normal(7, (B, Z)), labels=labels),
                     variables)
    np.testing.assert_allclose(with_z, out)
    relabelled, _ = _run(norm, x, gan_norms.Condition(labels=labels.at[0].set(1)), variables)
    np.testing.assert_allclose(relabelled[1:], out[1:])
    assert not np.allclose(relabelled[0], out[0])


def test_layer_norm_uses_per_sample_statistics_over_height_width_and_channels():
    x = _normal(8, (B, 4, 4, 3)) * 4 + 2
    out, _ = _run(gan_norms.LayerNorm(), x, None)
    flat = np.asarray(x, np.float64).reshape(B, -1)
    expected = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected.reshape(x.shape), rtol=1e-4, atol=1e-5)


def test_norm_factory_refuses_conditional_bn_without_classes_and_unknown_names():
    with pytest.raises(ValueError, match="num_classes"):
        gan_norms.norm_factory("conditional_bn")
    with pytest.raises(ValueError, match="unknown norm"):
        gan_norms.norm_factory("group_norm")


# ---------------------------------------------------------------------------- blocks


def test_nearest_upsampling_and_average_pooling_by_hand():
    x = jnp.arange(8.0).reshape(1, 2, 2, 2)
    up = np.asarray(gan_trunks.upsample_nearest(x))
    assert up.shape == (1, 4, 4, 2)
    np.testing.assert_array_equal(up[0, :2, :2, 1], np.full((2, 2), 1.0))
    np.testing.assert_array_equal(up[0, 2:, 2:, 0], np.full((2, 2), 6.0))
    np.testing.assert_array_equal(gan_trunks.average_pool(gan_trunks.upsample_nearest(x)), x)
    np.testing.assert_allclose(gan_trunks.average_pool(jnp.arange(16.0).reshape(1, 4, 4, 1))
                               [0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.parametrize("pattern", [attention_lib.Full(), attention_lib.Local(2)])
def test_self_attention_is_the_identity_at_init_and_follows_the_pattern(pattern):
    x = _normal(9, (2, 4, 4, 16))
    block = gan_norms.SelfAttention(pattern=pattern, implementation="xla")
    variables = block.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(block.apply(variables, x), x)
    params = {**variables["params"], "gamma": jnp.ones(())}
    out = np.asarray(block.apply({"params": params}, x))
    p = jax.tree.map(np.asarray, params)
    flat = np.asarray(x).reshape(2, 16, 16)
    q, k, v = (flat @ p[name]["kernel"] for name in ("query", "key", "value"))
    mask = np.asarray(attention_lib.dense_mask(pattern, 16))
    logits = np.where(mask, q @ k.transpose(0, 2, 1) / np.sqrt(2.0), -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = flat + (weights @ v) @ p["out"]["kernel"]
    np.testing.assert_allclose(out.reshape(2, 16, 16), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- trunks


def _spec(**settings):
    return gan_trunks.TrunkSpec(resolution=32, z_dim=Z, base_channels=4,
                                norm=gan_norms.norm_factory(settings.pop("norm", "bn")),
                                **settings)


def _count(variables):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))


def _init_pair(nets):
    z, x = jnp.zeros((2, Z)), jnp.zeros((2, 32, 32, 3))
    g = nets.generator.init(jax.random.PRNGKey(0), z, train=False)
    d = nets.critic.init(jax.random.PRNGKey(1), x, train=False)
    return g, d


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def test_resnet_shapes_and_parameter_counts_from_the_layer_list():
    nets = gan_trunks.build("resnet", _spec())
    g, d = _init_pair(nets)
    # Generator widths at 32 px, base 4: 4×4×16 → blocks 8, 4, 4 (sides 8, 16, 32).
    expected_g = Z * 16 * 16 + 16 * 16
    for cin, cout in ((16, 8), (8, 4), (4, 4)):
        expected_g += 2 * cin + _conv(3, cin, cout) + 2 * cout + _conv(3, cout, cout)
        expected_g += _conv(1, cin, cout) if cin != cout else 0
    expected_g += 2 * 4 + _conv(3, 4, 3)
    assert _count(g) == expected_g
    expected_d = 0
    for cin, cout in ((3, 4), (4, 8), (8, 16)):  # down-blocks, sides 16, 8, 4
        expected_d += _conv(3, cin, cout) + 2 * cout + _conv(3, cout, cout)
        expected_d += _conv(1, cin, cout) if cin != cout else 0
    expected_d += 16 + 1
    assert _count(d) == expected_d
    images = nets.generator.apply(g, _normal(10, (2, Z)), train=False)
    assert images.shape == (2, 32, 32, 3) and np.abs(images).max() <= 1
    assert nets.critic.apply(d, images, train=False).shape == (2,)


def test_stylegan_lite_has_a_constant_input_a_mapping_and_adain_in_every_layer():
    nets = gan_trunks.build("stylegan_lite", _spec(norm="adain", mapping_layers=2))
    g, _ = _init_pair(nets)
    params = g["params"]
    assert params["constant"].shape == (4, 4, 16)
    assert len(params["MappingNetwork_0"]) == 2
    adains = sorted(k for k in params if k.startswith("AdaptiveInstanceNorm"))
    assert [params[k]["gamma"]["kernel"].shape for k in adains] == [(Z, 16), (Z, 8), (Z, 4)]
    expected = 2 * (Z * Z + Z) + 16 * 16 + sum(2 * (Z * c + c) for c in (16, 8, 4))
    expected += _conv(5, 16, 8) + _conv(5, 8, 4) + _conv(5, 4, 3)
    assert _count(g) == expected
    # No z input to the convs: two latents differ only through the styles.
    a = nets.generator.apply(g, _normal(11, (2, Z)), train=True)
    b = nets.generator.apply(g, _normal(12, (2, Z)), train=True)
    assert a.shape == (2, 32, 32, 3) and not np.allclose(a, b)


def test_dcgan_trunk_with_bn_is_the_dcgan_module_and_takes_any_norm():
    nets = gan_trunks.build("dcgan", _spec())
    reference = dcgan.Generator(resolution=32, z_dim=Z, base_channels=4)
    g, _ = _init_pair(nets)
    assert jax.tree.map(jnp.shape, g) == jax.tree.map(
        jnp.shape, reference.init(jax.random.PRNGKey(0), jnp.zeros((2, Z)), train=False))
    z = _normal(13, (2, Z))
    np.testing.assert_array_equal(nets.generator.apply(g, z, train=False),
                                  reference.apply(g, z, train=False))
    for norm in ("none", "layer_norm", "self_mod", "adain"):
        g, _ = _init_pair(gan_trunks.build("dcgan", _spec(norm=norm)))
        names = {k.rsplit("_", 1)[0] for k in g["params"]}
        assert ("BatchNorm" in names) is False


def test_conditional_critic_adds_the_projection_term():
    nets = gan_trunks.build("resnet", _spec(num_classes=3))
    x, labels = _normal(14, (2, 32, 32, 3)), jnp.array([0, 2])
    d = nets.critic.init(jax.random.PRNGKey(1), x, labels, train=False)
    scores = nets.critic.apply(d, x, labels, train=False)
    other = nets.critic.apply(d, x, jnp.array([1, 2]), train=False)
    assert scores[1] == other[1] and scores[0] != other[0]
    with pytest.raises(ValueError, match="unknown trunk"):
        gan_trunks.build("biggan", _spec())
