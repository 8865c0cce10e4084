"""Convolutions as plain matmuls over extracted windows, for backends with slow conv gradients.

XLA:CPU lowers some derivative convolutions of a strided conv (the input gradient of a conv
whose input is spatially smaller than its kernel, after the algebraic simplifier swaps the
operands) to loops that run ~50× below matmul speed; a WGAN-div critic step takes its
gradient twice, so it hits them often (experiments/benchmarks/gradient_penalty.py, finding 1).
`patch_matmul_conv` gathers the windows and contracts them in one dot, so every derivative
of any order is a gather, its transpose and dots. The gather is a CPU kernel for float32
(`kernels.cpu.windows`: XLA's own loop for it, pads and strided slices, moved ~1.7 GB/s and
took longer than the matmuls it fed) and those strided slices elsewhere. On GPU/TPU the
native conv is the better choice, which `conv_for_backend("auto")` makes.
`patch_matmul_conv_transpose` does the same for the generator's transposed convs, whose
XLA:CPU gradients are slow as well.

Glossary: B batch, H/W spatial sides, C input and O output channels, kh/kw kernel sides.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from kernels.cpu import windows as cpu_windows

ConvFn = Callable[..., jax.Array]
CONV_IMPLEMENTATIONS = ("auto", "xla", "patch_matmul")

NHWC = ("NHWC", "HWIO", "NHWC")


def _explicit_padding(lhs_shape, rhs_shape, strides, padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return list(lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides, padding))
    return [tuple(pair) for pair in padding]


def _windows(x: jax.Array, size: tuple[int, int], stride: tuple[int, int],
             count: tuple[int, int]) -> jax.Array:
    """(B, Ho, Wo, kh·kw, C): the kh×kw windows of x (B, H, W, C), tap (i, j) at i·kw + j.

    One strided slice per tap, stacked next to the channels, so the patch matrix
    (B·Ho·Wo, kh·kw·C) is this array's own memory order: the contraction reads it with no
    transposing copy (gathering rows, then columns, gave (B, Ho, kh, Wo, kw, C), which XLA
    copied into matrix order, a second pass over the largest array of the step).
    """
    (kh, kw), (sh, sw), (out_h, out_w) = size, stride, count
    return jnp.stack([
        lax.slice(x, (0, i, j, 0),
                  (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, x.shape[3]),
                  (1, sh, sw, 1))
        for i in range(kh) for j in range(kw)], axis=3)


def _check_layout_and_dilation(name, lhs, rhs, dimension_numbers, rhs_dilation) -> None:
    """Raises ValueError unless the conv is NHWC/HWIO/NHWC with an undilated kernel."""
    if dimension_numbers is not None and lax.conv_dimension_numbers(
            lhs.shape, rhs.shape, dimension_numbers) != lax.conv_dimension_numbers(
            lhs.shape, rhs.shape, NHWC):
        raise ValueError(f"{name} supports NHWC/HWIO/NHWC only, got "
                         f"dimension_numbers={dimension_numbers}")
    if rhs_dilation is not None and any(d != 1 for d in rhs_dilation):
        raise ValueError(f"{name} does not support rhs_dilation={rhs_dilation}")


def patch_matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                      dimension_numbers=None, feature_group_count=1, precision=None,
                      preferred_element_type=None) -> jax.Array:
    """``lax.conv_general_dilated`` for 2-D NHWC × HWIO convs, as a matmul over windows.

    Every kh×kw window of the padded input is gathered into (B, Ho, Wo, kh·kw, C) (by
    `kernels.cpu.windows` for float32 on CPU, else with kh·kw strided slices) and
    contracted with the kernel in one matmul. Its derivatives of any order are that gather,
    its transpose and dots, which XLA:CPU runs at memory and matmul speed, whereas it runs
    some gradient convolutions of a strided conv as slow loops (see the module docstring).
    The price is the windows' memory: kh·kw/(sh·sw) times the input.

    Args:
      lhs: (B, H, W, C) input.
      rhs: (kh, kw, C, O) kernel.
      window_strides: (sh, sw).
      padding: "SAME", "VALID" or ((lo, hi), (lo, hi)), as ``lax.conv_general_dilated``;
        explicit pairs only with an lhs_dilation.
      lhs_dilation: None or (dh, dw): dh − 1 zeros between input rows (likewise columns), the
        transposed conv's upsampling (`patch_matmul_conv_transpose`).
      rhs_dilation: None or all ones (kernel dilation is not supported).
      dimension_numbers: None or NHWC/HWIO/NHWC (what ``flax.linen.Conv`` passes).
      feature_group_count: must be 1.
      precision: passed to the contraction.
      preferred_element_type: the output dtype of the contraction, or None.

    Returns:
      (B, Ho, Wo, O), the same values as ``lax.conv_general_dilated``.

    Raises:
      ValueError: an unsupported layout, dilation or grouping.
    """
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    if lhs.ndim != 4 or rhs.ndim != 4 or lhs.shape[3] != rhs.shape[2]:
        raise ValueError(f"patch_matmul_conv needs lhs (B, H, W, C) and rhs (kh, kw, C, O), "
                         f"got lhs {lhs.shape} and rhs {rhs.shape}")
    _check_layout_and_dilation("patch_matmul_conv", lhs, rhs, dimension_numbers, rhs_dilation)
    dh, dw = (1, 1) if lhs_dilation is None else tuple(lhs_dilation)
    if (dh, dw) != (1, 1) and isinstance(padding, str):
        raise ValueError(f"patch_matmul_conv needs explicit padding with lhs_dilation="
                         f"{lhs_dilation}, got {padding!r}")
    if feature_group_count != 1:
        raise ValueError(f"patch_matmul_conv needs feature_group_count=1, "
                         f"got {feature_group_count}")
    (kh, kw), (sh, sw) = rhs.shape[:2], tuple(window_strides)
    (top, bottom), (left, right) = _explicit_padding(lhs.shape, rhs.shape, (sh, sw), padding)
    padded_h = (lhs.shape[1] - 1) * dh + 1 + top + bottom
    padded_w = (lhs.shape[2] - 1) * dw + 1 + left + right
    count = ((padded_h - kh) // sh + 1, (padded_w - kw) // sw + 1)
    if (dh, dw) != (1, 1):   # the zeros between pixels, then plain windows
        lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype),
                      ((0, 0, 0), (0, 0, dh - 1), (0, 0, dw - 1), (0, 0, 0)))
    windows = _gather_windows(lhs, (kh, kw), (sh, sw), (top, left), count)   # [B, Ho, Wo, k², C]
    # As one 2-D product: a 5-D einsum let XLA order the contraction (C, taps) and copy
    # the windows into that order first.
    patches = windows.reshape(-1, kh * kw * lhs.shape[3])
    out = jnp.dot(patches, rhs.reshape(kh * kw * rhs.shape[2], rhs.shape[3]),
                  precision=precision, preferred_element_type=preferred_element_type)
    return out.reshape(*windows.shape[:3], rhs.shape[3])


def transposed_conv_padding(kernel_size: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of the dilated input that makes a transposed conv the
    gradient of a "SAME" or "VALID" forward conv with this kernel and stride (TensorFlow's
    and ``lax.conv_transpose``'s convention)."""
    if padding == "SAME":
        total = kernel_size + stride - 2
        before = kernel_size - 1 if stride > kernel_size - 1 else -(-total // 2)
    elif padding == "VALID":
        total = kernel_size + stride - 2 + max(kernel_size - stride, 0)
        before = kernel_size - 1
    else:
        raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
    return before, total - before


def _gather_windows(x: jax.Array, size, stride, start, count) -> jax.Array:
    """(B, Ho, Wo, kh·kw, C): ``x[b, p·sh + i − top, q·sw + j − left]`` at tap i·kw + j,
    zero outside x (start = (top, left); negative crops): the CPU kernel for float32, else
    a pad (or crop) and strided slices."""
    if cpu_windows.usable(x):
        return cpu_windows.gather_windows(x, size, stride, start, count)
    (kh, kw), (sh, sw), (top, left), (out_h, out_w) = size, stride, start, count
    bottom = (out_h - 1) * sh + kh - top - x.shape[1]
    right = (out_w - 1) * sw + kw - left - x.shape[2]
    padded = lax.pad(x, jnp.zeros((), x.dtype),
                     ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    return _windows(padded, size, stride, count)


def _overlap_add(windows: jax.Array, size, stride, start, image) -> jax.Array:
    """(B, H, W, C) with (H, W) = image: the transpose of `_gather_windows`, every window
    summed onto the pixels it reads (col2im)."""
    if cpu_windows.usable(windows):
        return cpu_windows.scatter_windows(windows, size, stride, start, image)
    shape = jax.ShapeDtypeStruct((*windows.shape[:-4], *image, windows.shape[-1]),
                                 windows.dtype)
    gather = functools.partial(_gather_windows, size=size, stride=stride, start=start,
                               count=windows.shape[-4:-2])
    return jax.linear_transpose(gather, shape)(windows)[0]


def patch_matmul_conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None,
                                dimension_numbers=None, transpose_kernel=False,
                                precision=None, preferred_element_type=None) -> jax.Array:
    """``lax.conv_transpose`` for 2-D NHWC × HWIO, as one matmul and an overlap-add.

    Every input pixel is multiplied with the whole kernel at once, (B·H·W, C) × (C,
    kh·kw·O), and each of its kh·kw products is added onto the output pixel it lands on,
    s apart per input step (col2im, `kernels.cpu.windows` for float32 on CPU). No multiply
    touches an inserted zero (lax's dilated conv does s²× the work), the intermediate has
    the output's O channels per tap, and the gradient is the matching window gather and
    two matmuls, in the generator's double backward too.

    Args:
      lhs: (B, H, W, C) input.
      rhs: (kh, kw, C, O) kernel, or (kh, kw, O, C) with ``transpose_kernel``.
      strides: (sh, sw), the upsampling factors.
      padding: "SAME" or "VALID" of the forward conv, or ((lo, hi), (lo, hi)) of the
        dilated input, used as given (``lax.conv_transpose``'s convention).
      rhs_dilation, dimension_numbers: None / ones and None / NHWC (all that is supported).
      transpose_kernel: flip the kernel spatially and swap its channel axes, which makes
        this the gradient of a forward conv with ``rhs`` (flax's ``transpose_kernel``).
      precision, preferred_element_type: passed to the contraction.

    Returns:
      (B, Ho, Wo, O), (H·sh, W·sw) for "SAME"; the same values as ``lax.conv_transpose``.
    """
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    if lhs.ndim != 4 or rhs.ndim != 4:
        raise ValueError(f"patch_matmul_conv_transpose needs lhs (B, H, W, C) and a 4-D rhs, "
                         f"got lhs {lhs.shape} and rhs {rhs.shape}")
    _check_layout_and_dilation("patch_matmul_conv_transpose", lhs, rhs, dimension_numbers,
                               rhs_dilation)
    if transpose_kernel:
        rhs = jnp.flip(rhs, axis=(0, 1)).swapaxes(2, 3)
    (kh, kw, channels, features), strides = rhs.shape, tuple(strides)
    if lhs.shape[3] != channels:
        raise ValueError(f"patch_matmul_conv_transpose: lhs has {lhs.shape[3]} channels, "
                         f"the kernel takes {channels}")
    if isinstance(padding, str):
        pads = [transposed_conv_padding(k, s, padding) for k, s in zip((kh, kw), strides)]
    else:
        pads = [tuple(pair) for pair in padding]
    # Output side of a stride-1 conv over the dilated, padded input: (n−1)s + 1 + a + b − k + 1.
    out = [(n - 1) * s + 2 + a + b - k
           for n, s, (a, b), k in zip(lhs.shape[1:3], strides, pads, (kh, kw))]
    out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    if min(out) <= 0:   # the padding crops everything: an empty output, as lax's
        return jnp.zeros((lhs.shape[0], *(max(o, 0) for o in out), features), out_dtype)
    # Output o reads input q through tap t where q·s + lo = o + t; with the kernel flipped,
    # t' = k − 1 − t, input q adds its product with tap t' onto o = q·s + t' − (k − 1 − lo):
    # `_overlap_add` with start k − 1 − lo.
    flipped = jnp.flip(rhs, axis=(0, 1)).transpose(2, 0, 1, 3).reshape(channels, -1)
    products = jnp.dot(lhs.reshape(-1, channels), flipped, precision=precision,
                       preferred_element_type=preferred_element_type)
    products = products.reshape(*lhs.shape[:3], kh * kw, features)
    start = (kh - 1 - pads[0][0], kw - 1 - pads[1][0])
    return _overlap_add(products, (kh, kw), strides, start, tuple(out))


def _box_summed_kernel(rhs: jax.Array) -> jax.Array:
    """(k, k, C, O) → (k + 1, k + 1, C, O): the kernel convolved with a 2×2 box of ones."""
    for axis in (0, 1):   # rows, then columns: K[t] + K[t − 1]
        zero_after, zero_before = [(0, 0)] * 4, [(0, 0)] * 4
        zero_after[axis], zero_before[axis] = (0, 1), (1, 0)
        rhs = jnp.pad(rhs, zero_after) + jnp.pad(rhs, zero_before)
    return rhs


def nearest_upsample_conv(conv_transpose: ConvFn = lax.conv_transpose) -> ConvFn:
    """A ``conv_general_dilated`` stand-in that convolves the ×2 nearest up-sampled input.

    For ``nn.Conv(..., padding="SAME", conv_general_dilated=nearest_upsample_conv(...))``:
    conv(up(x), K) with up repeating every pixel 2×2 and K an odd k×k kernel equals the
    stride-2 transposed conv of x itself with K convolved with a 2×2 box of ones (each
    output phase reads a ⌈(k+1)/2⌉-tap neighbourhood of x whose taps are sums of K's), padded
    (k+1)/2 on each side. For the ResNet generator's 3×3 convs that is 16 multiplies per
    input pixel and channel pair instead of 36, and no up-sampled copy of x is made.

    Args:
      conv_transpose: ``lax.conv_transpose`` or `patch_matmul_conv_transpose`.

    Returns:
      f(lhs (B, H, W, C), rhs (k, k, C, O), window_strides, padding, ...) → (B, 2H, 2W, O),
      for stride 1, "SAME" padding and an odd square kernel (else ValueError).
    """

    def upsample_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                      rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                      precision=None, preferred_element_type=None):
        _check_resampling_conv("nearest_upsample_conv", rhs, window_strides, padding,
                               lhs_dilation, rhs_dilation, feature_group_count)
        pad = (rhs.shape[0] + 1) // 2
        return conv_transpose(lhs, _box_summed_kernel(rhs), (2, 2), ((pad, pad), (pad, pad)),
                              dimension_numbers=dimension_numbers, precision=precision,
                              preferred_element_type=preferred_element_type)

    return upsample_conv


