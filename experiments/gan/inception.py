"""Inception-v3 pool3 features (2048-d) in flax.linen, from a weights file the user provides.

Nothing is downloaded. FID numbers comparable with the literature need the TF-ported FID
weights that pytorch-fid uses; torchvision's ImageNet weights also load, for a different
(not comparable) feature space.

Which file, and how to convert it
---------------------------------
* **FID weights** (recommended): pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a
  port of TF's ``inception-2015-12-05``), an asset of the ``fid_weights`` release of
  github.com/mseitzer/pytorch-fid.
* **torchvision weights**: ``inception_v3_google-*.pth`` (``Inception_V3_Weights.
  IMAGENET1K_V1``), or ``torchvision.models.inception_v3(weights="DEFAULT").state_dict()``.

Both are torchvision-layout state dicts (``Conv2d_1a_3x3.conv.weight``, ...,
``Mixed_7c.branch_pool.bn.running_var``). ``load_state_dict_file`` reads ``.npz``,
``.safetensors`` (needs the ``safetensors`` package) and ``.pth``/``.pt`` (needs torch).
To make an ``.npz`` on a machine with torch::

    python -c "import torch, numpy as np; sd = torch.load('pt_inception-2015-12-05-6726825d.pth',
      map_location='cpu'); np.savez('inception_fid.npz', **{k: v.numpy() for k, v in sd.items()})"

Variants (``variant=``)
-----------------------
The two weight sets share every parameter name and shape used here, but not the graph:

* ``"torchvision"``: torchvision's ``Inception3``; every 3×3/1 average pool in the
  InceptionA/C/E branch_pool counts the zero padding (``count_include_pad=True``).
* ``"fid"``: pytorch-fid's ``FIDInceptionA/C/E_1/E_2`` patches for the TF graph: those
  average pools exclude the padding (``count_include_pad=False``), and the last block
  (``Mixed_7c``, ``FIDInceptionE_2``) max-pools instead of average-pooling in branch_pool.
* ``"auto"`` (default) picks ``"fid"`` when ``fc.weight`` has 1008 rows (the TF graph's
  classes) and ``"torchvision"`` when it has 1000.

``fc.*``, ``AuxLogits.*`` and ``*.num_batches_tracked`` are not needed for pool3 and are
ignored; every other name must be one of the 94 conv/batch-norm layers below, each exactly
once, with the right shape, or loading fails naming the file and the offending names.

Input: NHWC float in [−1, 1] (both weight sets expect that range: torchvision's
``transform_input`` maps ImageNet-normalised input back to it), resized to 299×299 with
bilinear interpolation without antialiasing (half-pixel centres, like pytorch-fid's
``F.interpolate(..., mode="bilinear", align_corners=False)``).

Not verified here (no torchvision, no weights file, no network): the features against
pytorch-fid's on real weights. TF's original FID resizes differently (its own bilinear
resize on uint8 images), so FID from any PyTorch/JAX port differs slightly from TF numbers.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments.gan.metrics import as_float_images

INPUT_SIZE = 299
FEATURE_DIM = 2048
BATCH_NORM_EPSILON = 1e-3  # torchvision's BasicConv2d: BatchNorm2d(eps=0.001)
VARIANTS = ("torchvision", "fid")

# ---------------------------------------------------------------------------------------
# The name-mapping table: torchvision layer names -> flax module paths.
#
# Every BasicConv2d (conv without bias + batch norm) of the pool3 trunk, by its torchvision
# name. The flax module tree uses the same names, so the path of layer "Mixed_5b.branch1x1"
# is ("Mixed_5b", "branch1x1").

_STEM_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1",
                "Conv2d_4a_3x3")
_BLOCK_BRANCHES = {
    "A": ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3", "branch_pool"),
    "B": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    "C": ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
          "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5",
          "branch_pool"),
    "D": ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
          "branch7x7x3_4"),
    "E": ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
          "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"),
}
_BLOCKS = (("Mixed_5b", "A"), ("Mixed_5c", "A"), ("Mixed_5d", "A"), ("Mixed_6a", "B"),
           ("Mixed_6b", "C"), ("Mixed_6c", "C"), ("Mixed_6d", "C"), ("Mixed_6e", "C"),
           ("Mixed_7a", "D"), ("Mixed_7b", "E"), ("Mixed_7c", "E"))
CONV_LAYERS = _STEM_LAYERS + tuple(
    f"{block}.{branch}" for block, kind in _BLOCKS for branch in _BLOCK_BRANCHES[kind])

# Within one BasicConv2d: torch suffix -> (flax collection, leaf path, layout change).
# torch Conv2d weights are [out, in, kh, kw]; flax nn.Conv kernels are [kh, kw, in, out].
_BASIC_CONV_LEAVES = (
    ("conv.weight", "params", ("conv", "kernel"), "oihw_to_hwio"),
    ("bn.weight", "params", ("bn", "scale"), None),
    ("bn.bias", "params", ("bn", "bias"), None),
    ("bn.running_mean", "batch_stats", ("bn", "mean"), None),
    ("bn.running_var", "batch_stats", ("bn", "var"), None),
)
IGNORED_PREFIXES = ("fc.", "AuxLogits.")
IGNORED_SUFFIXES = (".num_batches_tracked",)


def name_table() -> dict[str, tuple[str, tuple[str, ...], str | None]]:
    """torch state-dict name -> (flax collection, flax path, layout change), for all 470."""
    table = {}
    for layer in CONV_LAYERS:
        for suffix, collection, leaf, layout in _BASIC_CONV_LEAVES:
            table[f"{layer}.{suffix}"] = (collection, tuple(layer.split(".")) + leaf, layout)
    return table


# ---------------------------------------------------------------------------------------
# The network (torchvision's Inception3 up to the global average pool).


class BasicConv2d(nn.Module):
    """Conv (no bias) -> batch norm (inference statistics) -> ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # torch's symmetric (pad_h, pad_w)

    @nn.compact
    def __call__(self, x):
        pad_h, pad_w = self.padding
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                    padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x, count_include_pad: bool):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=count_include_pad)


