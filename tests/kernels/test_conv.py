"""kernels/conv.py: the patch-matmul conv against lax's in values and second derivatives,
and inside the DCGAN critic."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax import lax

from kernels import conv
from models import dcgan

NHWC = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                    precision=lax.Precision.HIGHEST)


def patch_conv(x, w, strides, padding):
    return conv.patch_matmul_conv(x, w, strides, padding, dimension_numbers=NHWC,
                                   precision=lax.Precision.HIGHEST)


def second_order(conv, strides, padding):
    """x, w ↦ ∂/∂(x, w) of Σ (∇ₓ Σ tanh(conv(x, w)))²: a double backward through conv."""

    def input_gradient_energy(x, w):
        gradient = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w, strides, padding))))(x)
        return jnp.sum(jnp.square(gradient))

    return jax.jit(jax.grad(input_gradient_energy, argnums=(0, 1)))


def second_order_in_float64(conv, strides, padding, x, w):
    """`second_order` of lax's conv in float64, as numpy: the reference. In float32,
    XLA:CPU's double backward of a conv whose padding exceeds the kernel returned garbage
    (~1e20–1e30; the pinned @examples), where ours matched float64 and finite differences."""
    with jax.enable_x64(True):
        x64, w64 = (jnp.asarray(np.asarray(a, np.float64)) for a in (x, w))
        return [np.asarray(g) for g in second_order(conv, strides, padding)(x64, w64)]


@settings(max_examples=5, deadline=None)
@example(size=1, kernel=2, stride=1, padding=((2, 0), (1, 3)), channels=1, features=2,
         seed=0)   # rows of pure padding (see second_order_in_float64)
@example(size=6, kernel=4, stride=1, padding="SAME", channels=1, features=3,
         seed=0)   # float32 rounding of 1.5e-4 on a gradient of magnitude 250
@given(size=st.integers(1, 7), kernel=st.integers(1, 5), stride=st.integers(1, 3),
       padding=st.sampled_from(["SAME", "VALID", ((2, 0), (1, 3))]),
       channels=st.integers(1, 3), features=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_patch_matmul_conv_matches_lax_conv(size, kernel, stride, padding, channels,
                                            features, seed):
    # Keep the padded input at least as large as the kernel (else lax has no output).
    kernel = min(kernel, {"SAME": kernel, "VALID": size}.get(padding, size + 2))
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (2, size, size + 1, channels))
    w = jax.random.normal(kw, (kernel, kernel, channels, features))
    strides = (stride, stride)
    expected = jax.jit(lax_conv, static_argnums=(2, 3))(x, w, strides, padding)
    actual = jax.jit(patch_conv, static_argnums=(2, 3))(x, w, strides, padding)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(second_order(patch_conv, strides, padding)(x, w),
                         second_order_in_float64(lax_conv, strides, padding, x, w)):
        # float32 against float64: the rounding of the double backward's sums grows with
        # the gradient's scale, so a small element beside large ones may be off by a few
        # float32 ulps of the largest.
        scale = float(np.max(np.abs(want), initial=0.0))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 + 1e-6 * scale)


def test_patch_matmul_conv_rejects_what_it_does_not_support():
    x, w = jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    with pytest.raises(ValueError, match="rhs_dilation"):
        conv.patch_matmul_conv(x, w, (1, 1), "SAME", rhs_dilation=(2, 2))
    with pytest.raises(ValueError, match="feature_group_count"):
        conv.patch_matmul_conv(x, w, (1, 1), "SAME", feature_group_count=3)
    with pytest.raises(ValueError, match="NHWC"):
        conv.patch_matmul_conv(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        conv.patch_matmul_conv(x[0], w, (1, 1), "SAME")


def lax_conv_transpose(x, w, strides, padding):
    return lax.conv_transpose(x, w, strides, padding, dimension_numbers=NHWC,
                              transpose_kernel=True, precision=lax.Precision.HIGHEST)


def patch_conv_transpose(x, w, strides, padding):
    return conv.patch_matmul_conv_transpose(x, w, strides, padding, dimension_numbers=NHWC,
                                            transpose_kernel=True,
                                            precision=lax.Precision.HIGHEST)


@settings(max_examples=6, deadline=None)
@example(size=1, kernel=4, stride=1, padding=((2, 0), (1, 3)), channels=1, features=1,
         seed=0)   # the padding crops the output to nothing
@example(size=1, kernel=2, stride=1, padding=((2, 0), (1, 3)), channels=1, features=2,
         seed=0)   # rows of pure padding (see second_order_in_float64)
@given(size=st.integers(1, 6), kernel=st.integers(1, 5), stride=st.integers(1, 3),
       padding=st.sampled_from(["SAME", "VALID", ((2, 0), (1, 3)), ((0, 4), (3, 1))]),
       channels=st.integers(1, 3), features=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_patch_matmul_conv_transpose_matches_lax(size, kernel, stride, padding, channels,
                                                 features, seed):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (2, size, size + 1, channels))
    w = jax.random.normal(kw, (kernel, kernel, features, channels))   # transpose_kernel layout
    strides = (stride, stride)
    expected = jax.jit(lax_conv_transpose, static_argnums=(2, 3))(x, w, strides, padding)
    actual = jax.jit(patch_conv_transpose, static_argnums=(2, 3))(x, w, strides, padding)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    reference = second_order_in_float64(lax_conv_transpose, strides, padding, x, w)
    for got, want in zip(second_order(patch_conv_transpose, strides, padding)(x, w), reference):
        # float32 sums of terms up to |want|: absolute error relative to the largest entry.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * (1 + np.abs(want).max()))


def test_transposed_conv_padding_is_the_forward_convs_gradient():
    # 'SAME', k = 5, s = 2 (the DCGAN generator): 3 before, 2 after the dilated input.
    assert conv.transposed_conv_padding(5, 2, "SAME") == (3, 2)
    assert conv.transposed_conv_padding(5, 2, "VALID") == (4, 4)
    # The definition: conv_transpose(y, w) is the vjp of conv(·, w) at y.
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
    w = jax.random.normal(jax.random.key(1), (5, 5, 2, 3))
    def forward(x):
        return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)

    y, vjp = jax.vjp(forward, x)
    (want,) = vjp(jnp.ones_like(y))
    got = conv.patch_matmul_conv_transpose(jnp.ones_like(y), w, (2, 2), "SAME",
                                           transpose_kernel=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_transpose_layer_is_flax_conv_transpose():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
    flax_layer = nn.ConvTranspose(5, (5, 5), strides=(2, 2), padding="SAME",
                                  transpose_kernel=True, kernel_init=dcgan.DCGAN_INIT)
    ours = dcgan.ConvTranspose(5, (5, 5), kernel_init=dcgan.DCGAN_INIT)
    variables = flax_layer.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == \
        jax.tree.map(jnp.shape, variables)
    np.testing.assert_array_equal(ours.init(jax.random.key(1), x)["params"]["kernel"],
                                  variables["params"]["kernel"])
    np.testing.assert_allclose(ours.apply(variables, x), flax_layer.apply(variables, x),
                               rtol=1e-6, atol=1e-6)
    patched = ours.clone(conv_transpose=conv.patch_matmul_conv_transpose)
    np.testing.assert_allclose(patched.apply(variables, x), flax_layer.apply(variables, x),
                               rtol=1e-5, atol=1e-5)


def test_critic_with_patch_matmul_conv_matches_xla_conv_to_second_order():
    # The WGAN-div use: ∂/∂weights of mean ‖∇ₓ Σ T(x)‖² through train-mode batch norm.
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    xla_critic = dcgan.Critic(resolution=32, base_channels=4)
    patch_critic = xla_critic.clone(conv_general_dilated=conv.patch_matmul_conv)
    variables = xla_critic.init(jax.random.key(1), x, train=False)

    def penalty_gradient(critic):
        def penalty(params):
            def total_score(x):
                scores, _ = critic.apply({**variables, "params": params}, x, train=True,
                                         mutable=["batch_stats"])
                return jnp.sum(scores)
            return jnp.mean(jnp.sum(jnp.square(jax.grad(total_score)(x)), axis=(1, 2, 3)))
        return jax.jit(jax.value_and_grad(penalty))(variables["params"])

    with jax.default_matmul_precision("highest"):
        (want_value, want_grads), (got_value, got_grads) = map(
            penalty_gradient, (xla_critic, patch_critic))
    np.testing.assert_allclose(got_value, want_value, rtol=1e-4)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6 * np.abs(want).max())


def test_conv_for_backend():
    assert conv.conv_for_backend("auto", backend="cpu") is conv.patch_matmul_conv
    assert conv.conv_for_backend("auto", backend="gpu") is lax.conv_general_dilated
    assert conv.conv_for_backend("xla", backend="cpu") is lax.conv_general_dilated
    assert conv.conv_for_backend("patch_matmul", backend="tpu") is conv.patch_matmul_conv
    assert conv.conv_for_backend("auto", backend="cpu", transpose=True) is \
        conv.patch_matmul_conv_transpose
    assert conv.conv_for_backend("auto", backend="gpu", transpose=True) is lax.conv_transpose
    with pytest.raises(ValueError, match="conv must be one of"):
        conv.conv_for_backend("cudnn")


def same_conv_in_float64(x, w):
    """A stride-1 SAME conv of x by w in float64, as numpy: the resampling convs' reference."""
    with jax.enable_x64(True):
        return np.asarray(lax_conv(jnp.asarray(np.asarray(x, np.float64)),
                                   jnp.asarray(np.asarray(w, np.float64)), (1, 1), "SAME"))


