"""kernels/cpu/windows: the window gather (im2col) and its overlap-add against strided slices.

The reference is kernels/conv.py's pure-XLA path: pad, then one strided slice per tap. A
machine with no C++ compiler skips these tests with that reason.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax import lax

from kernels import conv
from kernels.cpu import windows as cpu_windows
from tests.kernels import cpu_kernels


@pytest.fixture(autouse=True)
def kernel():
    cpu_kernels.require("windows", cpu_windows.available)


def sliced_windows(x, size, stride, start, count):
    """The reference gather: zero-pad (or crop) x so window (p, q) starts at (p·sh, q·sw),
    then one strided slice per tap (kernels/conv.py's XLA path)."""
    (kh, kw), (sh, sw), (top, left), (out_h, out_w) = size, stride, start, count
    bottom = (out_h - 1) * sh + kh - top - x.shape[1]
    right = (out_w - 1) * sw + kw - left - x.shape[2]
    padded = lax.pad(x, jnp.zeros((), x.dtype),
                     ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    return conv._windows(padded, size, stride, count)


geometries = dict(
    height=st.integers(1, 7), width=st.integers(1, 7), kh=st.integers(1, 5),
    kw=st.integers(1, 5), sh=st.integers(1, 3), sw=st.integers(1, 3),
    top=st.integers(-2, 4), left=st.integers(-2, 4), out_h=st.integers(1, 5),
    out_w=st.integers(1, 5), seed=st.integers(0, 2**16))


def _case(height, width, kh, kw, sh, sw, top, left, out_h, out_w, seed):
    x = jax.random.normal(jax.random.key(seed), (2, height, width, 3))
    return x, ((kh, kw), (sh, sw), (top, left), (out_h, out_w))


@settings(max_examples=25, deadline=None)
@example(height=5, width=5, kh=5, kw=5, sh=2, sw=2, top=2, left=2, out_h=3, out_w=3,
         seed=0)   # a DCGAN critic conv, "SAME"
@example(height=2, width=3, kh=3, kw=2, sh=1, sw=1, top=4, left=-2, out_h=2, out_w=4,
         seed=1)   # windows wholly in the padding, and a crop
@given(**geometries)
def test_gather_equals_strided_slices(height, width, kh, kw, sh, sw, top, left, out_h,
                                      out_w, seed):
    x, geometry = _case(height, width, kh, kw, sh, sw, top, left, out_h, out_w, seed)
    expected = sliced_windows(x, *geometry)
    actual = jax.jit(cpu_windows.gather_windows, static_argnums=(1, 2, 3, 4))(x, *geometry)
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=25, deadline=None)
@given(**geometries)
def test_scatter_is_the_gathers_transpose(height, width, kh, kw, sh, sw, top, left, out_h,
                                          out_w, seed):
    x, geometry = _case(height, width, kh, kw, sh, sw, top, left, out_h, out_w, seed)
    cotangent = jax.random.normal(jax.random.key(seed + 1), sliced_windows(x, *geometry).shape)
    _, pullback = jax.vjp(lambda x: sliced_windows(x, *geometry), x)
    expected, = pullback(cotangent)
    actual = cpu_windows.scatter_windows(cotangent, *geometry[:3], x.shape[1:3])
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    # The adjoint identity <gather(x), c> = <x, scatter(c)>, in float64 sums.
    gathered = np.asarray(cpu_windows.gather_windows(x, *geometry), np.float64)
    np.testing.assert_allclose(np.sum(gathered * np.asarray(cotangent, np.float64)),
                               np.sum(np.asarray(x, np.float64) * np.asarray(actual)),
                               rtol=1e-5, atol=1e-5)


def test_gradients_of_every_order_match_the_slices():
    """A double backward, as a WGAN-div critic takes it, through the gather/scatter pair."""
    x = jax.random.normal(jax.random.key(0), (2, 6, 5, 4))
    geometry = ((3, 3), (2, 1), (1, -1), (3, 3))
    weights = jax.random.normal(jax.random.key(1), (3, 3, 9, 4))

    def energy(gather):
        def inner(x):
            return jnp.sum(jnp.tanh(gather(x, *geometry) * weights))

        return jax.jit(jax.grad(lambda x: jnp.sum(jnp.square(jax.grad(inner)(x)))))

    np.testing.assert_allclose(energy(cpu_windows.gather_windows)(x),
                               energy(sliced_windows)(x), rtol=1e-5, atol=1e-5)


def test_vmap_folds_leading_axes_into_the_batch():
    x = jax.random.normal(jax.random.key(0), (3, 2, 5, 5, 2))
    geometry = ((3, 3), (2, 2), (1, 1), (3, 3))
    actual = jax.vmap(lambda x: cpu_windows.gather_windows(x, *geometry))(x)
    expected = jax.vmap(lambda x: sliced_windows(x, *geometry))(x)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("strides, padding", [((2, 2), "SAME"), ((1, 1), ((2, -1), (0, 1)))])
def test_patch_matmul_conv_takes_the_kernel_only_where_it_can(monkeypatch, strides, padding):
    """float32 on CPU runs the kernel, and equals the strided-slice path it replaces (which
    bfloat16, other backends and machines without a compiler keep)."""
    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

    def conv_and_input_gradient(x, w):
        def value(x):
            return conv.patch_matmul_conv(x, w, strides, padding,
                                          precision=lax.Precision.HIGHEST)

        return value(x), jax.grad(lambda x: jnp.sum(jnp.sin(value(x))))(x)

    def traced():   # a new function each time: jit's cache would replay the first trace
        return jax.jit(lambda x, w: conv_and_input_gradient(x, w))

    assert "kexue_windows_gather" in traced().lower(x, w).as_text()
    with_kernel = traced()(x, w)
    monkeypatch.setattr(cpu_windows, "usable", lambda x: False)
    assert "kexue_windows" not in traced().lower(x, w).as_text()
    for got, want in zip(with_kernel, traced()(x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_usable_only_for_float32():
    assert cpu_windows.usable(jnp.ones((1, 2, 2, 1), jnp.float32))
    assert not cpu_windows.usable(jnp.ones((1, 2, 2, 1), jnp.bfloat16))
    assert not cpu_windows.usable(jnp.ones((1, 2, 2, 1), jnp.int32))
    with pytest.raises(ValueError, match="float32, got bfloat16"):
        cpu_windows.gather_windows(jnp.ones((1, 2, 2, 1), jnp.bfloat16), (1, 1), (1, 1),
                                   (0, 0), (2, 2))