def _max_pool_3x3_stride2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int
    count_include_pad: bool

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
        branch5x5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
        branch5x5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
        branch3x3dbl = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1),
                                   name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1),
                                   name="branch3x3dbl_3")(branch3x3dbl)
        branch_pool = _avg_pool_3x3(x, self.count_include_pad)
        branch_pool = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(branch_pool)
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        branch3x3dbl = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1),
                                   name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, (3, 3), strides=(2, 2),
                                   name="branch3x3dbl_3")(branch3x3dbl)
        return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int
    count_include_pad: bool

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        branch1x1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
        branch7x7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
        branch7x7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
        branch7x7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
        branch7x7dbl = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0),
                                   name="branch7x7dbl_2")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (1, 7), padding=(0, 3),
                                   name="branch7x7dbl_3")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0),
                                   name="branch7x7dbl_4")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(192, (1, 7), padding=(0, 3),
                                   name="branch7x7dbl_5")(branch7x7dbl)
        branch_pool = _avg_pool_3x3(x, self.count_include_pad)
        branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(branch_pool)
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
        branch3x3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(branch3x3)
        branch7x7x3 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
        branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3),
                                  name="branch7x7x3_2")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0),
                                  name="branch7x7x3_3")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, (3, 3), strides=(2, 2),
                                  name="branch7x7x3_4")(branch7x7x3)
        return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
    pool: str  # "avg_include_pad", "avg_exclude_pad" or "max" (FIDInceptionE_2)

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
        branch3x3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
        branch3x3 = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3),
        ], axis=-1)
        branch3x3dbl = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(384, (3, 3), padding=(1, 1),
                                   name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl),
        ], axis=-1)
        if self.pool == "max":
            branch_pool = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            branch_pool = _avg_pool_3x3(x, self.pool == "avg_include_pad")
        branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(branch_pool)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionV3Pool3(nn.Module):
    """Inception-v3 up to the 2048-d global average pool ("pool3"), inference mode.

    Attributes:
      variant: "torchvision" or "fid" (see the module docstring).
    """

    variant: str = "fid"

    @nn.compact
    def __call__(self, x):
        """[N, H, W, 3] float in [−1, 1] (H, W ≥ 75; 299 for FID) -> [N, 2048] float32."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        include_pad = self.variant == "torchvision"
        x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_stride2(x)
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_stride2(x)
        x = InceptionA(32, include_pad, name="Mixed_5b")(x)
        x = InceptionA(64, include_pad, name="Mixed_5c")(x)
        x = InceptionA(64, include_pad, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, include_pad, name="Mixed_6b")(x)
        x = InceptionC(160, include_pad, name="Mixed_6c")(x)
        x = InceptionC(160, include_pad, name="Mixed_6d")(x)
        x = InceptionC(192, include_pad, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        avg = "avg_include_pad" if include_pad else "avg_exclude_pad"
        x = InceptionE(avg, name="Mixed_7b")(x)
        x = InceptionE(avg if include_pad else "max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


@functools.cache
def variable_shapes(variant: str = "fid") -> dict:
    """The model's variables as a tree of `jax.ShapeDtypeStruct` (no weights computed).

    Cached: treat the returned tree as read-only.
    """
    model = InceptionV3Pool3(variant)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))


# ---------------------------------------------------------------------------------------
# Loading


class WeightsError(ValueError):
    """A weights file that does not match the network: names the file and the parameters."""


def _get_path(tree, path):
    for name in path:
        tree = tree[name]
    return tree


def _set_path(tree: dict, path, value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], variant: str = "fid",
                            source: str = "state dict") -> dict:
    """Maps a torchvision-layout state dict to flax variables through `name_table`.

    Args:
      state_dict: name -> array (numpy or anything `np.asarray` takes).
      variant: "torchvision" or "fid" (only the graph differs; names and shapes agree).
      source: where the state dict came from (the file), for error messages.

    Returns:
      {"params": ..., "batch_stats": ...} of float32 numpy arrays, for
      ``InceptionV3Pool3(variant).apply``.

    Raises:
      WeightsError: a needed name is missing, an unknown name is present, or a shape is
        wrong; the message names the source and every offending name.
    """
    table = name_table()
    used = {name for name in state_dict
            if not name.startswith(IGNORED_PREFIXES) and not name.endswith(IGNORED_SUFFIXES)}
    missing = sorted(set(table) - used)
    unexpected = sorted(used - set(table))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: {', '.join(missing[:20])}"
                            + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {', '.join(unexpected[:20])}"
                            + (" ..." if len(unexpected) > 20 else ""))
        raise WeightsError(f"{source} does not match Inception-v3 (torchvision layout): "
                           + "; ".join(problems))
    expected = variable_shapes(variant)
    variables: dict = {}
    wrong_shapes = []
    for name, (collection, path, layout) in table.items():
        value = np.asarray(state_dict[name], dtype=np.float32)
        if layout == "oihw_to_hwio":
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        want = _get_path(expected[collection], path).shape
        if value.shape != tuple(want):
            wrong_shapes.append(f"{name} {tuple(np.shape(state_dict[name]))}")
            continue
        _set_path(variables.setdefault(collection, {}), path, value)
    if wrong_shapes:
        raise WeightsError(f"{source}: wrong shapes for {len(wrong_shapes)} parameter(s): "
                           + ", ".join(wrong_shapes[:20]))
    return variables


def variables_to_state_dict(variables) -> dict[str, np.ndarray]:
    """The inverse of `state_dict_to_variables`: flax variables -> torchvision names."""
    state_dict = {}
    for name, (collection, path, layout) in name_table().items():
        value = np.asarray(_get_path(variables[collection], path))
        state_dict[name] = np.ascontiguousarray(
            value.transpose(3, 2, 0, 1) if layout == "oihw_to_hwio" else value)
    return state_dict


def load_state_dict_file(path) -> dict[str, np.ndarray]:
    """Reads a state dict from .npz, .safetensors or .pth/.pt (torch) as numpy arrays."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file not found: {path} (see "
                                "experiments/gan/inception.py for which file to provide)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as error:
            raise ImportError(f"reading {path} needs the 'safetensors' package; install it or "
                              "convert the file to .npz") from error
        return dict(load_file(str(path)))
    if suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError as error:
            raise ImportError(f"reading {path} needs torch; convert it to .npz on a machine "
                              "that has torch (see this module's docstring)") from error
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        return {name: value.numpy() for name, value in loaded.items()}
    raise ValueError(f"{path}: unsupported weights format {suffix!r}; expected .npz, "
                     ".safetensors, .pth or .pt")