def upsample_then_conv(x, w):
    """The literal form: every pixel repeated 2×2, then a stride-1 SAME conv (float64)."""
    return same_conv_in_float64(np.repeat(np.repeat(np.asarray(x), 2, axis=1), 2, axis=2), w)


def conv_then_average_pool(x, w):
    """The literal form: a stride-1 SAME conv, then the mean of each 2×2 block (float64)."""
    full = same_conv_in_float64(x, w)
    b, h, w_, o = full.shape
    return full.reshape(b, h // 2, 2, w_ // 2, 2, o).mean(axis=(2, 4))


# (fused conv, the conv it wraps, input shape, output shape, literal form)
RESAMPLING_CASES = {
    "upsample-xla": (conv.nearest_upsample_conv, lax.conv_transpose, (2, 5, 6, 3),
                     (2, 10, 12, 4), upsample_then_conv),
    "upsample-patch_matmul": (conv.nearest_upsample_conv, conv.patch_matmul_conv_transpose,
                              (2, 5, 6, 3), (2, 10, 12, 4), upsample_then_conv),
    "pooled-xla": (conv.average_pooled_conv, lax.conv_general_dilated, (2, 6, 8, 3),
                   (2, 3, 4, 4), conv_then_average_pool),
    "pooled-patch_matmul": (conv.average_pooled_conv, conv.patch_matmul_conv, (2, 6, 8, 3),
                            (2, 3, 4, 4), conv_then_average_pool),
}


@pytest.mark.parametrize("case", list(RESAMPLING_CASES))
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_resampling_convs_equal_their_literal_form(case, kernel):
    make_fused, wrapped, in_shape, out_shape, literal = RESAMPLING_CASES[case]
    kx, kw = jax.random.split(jax.random.key(kernel))
    x = jax.random.normal(kx, in_shape)
    w = jax.random.normal(kw, (kernel, kernel, 3, 4))
    fused = make_fused(wrapped)
    actual = jax.jit(lambda x, w: fused(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                        precision=lax.Precision.HIGHEST))(x, w)
    assert actual.shape == out_shape
    np.testing.assert_allclose(actual, literal(x, w), rtol=1e-5, atol=1e-4)


def test_nearest_upsample_conv_gradients_match_the_literal_form():
    kx, kw = jax.random.split(jax.random.key(7))
    x = jax.random.normal(kx, (2, 4, 4, 3))
    w = jax.random.normal(kw, (3, 3, 3, 2))
    fused = conv.nearest_upsample_conv(conv.patch_matmul_conv_transpose)

    def energy(conv_fn, x, w):
        return jnp.sum(jnp.tanh(conv_fn(x, w)))

    literal = lambda x, w: lax_conv(  # noqa: E731
        jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), w, (1, 1), "SAME")
    ours = lambda x, w: fused(x, w, (1, 1), "SAME", precision=lax.Precision.HIGHEST)  # noqa
    want = jax.grad(functools.partial(energy, literal), argnums=(0, 1))(x, w)
    got = jax.grad(functools.partial(energy, ours), argnums=(0, 1))(x, w)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_nearest_upsample_conv_rejects_what_it_does_not_compute():
    fused = conv.nearest_upsample_conv()
    x, w = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2))
    with pytest.raises(ValueError, match="stride 1, SAME padding and an odd square kernel"):
        fused(x, w, (2, 2), "SAME")
    with pytest.raises(ValueError, match="odd square kernel"):
        fused(x, jnp.zeros((2, 2, 2, 2)), (1, 1), "SAME")
    with pytest.raises(ValueError, match="odd square kernel"):
        fused(x, w, (1, 1), "VALID")


def test_average_pooled_conv_second_order_matches_the_literal_form():
    # The WGAN-div critic differentiates twice: check the double backward, not only values.
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (2, 4, 4, 3))
    w = jax.random.normal(kw, (3, 3, 3, 2))
    fused = conv.average_pooled_conv(conv.patch_matmul_conv)

    def literal(x, w, strides, padding):
        full = lax_conv(x, w, strides, padding)
        return full.reshape(2, 2, 2, 2, 2, 2).mean(axis=(2, 4))

    def ours(x, w, strides, padding):
        return fused(x, w, strides, padding, precision=lax.Precision.HIGHEST)

    want = second_order_in_float64(literal, (1, 1), "SAME", x, w)
    for got, expected in zip(second_order(ours, (1, 1), "SAME")(x, w), want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_average_pooled_conv_rejects_odd_sides():
    with pytest.raises(ValueError, match="even sides"):
        conv.average_pooled_conv()(jnp.zeros((1, 5, 4, 2)), jnp.zeros((3, 3, 2, 2)), (1, 1),
                                   "SAME")
