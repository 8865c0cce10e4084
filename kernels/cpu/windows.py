"""The windows of a 2-D convolution as a CPU FFI kernel (windows.cc), differentiable to any order.

`gather_windows` is the im2col of `kernels.conv.patch_matmul_conv`; its transpose
`scatter_windows` (col2im, the overlap-add) is its gradient, and the gather is the
scatter's, so gradients of any order (a WGAN-div critic differentiates its convs twice)
stay on these two kernels. `kernels.conv` calls them on CPU for float32 and keeps its
strided slices elsewhere; the tests hold the two to each other.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels import cpu

Array = jax.Array

_GATHER = "kexue_windows_gather"
_SCATTER = "kexue_windows_scatter"


@functools.cache
def available() -> bool:
    """Whether the kernel is built and registered with XLA (False: no compiler, see `cpu`)."""
    return cpu.register("windows", {_GATHER: "KexueWindowsGather",
                                    _SCATTER: "KexueWindowsScatter"})


def usable(x: Array) -> bool:
    """Whether `gather_windows` takes ``x``: float32 on the CPU backend, kernel built."""
    return x.dtype == jnp.float32 and jax.default_backend() == "cpu" and available()


def _require_kernel(x: Array) -> None:
    if x.dtype != jnp.float32:
        raise ValueError(f"the windows kernel takes float32, got {x.dtype}")
    if not available():
        raise ValueError("the windows kernel could not be built (see the warning from "
                         "kernels.cpu)")


class _Geometry(NamedTuple):
    """Static, shared by the pair so each can state the other's output shape."""
    size: tuple[int, int]     # (kh, kw)
    stride: tuple[int, int]   # (sh, sw)
    start: tuple[int, int]    # (top, left)
    count: tuple[int, int]    # (Ho, Wo): windows per column and row
    image: tuple[int, int]    # (H, W)

    def attributes(self) -> dict[str, np.int64]:
        (kh, kw), (sh, sw), (top, left) = self.size, self.stride, self.start
        return {name: np.int64(value) for name, value in
                (("kh", kh), ("kw", kw), ("sh", sh), ("sw", sw), ("top", top),
                 ("left", left))}


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gather(x, geometry: _Geometry):
    shape = (*x.shape[:-3], *geometry.count, geometry.size[0] * geometry.size[1], x.shape[-1])
    return jax.ffi.ffi_call(_GATHER, jax.ShapeDtypeStruct(shape, jnp.float32),
                            vmap_method="broadcast_all")(x, **geometry.attributes())


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scatter(windows, geometry: _Geometry):
    shape = (*windows.shape[:-4], *geometry.image, windows.shape[-1])
    return jax.ffi.ffi_call(_SCATTER, jax.ShapeDtypeStruct(shape, jnp.float32),
                            vmap_method="broadcast_all")(windows, **geometry.attributes())


# Each is linear and the other's transpose.
_gather.defvjp(lambda x, geometry: (_gather(x, geometry), None),
               lambda geometry, _, cotangent: (_scatter(cotangent, geometry),))
_scatter.defvjp(lambda windows, geometry: (_scatter(windows, geometry), None),
                lambda geometry, _, cotangent: (_gather(cotangent, geometry),))


def gather_windows(x: Array, size: tuple[int, int], stride: tuple[int, int],
                   start: tuple[int, int], count: tuple[int, int]) -> Array:
    """(B, Ho, Wo, kh·kw, C): ``windows[b, p, q, i·kw + j] = x[b, p·sh + i − top,
    q·sw + j − left]``, zero outside x; differentiable to any order (reverse mode).

    Args:
      x: (B, H, W, C) float32 (`usable`).
      size: (kh, kw) the window.
      stride: (sh, sw).
      start: (top, left) the padding before the first row and column (negative crops).
      count: (Ho, Wo) windows per column and row.

    Raises:
      ValueError: x is not float32, or the kernel could not be built (see the warning
        from `kernels.cpu`).
    """
    _require_kernel(x)
    return _gather(x, _Geometry(tuple(size), tuple(stride), tuple(start), tuple(count),
                                tuple(x.shape[-3:-1])))


def scatter_windows(windows: Array, size: tuple[int, int], stride: tuple[int, int],
                    start: tuple[int, int], image: tuple[int, int]) -> Array:
    """(B, H, W, C): the transpose of `gather_windows`, every window summed back onto the
    pixels it was read from (col2im).

    Args:
      windows: (B, Ho, Wo, kh·kw, C) float32.
      size, stride, start: as `gather_windows`.
      image: (H, W) of the result.

    Raises:
      ValueError: as `gather_windows`.
    """
    _require_kernel(windows)
    return _scatter(windows, _Geometry(tuple(size), tuple(stride), tuple(start),
                                       tuple(windows.shape[-4:-2]), tuple(image)))