def detect_variant(state_dict: Mapping[str, np.ndarray], source: str = "state dict") -> str:
    """"fid" for the 1008-class TF graph, "torchvision" for 1000 classes (from fc.weight)."""
    if "fc.weight" not in state_dict:
        raise WeightsError(f"{source} has no fc.weight to tell the variant from; pass "
                           f"variant= one of {VARIANTS}")
    classes = np.shape(state_dict["fc.weight"])[0]
    if classes == 1008:
        return "fid"
    if classes == 1000:
        return "torchvision"
    raise WeightsError(f"{source}: fc.weight has {classes} rows, neither 1008 (FID) nor 1000 "
                       f"(torchvision); pass variant= one of {VARIANTS}")


def resize_for_inception(images, size: int = INPUT_SIZE) -> jax.Array:
    """Bilinear resize to size × size, half-pixel centres, no antialiasing.

    The same sampling as pytorch-fid's ``F.interpolate(x, size=(299, 299), mode="bilinear",
    align_corners=False)``, also when shrinking.

    Args:
      images: [N, H, W, C] floating point.
      size: the output side.

    Returns:
      [N, size, size, C], the input dtype.
    """
    if images.shape[1:3] == (size, size):
        return images
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]),
                            method="bilinear", antialias=False)


@functools.partial(jax.jit, static_argnames=("variant", "size"))
def _pool3(variables, images, variant, size):
    return InceptionV3Pool3(variant).apply(variables, resize_for_inception(images, size))