def average_pooled_conv(conv: ConvFn = lax.conv_general_dilated) -> ConvFn:
    """A ``conv_general_dilated`` stand-in whose output is average-pooled over 2×2 blocks.

    For ``nn.Conv(..., padding="SAME", conv_general_dilated=average_pooled_conv(...))``:
    pool(conv(x, K)) with an odd k×k kernel equals the stride-2 conv of x with K convolved
    with a 2×2 box of ones / 4, padded (k−1)/2 on each side: for the ResNet critic's 3×3
    convs 16 multiplies per pooled pixel and channel pair instead of 36, and the
    full-resolution output is never formed. The conv's bias, added after, is unchanged by
    the pooling.

    Args:
      conv: ``lax.conv_general_dilated`` or `patch_matmul_conv`.

    Returns:
      f(lhs (B, H, W, C), rhs (k, k, C, O), window_strides, padding, ...) → (B, H/2, W/2, O)
      for even H, W, stride 1, "SAME" padding and an odd square kernel (else ValueError).
    """

    def pooled_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                    dimension_numbers=None, feature_group_count=1, precision=None,
                    preferred_element_type=None):
        _check_resampling_conv("average_pooled_conv", rhs, window_strides, padding,
                               lhs_dilation, rhs_dilation, feature_group_count)
        if lhs.shape[1] % 2 or lhs.shape[2] % 2:
            raise ValueError(f"average_pooled_conv needs even sides, got {lhs.shape[1:3]}")
        pad = (rhs.shape[0] - 1) // 2
        return conv(lhs, _box_summed_kernel(rhs) / 4, (2, 2), ((pad, pad), (pad, pad)),
                    dimension_numbers=dimension_numbers, precision=precision,
                    preferred_element_type=preferred_element_type)

    return pooled_conv


