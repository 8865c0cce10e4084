"""Tests for models/dcgan.py and models/spectral_norm.py (docs/wgan_div.md §3).

Reference values come from the reference scripts' layer lists (parameter counts), numpy (batch norm,
LeakyReLU, SVD), PyTorch (the Keras/TF 'same' conv and transposed-conv semantics) and
the formulas in the module docstrings; none is read back from the code under test.

Compilation dominates the run time on CPU, so initialised variables, jitted applies and
probe runs are cached and shared between tests.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import dcgan
from models import spectral_norm as sn

PROBED_LAYERS = ("Conv", "ConvTranspose", "BatchNorm", "Dense")
BATCH = 4


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _uniform(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@functools.cache
def _init(module, input_shape):
    """Variables of ``module`` for inputs of ``input_shape`` without the batch axis."""
    # The "rbg" generator draws from the same initializer distributions as the default
    # threefry one but compiles about 3× faster on CPU.
    key = jax.random.key(0, impl="rbg")
    return jax.jit(functools.partial(module.init, train=False))(
        key, jnp.zeros((1, *input_shape)))


@functools.cache
def _apply_fn(module, train):
    """A jitted apply; in training mode it also returns the updated batch_stats."""
    if train:
        return jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"]))
    return jax.jit(functools.partial(module.apply, train=False))


def _abstract_init(module, input_shape):
    return jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                          jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))


def _probe(module, variables, x, *, train):
    """Runs module.apply under jit; returns (output, [(layer type, input, output)])."""
    names = []

    def run(variables, x):
        names.clear()
        captured = []

        active = []  # modules inside their __call__: a subclass's super().__call__ is one call

        def interceptor(next_fun, args, kwargs, context):
            if context.module in active:
                return next_fun(*args, **kwargs)
            active.append(context.module)
            out = next_fun(*args, **kwargs)
            active.pop()
            kind = type(context.module).__name__
            if context.method_name == "__call__" and kind in PROBED_LAYERS:
                names.append(kind)
                captured.append((args[0], out))
            return out

        with nn.intercept_methods(interceptor):
            y, _ = module.apply(variables, x, train=train, mutable=["batch_stats"])
        return y, captured

    y, captured = jax.jit(run)(variables, x)
    return np.asarray(y, np.float64), [
        (n, np.asarray(a, np.float64), np.asarray(b, np.float64))
        for n, (a, b) in zip(names, captured)]


@functools.cache
def _critic_probe(preset):
    critic = dcgan.CRITICS[preset](resolution=32)
    x = _uniform(3, (BATCH, 32, 32, 3))
    return (critic, x, *_probe(critic, _init(critic, (32, 32, 3)), x, train=True))


@functools.cache
def _generator_probe():
    generator = dcgan.Generator(resolution=32)
    z = _normal(4, (BATCH, 128))
    return (generator, z, *_probe(generator, _init(generator, (128,)), z, train=True))


def _leaky(x, slope):
    return np.where(x >= 0, x, slope * x)


def _batch_norm(x, epsilon):
    axes = tuple(range(x.ndim - 1))
    return (x - x.mean(axes)) / np.sqrt(x.var(axes) + epsilon)


# ---------------------------------------------------------------------------- shapes


def test_output_shapes_and_ranges_at_32px():
    generator, z, images, _ = _generator_probe()
    critic, x, scores, _ = _critic_probe("wgan_div")
    assert images.shape == (BATCH, 32, 32, 3)
    assert np.abs(images).max() <= 1.0
    assert scores.shape == (BATCH,)
    assert np.all(np.isfinite(scores))
    # Eval mode (moving statistics) gives the same shapes.
    assert _apply_fn(generator, False)(_init(generator, (128,)), z).shape == images.shape
    assert _apply_fn(critic, False)(_init(critic, (32, 32, 3)), x).shape == scores.shape


@pytest.mark.parametrize("resolution", [64, 128])
def test_output_shapes_from_abstract_evaluation(resolution):
    z = jax.ShapeDtypeStruct((2, 128), jnp.float32)
    x = jax.ShapeDtypeStruct((2, resolution, resolution, 3), jnp.float32)
    generator, critic = dcgan.Generator(resolution=resolution), dcgan.Critic(resolution=resolution)
    g_vars, c_vars = _abstract_init(generator, (128,)), _abstract_init(critic, x.shape[1:])
    g_out = jax.eval_shape(functools.partial(generator.apply, train=False), g_vars, z)
    c_out = jax.eval_shape(functools.partial(critic.apply, train=False), c_vars, x)
    assert g_out.shape == (2, resolution, resolution, 3)
    assert c_out.shape == (2,)


def test_128px_channels_follow_the_seed():
    # wgan_div_celeba.py at 128 px (docs/wgan_div.md §3.1): critic convs 64 → 1024 (spatial
    # 64 → 4), G Dense(4·4·1024) then ConvT 512 → 256 → 128 → 64 → 3.
    g_params = _abstract_init(dcgan.Generator(resolution=128), (128,))["params"]
    c_params = _abstract_init(dcgan.Critic(resolution=128), (128, 128, 3))["params"]
    assert g_params["Dense_0"]["kernel"].shape == (128, 4 * 4 * 1024)
    assert [g_params[f"ConvTranspose_{i}"]["kernel"].shape[2] for i in range(5)] == [
        512, 256, 128, 64, 3]
    assert [c_params[f"Conv_{i}"]["kernel"].shape[3] for i in range(5)] == [
        64, 128, 256, 512, 1024]
    assert c_params["Dense_0"]["kernel"].shape == (1024, 1)  # after global average pooling


@pytest.mark.parametrize("resolution", [0, 16, 48, 96, 100, 64.0, True])
def test_bad_resolution_is_rejected(resolution):
    with pytest.raises(ValueError, match=rf"resolution .* got {resolution!r}"):
        dcgan.Critic(resolution=resolution)
    with pytest.raises(ValueError, match=rf"resolution .* got {resolution!r}"):
        dcgan.Generator(resolution=resolution)


def test_bad_inputs_are_rejected():
    critic, generator = dcgan.Critic(resolution=32), dcgan.Generator(resolution=32)
    with pytest.raises(ValueError, match=r"x must have shape.*\(2, 64, 64, 3\)"):
        critic.init(jax.random.key(0), jnp.zeros((2, 64, 64, 3)), train=False)
    with pytest.raises(ValueError, match=r"z must have shape.*z_dim=128.*\(2, 100\)"):
        generator.init(jax.random.key(0), jnp.zeros((2, 100)), train=False)
    with pytest.raises(ValueError, match="sn_power_iterations"):
        dcgan.Critic(spectral_norm=True, sn_power_iterations=0)


# ------------------------------------------------------------------ parameter counts


def test_parameter_counts_of_the_64px_seed_nets():
    # docs/wgan_div.md §3.1 with R = 64: num_layers 3, max channels 512, 5×5 kernels, z = 128.
    critic_convs = 5 * 5 * 3 * 64 + 5 * 5 * 64 * 128 + 5 * 5 * 128 * 256 + 5 * 5 * 256 * 512
    critic_bn = 2 * (128 + 256 + 512)  # γ, β after every conv but the first
    critic_head = 512  # GAP then Dense(1, no bias)
    generator_dense = 128 * 4 * 4 * 512 + 4 * 4 * 512
    generator_bn = 2 * (4 * 4 * 512 + 256 + 128 + 64)
    generator_convt = (5 * 5 * 512 * 256 + 256) + (5 * 5 * 256 * 128 + 128) + (
        5 * 5 * 128 * 64 + 64) + (5 * 5 * 64 * 3 + 3)

    c_vars = _abstract_init(dcgan.Critic(resolution=64), (64, 64, 3))
    g_vars = _abstract_init(dcgan.Generator(resolution=64), (128,))
    assert _count(c_vars["params"]) == critic_convs + critic_bn + critic_head == 4_307_904
    assert _count(c_vars["batch_stats"]) == critic_bn  # moving mean and variance
    assert _count(g_vars["params"]) == generator_dense + generator_bn + generator_convt
    assert _count(g_vars["batch_stats"]) == generator_bn


def test_parameter_counts_of_the_64px_dcgan_baseline():
    # `dcgan_celeba.py` (docs/wgan_div.md §3.2): convs with bias, Flatten, Dense(1) with bias,
    # z = 100.
    critic_convs = (5 * 5 * 3 * 64 + 64) + (5 * 5 * 64 * 128 + 128) + (
        5 * 5 * 128 * 256 + 256) + (5 * 5 * 256 * 512 + 512)
    critic_bn = 2 * (128 + 256 + 512)
    critic_head = 4 * 4 * 512 + 1
    generator_dense = 100 * 4 * 4 * 512 + 4 * 4 * 512
    generator_bn = 2 * (4 * 4 * 512 + 256 + 128 + 64)
    generator_convt = (5 * 5 * 512 * 256 + 256) + (5 * 5 * 256 * 128 + 128) + (
        5 * 5 * 128 * 64 + 64) + (5 * 5 * 64 * 3 + 3)

    c_vars = _abstract_init(dcgan.CRITICS["dcgan"](), (64, 64, 3))
    g_vars = _abstract_init(dcgan.GENERATORS["dcgan"](), (100,))
    assert _count(c_vars["params"]) == critic_convs + critic_bn + critic_head
    assert _count(g_vars["params"]) == generator_dense + generator_bn + generator_convt
    # WGAN-GP's critic is the same net with a bias-free head.
    gp_vars = _abstract_init(dcgan.CRITICS["wgan_gp"](), (64, 64, 3))
    assert _count(gp_vars["params"]) == critic_convs + critic_bn + critic_head - 1


def test_batch_norm_follows_every_critic_conv_but_the_first():
    params = _abstract_init(dcgan.Critic(resolution=64), (64, 64, 3))["params"]
    norms = sorted(k for k in params if k.startswith("BatchNorm"))
    convs = sorted(k for k in params if k.startswith("Conv"))
    assert len(norms) == len(convs) - 1 == 3
    # BatchNorm_i normalises the output of Conv_{i+1}: widths 128, 256, 512, never 64.
    assert [params[n]["scale"].shape for n in norms] == [(128,), (256,), (512,)]
    assert all("bias" not in params[c] for c in convs)  # docs/wgan_div.md §3.1: no conv bias


# ------------------------------------------------------------------ data-flow probes


@pytest.mark.parametrize(
    "preset, slope, pool",
    [("wgan_div", 0.2, "average"), ("dcgan", 0.3, "flatten")],
)
def test_critic_dataflow(preset, slope, pool):
    _, _, scores, calls = _critic_probe(preset)
    assert [name for name, _, _ in calls] == [
        "Conv", "Conv", "BatchNorm", "Conv", "BatchNorm", "Dense"]
    (_, _, conv0), (_, conv1_in, conv1), (_, bn0_in, bn0), (_, conv2_in, _), \
        (_, bn1_in, bn1), (_, head_in, head_out) = calls

    # First conv → LeakyReLU → second conv, with no norm in between (docs/wgan_div.md §3.1).
    assert (conv0 < 0).mean() > 0.2  # the probe sees the negative branch
    np.testing.assert_allclose(conv1_in, _leaky(conv0, slope), rtol=1e-6, atol=1e-7)
    # Keras BN in training mode: the current batch's statistics, ε = 1e-3 (docs/index.md §2).
    np.testing.assert_array_equal(bn0_in, conv1)
    np.testing.assert_allclose(bn0, _batch_norm(conv1, 1e-3), rtol=1e-4, atol=1e-5)
    assert not np.allclose(bn0, _batch_norm(conv1, 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv2_in, _leaky(bn0, slope), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn1, _batch_norm(bn1_in, 1e-3), rtol=1e-4, atol=1e-5)

    activation = _leaky(bn1, slope)  # (B, 4, 4, 256)
    pooled = (activation.mean(axis=(1, 2)) if pool == "average"
              else activation.reshape(BATCH, -1))
    np.testing.assert_allclose(head_in, pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, head_out[:, 0], rtol=1e-6)


def test_generator_dataflow_and_moving_statistics():
    generator, z, images, calls = _generator_probe()
    assert [name for name, _, _ in calls] == [
        "Dense", "BatchNorm", "ConvTranspose", "BatchNorm", "ConvTranspose", "BatchNorm",
        "ConvTranspose"]
    (_, _, dense), (_, flat_in, flat_bn), (_, convt0_in, _) = calls[:3]
    # BN over the 4·4·256 flat features, per unit and before the reshape (docs/wgan_div.md §3.1).
    assert flat_in.shape == (BATCH, 4 * 4 * 256)
    np.testing.assert_array_equal(flat_in, dense)
    np.testing.assert_allclose(flat_bn, _batch_norm(dense, 1e-3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        convt0_in, np.maximum(flat_bn, 0).reshape(BATCH, 4, 4, 256), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(images, np.tanh(calls[-1][2]), rtol=1e-5, atol=1e-6)

    # Keras moving averages, momentum 0.99 from (0, 1): 0.01·batch, 0.99 + 0.01·batch var.
    _, updates = _apply_fn(generator, True)(_init(generator, (128,)), z)
    stats = updates["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.01 * dense.mean(0), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(stats["var"], 0.99 + 0.01 * dense.var(0), rtol=1e-5)


@settings(max_examples=5, deadline=None)
@given(replaced=st.lists(st.booleans(), min_size=BATCH, max_size=BATCH).filter(
    lambda r: any(r) and not all(r)), seed=st.integers(0, 2**16))
def test_eval_scores_are_per_sample_and_train_scores_are_per_batch(replaced, seed):
    # Replace some samples of the batch: in eval mode the others keep their scores; in
    # training mode BN uses the batch's statistics, so theirs change (docs/index.md §2 item 3).
    critic = dcgan.Critic(resolution=32)
    variables = _init(critic, (32, 32, 3))
    x = _uniform(3, (BATCH, 32, 32, 3))
    kept = ~np.array(replaced)
    x_mixed = jnp.where(jnp.asarray(kept)[:, None, None, None], x,
                        _uniform(seed, (BATCH, 32, 32, 3)))
    evaluate, train = _apply_fn(critic, False), _apply_fn(critic, True)
    np.testing.assert_allclose(evaluate(variables, x_mixed)[kept], evaluate(variables, x)[kept],
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(train(variables, x_mixed)[0][kept], train(variables, x)[0][kept],
                           rtol=1e-3)


# ------------------------------------------------------------------ initialisation


def test_seed_nets_use_normal_0_02_kernels():
    critic, generator = _critic_probe("wgan_div")[0], _generator_probe()[0]
    c_params = _init(critic, (32, 32, 3))["params"]
    g_params = _init(generator, (128,))["params"]
    for kernel in (c_params["Conv_2"]["kernel"], g_params["ConvTranspose_0"]["kernel"],
                   g_params["Dense_0"]["kernel"]):
        kernel = np.asarray(kernel, np.float64).ravel()  # ≥ 500k draws: std error < 0.1 %
        assert abs(kernel.std() - 0.02) < 0.005 * 0.02
        assert abs(kernel.mean()) < 5 * 0.02 / np.sqrt(kernel.size)
        assert abs(np.mean(np.abs(kernel)) - 0.02 * np.sqrt(2 / np.pi)) < 0.005 * 0.02
    # The critic's Dense(1) keeps Keras's Glorot-uniform: U(±√(6 / (256 + 1))).
    head = np.asarray(c_params["Dense_0"]["kernel"], np.float64)
    limit = np.sqrt(6 / (256 + 1))
    assert np.abs(head).max() <= limit
    assert 0.8 < head.std() / (limit / np.sqrt(3)) < 1.2


def test_keras_baselines_use_glorot_uniform_kernels():
    c_params = _init(_critic_probe("dcgan")[0], (32, 32, 3))["params"]
    g_params = _init(dcgan.GENERATORS["dcgan"](resolution=32), (100,))["params"]
    # Keras fans for a k×k conv: k²·in and k²·out; the same for the transposed conv.
    for kernel, fan_sum in ((c_params["Conv_2"]["kernel"], 25 * 128 + 25 * 256),
                            (g_params["ConvTranspose_0"]["kernel"], 25 * 256 + 25 * 128),
                            (g_params["Dense_0"]["kernel"], 100 + 4 * 4 * 256)):
        kernel = np.asarray(kernel, np.float64)
        limit = np.sqrt(6 / fan_sum)
        assert np.abs(kernel).max() <= limit
        assert np.abs(kernel).max() > 0.999 * limit
        assert abs(kernel.std() / (limit / np.sqrt(3)) - 1) < 0.005
    assert not np.any(c_params["Conv_0"]["bias"])  # Keras zero biases
    assert not np.any(g_params["Dense_0"]["bias"])


# ------------------------------------------------------------------ Keras conv semantics


def test_convolutions_match_tensorflow_same_padding():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    generator, _, _, g_calls = _generator_probe()
    critic, _, _, c_calls = _critic_probe("wgan_div")

    # Transposed conv, n → 2n: the gradient of TF's 'same' conv 2n → n, which pads the
    # 2n input by (1, 2). PyTorch's ConvTranspose2d(padding=1) is the gradient of a conv
    # padding (1, 1) an input of 2n + 1; dropping that extra last row/column gives TF's.
    _, convt_in, convt_out = g_calls[2]  # [B, 4, 4, 256] → [B, 8, 8, 128]
    params = _init(generator, (128,))["params"]["ConvTranspose_0"]
    kernel = np.asarray(params["kernel"], np.float64)  # Keras layout (kh, kw, out, in)
    expected = functional.conv_transpose2d(
        torch.from_numpy(convt_in.transpose(0, 3, 1, 2)),
        torch.from_numpy(kernel.transpose(3, 2, 0, 1)),
        torch.from_numpy(np.asarray(params["bias"], np.float64)),
        stride=2, padding=1)[:, :, :8, :8].numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(convt_out, expected, rtol=1e-4, atol=1e-6)

    # Strided conv 2n → n with TF 'same' padding (1, 2).
    _, conv_in, conv_out = c_calls[0]
    kernel = np.asarray(_init(critic, (32, 32, 3))["params"]["Conv_0"]["kernel"], np.float64)
    expected = functional.conv2d(
        functional.pad(torch.from_numpy(conv_in.transpose(0, 3, 1, 2)), (1, 2, 1, 2)),
        torch.from_numpy(kernel.transpose(3, 2, 0, 1)), stride=2).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(conv_out, expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ spectral norm

SN_LAYERS = ("Conv_0", "Conv_1", "Conv_2", "Dense_0")  # every conv and the head at 32 px


def _with_spectral_gap(params, rng):
    """Adds a rank-one spike 2‖W‖_F·abᵀ to every (reshaped) kernel so σ₂/σ₁ < 0.5.

    A freshly initialised Gaussian kernel has σ₂/σ₁ ≈ 0.99 and power iteration would need
    thousands of steps; trained kernels have a gap.
    """
    def spike(path, leaf):
        if path[-1].key != "kernel":
            return leaf
        matrix = np.asarray(leaf, np.float64).reshape(-1, leaf.shape[-1])
        a, b = rng.standard_normal(matrix.shape[0]), rng.standard_normal(matrix.shape[1])
        frobenius = np.linalg.norm(matrix)  # ≥ σ₁, and cheap
        matrix = matrix + 2 * frobenius * np.outer(a / np.linalg.norm(a), b / np.linalg.norm(b))
        return jnp.asarray(matrix.reshape(leaf.shape), jnp.float32)
    return jax.tree_util.tree_map_with_path(spike, params)


def _spectral_state(batch_stats, layer):
    for name, entries in batch_stats.items():
        if name.startswith("SpectralNorm") and f"{layer}/kernel/u" in entries:
            return entries[f"{layer}/kernel/u"], entries[f"{layer}/kernel/sigma"]
    raise KeyError(layer)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _train_calls(critic, params, batch_stats, x, calls):
    def body(_, batch_stats):
        _, updates = critic.apply({"params": params, "batch_stats": batch_stats}, x,
                                  train=True, mutable=["batch_stats"])
        return updates["batch_stats"]
    return jax.lax.fori_loop(0, calls, body, batch_stats)


ONE_STEP = dcgan.Critic(resolution=32, spectral_norm=True, sn_power_iterations=1)
FIVE_STEPS = dcgan.Critic(resolution=32, spectral_norm=True, sn_power_iterations=5)


def test_spectral_norm_state_persists_across_calls():
    x = _uniform(9, (2, 32, 32, 3))
    variables = _init(ONE_STEP, (32, 32, 3))
    params, initial = variables["params"], variables["batch_stats"]

    after_five_calls = _train_calls(ONE_STEP, params, initial, x, 5)
    after_one_call = _train_calls(FIVE_STEPS, params, initial, x, 1)
    for layer in SN_LAYERS[:3]:
        u_five_calls, sigma_five_calls = _spectral_state(after_five_calls, layer)
        u_one_call, sigma_one_call = _spectral_state(after_one_call, layer)
        u_initial, _ = _spectral_state(initial, layer)
        # Each call starts from the stored u: 5 calls × 1 step = 1 call × 5 steps.
        np.testing.assert_allclose(u_five_calls, u_one_call, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sigma_five_calls, sigma_one_call, rtol=1e-5)
        assert not np.allclose(u_five_calls, u_initial, atol=1e-3)

    # Eval calls leave the state alone.
    _, updates = jax.jit(functools.partial(
        ONE_STEP.apply, train=False, mutable=["batch_stats"]))(
        {"params": params, "batch_stats": after_five_calls}, x)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], after_five_calls)


def test_spectral_norm_converges_to_the_top_singular_value():
    x = _uniform(8, (2, 32, 32, 3))
    variables = _init(ONE_STEP, (32, 32, 3))  # the same variables as FIVE_STEPS
    params = _with_spectral_gap(variables["params"], np.random.default_rng(0))
    batch_stats = variables["batch_stats"]
    for _ in range(4):  # 20 power iterations in all, through the persistent state
        batch_stats = _train_calls(FIVE_STEPS, params, batch_stats, x, 1)

    assert len([k for k in batch_stats if k.startswith("SpectralNorm")]) == len(SN_LAYERS)
    for layer in SN_LAYERS:
        kernel = np.asarray(params[layer]["kernel"], np.float64)
        matrix = kernel.reshape(-1, kernel.shape[-1])  # flax's (kh·kw·in, out) view
        _, singular, vt = np.linalg.svd(matrix, full_matrices=False)
        u, sigma = _spectral_state(batch_stats, layer)
        # The largest singular value of the normalised kernel W / σ is 1.
        assert abs(singular[0] / float(sigma) - 1) < 1e-3, layer
        assert abs(abs(float(np.asarray(u, np.float64)[0] @ vt[0])) - 1) < 1e-3, layer

    # Every layer really runs on W / σ: the plain critic with those kernels agrees.
    plain = dcgan.Critic(resolution=32)
    divided = {layer: {"kernel": params[layer]["kernel"] / _spectral_state(batch_stats, layer)[1]}
               for layer in SN_LAYERS}
    plain_vars = {
        "params": {**params, **divided},
        "batch_stats": {k: v for k, v in batch_stats.items() if k.startswith("BatchNorm")},
    }
    np.testing.assert_allclose(
        _apply_fn(FIVE_STEPS, False)({"params": params, "batch_stats": batch_stats}, x),
        _apply_fn(plain, False)(plain_vars, x),
        rtol=1e-4, atol=1e-6)


def test_unit_norm_scale_batch_norm_matches_the_seed_formula():
    x = _normal(10, (8, 3, 3, 5)) * 2 + 1
    layer = sn.UnitNormScaleBatchNorm()
    scale = np.array([0.5, -1.0, 2.0, 3.0, 0.1], np.float32)
    bias = np.array([0.1, 0.2, -0.3, 0.0, 1.0], np.float32)
    stats = {"BatchNorm_0": {"mean": jnp.zeros(5), "var": jnp.ones(5)}}

    @jax.jit
    def apply(scale, x):
        return layer.apply({"params": {"scale": scale, "bias": bias}, "batch_stats": stats}, x,
                           mutable=["batch_stats"])

    y, updates = apply(scale, x)
    # The seed's power iteration on γ viewed as a 1×C matrix returns ‖γ‖₂ (docs/wgan_div.md §3.3).
    x64 = np.asarray(x, np.float64)
    expected = _batch_norm(x64, 1e-3) * scale / np.linalg.norm(scale) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["BatchNorm_0"]["mean"],
                               0.01 * x64.mean((0, 1, 2)), rtol=1e-4)

    # Gradients reach γ through the norm as well, so they are orthogonal to γ (the output
    # is invariant to rescaling γ).
    grad = jax.jit(jax.grad(lambda s: jnp.sum(apply(s, x)[0] * x)))(scale)
    assert np.linalg.norm(grad) > 1e-2
    np.testing.assert_allclose(np.dot(grad, scale), 0.0, atol=1e-3)


def test_wgan_sn_preset_normalises_every_weight_of_the_critic():
    variables = _abstract_init(dcgan.CRITICS["wgan_sn"](), (64, 64, 3))
    for layer in ("Conv_0", "Conv_1", "Conv_2", "Conv_3", "Dense_0"):
        u, sigma = _spectral_state(variables["batch_stats"], layer)
        assert u.shape == (1, variables["params"][layer]["kernel"].shape[-1])
        assert sigma.shape == ()
    norms = [k for k in variables["params"] if k.startswith("UnitNormScaleBatchNorm")]
    assert len(norms) == 3
    assert "bias" not in variables["params"]["Dense_0"]