class InceptionFeatures:
    """Inception-v3 pool3 features from a user-provided weights file (a `FeatureExtractor`).

    Args:
      weights_path: a torchvision-layout state dict (.npz, .safetensors, .pth); see the
        module docstring for which file.
      variant: "auto", "fid" or "torchvision".
      input_size: the side images are resized to (299 for FID).
    """

    feature_dim = FEATURE_DIM

    def __init__(self, weights_path, variant: str = "auto", input_size: int = INPUT_SIZE):
        state_dict = load_state_dict_file(weights_path)
        source = str(weights_path)
        if variant == "auto":
            variant = detect_variant(state_dict, source)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be 'auto' or one of {VARIANTS}, got {variant!r}")
        if input_size < 75:
            raise ValueError(f"input_size must be >= 75 (Inception-v3's minimum), got "
                             f"{input_size}")
        self.variant, self.input_size = variant, input_size
        self.variables = jax.tree.map(jnp.asarray,
                                      state_dict_to_variables(state_dict, variant, source))

    def __call__(self, images) -> np.ndarray:
        """(n, h, w, 3) float in [−1, 1] or uint8 -> (n, 2048) float32."""
        images = as_float_images(images)
        if images.shape[-1] != 3:
            raise ValueError(f"images must have 3 channels, got shape {images.shape}")
        return np.asarray(_pool3(self.variables, images, self.variant, self.input_size))