def _check_resampling_conv(name, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                           feature_group_count) -> None:
    kh, kw = rhs.shape[:2]
    if (tuple(window_strides) != (1, 1) or padding != "SAME" or kh != kw or kh % 2 == 0
            or any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation))
            or feature_group_count != 1):
        raise ValueError(f"{name} needs stride 1, SAME padding and an odd square kernel, got "
                         f"strides {window_strides}, padding {padding!r}, kernel {(kh, kw)}")


def resolve_conv_implementation(name: str = "auto", backend: str | None = None) -> str:
    """What `conv_for_backend` runs for `name`: "auto" is "patch_matmul" on the CPU backend
    (XLA:CPU runs its derivatives at matmul speed) and "xla" on GPU and TPU.

    Raises:
      ValueError: an unknown name.
    """
    if name not in CONV_IMPLEMENTATIONS:
        raise ValueError(f"conv must be one of {CONV_IMPLEMENTATIONS}, got {name!r}")
    if name == "auto":
        return "patch_matmul" if (backend or jax.default_backend()) == "cpu" else "xla"
    return name


def conv_for_backend(name: str = "auto", backend: str | None = None, *,
                     transpose: bool = False) -> ConvFn:
    """The convolution function to hand to a conv layer (``nn.Conv``'s
    ``conv_general_dilated``, or with ``transpose`` a ``lax.conv_transpose`` stand-in).

    Args:
      name: "xla" (lax's own), "patch_matmul" (`patch_matmul_conv` /
        `patch_matmul_conv_transpose`) or "auto": patch_matmul on the CPU backend, xla on
        GPU and TPU.
      backend: the platform "auto" decides for; None is ``jax.default_backend()``.
      transpose: the transposed conv instead of the forward one.

    Raises:
      ValueError: an unknown name.
    """
    name = resolve_conv_implementation(name, backend)
    if transpose:
        return patch_matmul_conv_transpose if name == "patch_matmul" else lax.conv_transpose
    return patch_matmul_conv if name == "patch_matmul" else lax.conv_general_dilated
