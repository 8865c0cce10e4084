"""DCGAN generator and critic of the WGAN-div post and its baselines (docs/wgan_div.md §3).

Glossary of shapes: B batch, R resolution (a power of two ≥ 32), Z latent size, NHWC images.

Sizes derive from the resolution as in the seed (`wgan_div_celeba.py`, docs/wgan_div.md §3.1):

    num_layers   = log2(R) − 3
    max_channels = base_channels · 2^num_layers      (= 8·R for base 64: 1024 at 128 px)
    critic convs : base · 2^i, i = 0 … num_layers    (64 → … → max), spatial R/2 → … → 4
    generator    : Dense(4·4·max) → ConvT widths max/2, …, base → ConvT(3), spatial 4 → … → R

At 64 px that is the §2.5 DCGAN layout (G Dense(4·4·512), D convs 64 → 512).

Keras defaults reproduced (docs/index.md §2):

- BatchNormalization: momentum 0.99 (flax's `momentum` has the same meaning: new moving
  value = 0.99·old + 0.01·batch), ε = 1e-3 (flax's default is 1e-5). Training mode
  normalises with the statistics of the current call only, so real and fake batches passed
  in separate calls are normalised separately, as in the seed. Departure: Keras 2.2.x
  feeds the moving *variance* an n/(n − 1 − ε)-rescaled batch variance; flax uses the
  biased one. Only eval-mode outputs see the difference (≈1.6 % in the variance of the
  generator's per-unit BN at batch 64, negligible after a conv).
- Kernels without an explicit initializer are Glorot-uniform, biases zero (`KERAS_INIT`);
  flax's default would be LeCun-normal. The seed's W-div nets set N(0, 0.02) on every conv
  and on G's dense layer (`DCGAN_INIT`) but leave the critic's Dense(1) at Glorot.
- `Conv2DTranspose(padding='same')` is the gradient of a 'same' strided conv, with the
  kernel stored (kh, kw, out, in): `nn.ConvTranspose(transpose_kernel=True)` computes
  exactly that, so Keras kernels could be copied as they are. `ConvTranspose` here is that
  layer with the transposed conv as a field (`kernels.conv` has a faster one for XLA:CPU).
- `LeakyReLU()` has slope 0.3; the W-div critic sets 0.2 explicitly.

Variants are rows of the `GENERATORS` / `CRITICS` tables (functools.partial of the two
modules): ``wgan_div`` (the class defaults), ``dcgan``, ``wgan_gp`` and ``wgan_sn``
(docs/wgan_div.md §3.2). The critic returns raw scores: the DCGAN sigmoid lives in the
loss.

The norm layer is a field: a factory called as ``norm(use_running_average=not train)``
that returns a module applied to the features; ``None`` removes every norm layer. In the
critic any flax norm works through a partial, e.g. ``lambda use_running_average:
nn.LayerNorm()``; the generator's norm is also given the `models.gan_norms.Condition`
(latent and labels), as every norm of `models.gan_norms.NORMS` takes it, so conditional BN,
SELF-MOD and AdaIN go in unchanged (docs/gan_architectures.md).

Both nets take an optional SAGAN self-attention block (``attention``, a factory of
`models.gan_norms.SelfAttention`) after the layer whose output has side
``attention_resolution``; the critic takes class labels for a projection head
(``num_classes``) and can output a vector (``head_features``: O-GAN's encoder).
"""

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import gan_norms
from models import spectral_norm as sn

Array = jax.Array
Initializer = nn.initializers.Initializer
NormFactory = Callable[..., nn.Module]
ModuleFactory = Callable[[], nn.Module]

# The final feature map of both nets is 4×4 (f_size = R / 2^(num_layers + 1) in the seed).
FEATURE_MAP_SIZE = 4
MIN_RESOLUTION = 32

KERAS_BATCH_NORM = functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1e-3)
KERAS_INIT = nn.initializers.glorot_uniform()
DCGAN_INIT = nn.initializers.normal(stddev=0.02)


def num_layers(resolution: int) -> int:
    """log2(resolution) − 3: the generator's BN blocks, one fewer than the critic's convs.

    Raises:
      ValueError: if ``resolution`` is not a power of two ≥ 32.
    """
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or resolution < MIN_RESOLUTION
        or resolution & (resolution - 1)
    ):
        raise ValueError(
            f"resolution must be a power of two >= {MIN_RESOLUTION}, got {resolution!r}"
        )
    return int(math.log2(resolution)) - 3


def critic_widths(resolution: int, base_channels: int = 64) -> tuple[int, ...]:
    """Output channels of the critic's convs: base · 2^i for i = 0 … num_layers."""
    return tuple(base_channels * 2**i for i in range(num_layers(resolution) + 1))


def generator_widths(resolution: int, base_channels: int = 64) -> tuple[int, ...]:
    """Channels of the generator's 4×4 seed map followed by its BN'd transposed convs."""
    return critic_widths(resolution, base_channels)[::-1]


def global_average_pool(x: Array) -> Array:
    """(B, H, W, C) → (B, C): the W-div critic's pooling (docs/wgan_div.md §3.1)."""
    return jnp.mean(x, axis=(1, 2))


def flatten(x: Array) -> Array:
    """(B, H, W, C) → (B, H·W·C) in Keras's `Flatten` order (docs/wgan_div.md §3.2)."""
    return x.reshape(x.shape[0], -1)


class ConvTranspose(nn.Module):
    """``nn.ConvTranspose(padding="SAME", transpose_kernel=True)`` with the transposed conv
    as a field: the same parameter names, shapes and initialisation as flax's layer.

    Attributes:
      features: output channels O.
      kernel_size: (kh, kw); the kernel is stored (kh, kw, O, C) as Keras stores it.
      strides: (sh, sw), the upsampling factors.
      use_bias: add a bias (zeros at init).
      kernel_init: the kernel's initializer.
      conv_transpose: ``lax.conv_transpose`` or a function with its signature
        (``kernels.conv.patch_matmul_conv_transpose``).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (2, 2)
    use_bias: bool = True
    kernel_init: Initializer = KERAS_INIT
    conv_transpose: Callable[..., Array] = jax.lax.conv_transpose

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """(B, H, W, C) → (B, H·sh, W·sw, O)."""
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, self.features, x.shape[-1]), jnp.float32)
        y = self.conv_transpose(x, kernel, self.strides, "SAME",
                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                transpose_kernel=True)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,),
                               jnp.float32)
        return y


def maybe_attend(h: Array, attention: ModuleFactory | None, resolution: int) -> Array:
    """h (B, S, S, C) through a new attention block when S is `resolution`, else h."""
    if attention is None or h.shape[1] != resolution:
        return h
    return attention()(h)


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


class Generator(nn.Module):
    """z (B, Z) → images (B, R, R, out_channels) in [−1, 1] (docs/wgan_div.md §3.1).

    Dense(4·4·max) → norm over the flat features (per unit, before the reshape, as the
    seed) → ReLU → reshape (4, 4, max) → num_layers × [ConvTranspose k×k/2 'same' + bias
    → norm → ReLU] → ConvTranspose(out_channels, k×k/2) → tanh.

    Attributes:
      resolution: output side R, a power of two ≥ 32 (seed 128).
      z_dim: latent size Z (seed 128; 100 in the §2.5 baselines).
      base_channels: width of the last BN'd block (seed 64).
      kernel_size: square kernel side (seed 5).
      out_channels: image channels (3).
      use_bias: biases on the dense and transposed-conv layers (the seed has them).
      kernel_init: for every kernel (seed N(0, 0.02); Keras Glorot in §2.5).
      norm: norm factory (see module docstring; `models.gan_norms.NORMS`), or None.
      norm_before_reshape: normalise the dense layer's flat 4·4·max features per unit
        before the reshape (the W-div seed) or, False, the (4, 4, max) map per channel
        after it (the SELF-MOD / O-GAN seed, docs/gan_architectures.md).
      conv_transpose: the transposed conv every `ConvTranspose` runs (see there).
      attention: factory of a self-attention block, or None.
      attention_resolution: the side after which the block runs (0: none).
    """

    resolution: int = 128
    z_dim: int = 128
    base_channels: int = 64
    kernel_size: int = 5
    out_channels: int = 3
    use_bias: bool = True
    kernel_init: Initializer = DCGAN_INIT
    norm: NormFactory | None = gan_norms.BatchNorm
    norm_before_reshape: bool = True
    conv_transpose: Callable[..., Array] = jax.lax.conv_transpose
    attention: ModuleFactory | None = None
    attention_resolution: int = 0

    def __post_init__(self):
        num_layers(self.resolution)
        for name in ("z_dim", "base_channels", "kernel_size", "out_channels"):
            _check_positive(name, getattr(self, name))
        super().__post_init__()

    def _normalize(self, x: Array, condition: gan_norms.Condition, train: bool) -> Array:
        if self.norm is None:
            return x
        return self.norm(use_running_average=not train)(x, condition)

    @nn.compact
    def __call__(self, z: Array, labels: Array | None = None, *, train: bool) -> Array:
        """Generates images.

        Args:
          z: (B, Z) float latents.
          labels: (B,) int class labels for a class-conditional norm, or None.
          train: batch statistics (and their moving-average update) vs moving averages.

        Returns:
          (B, R, R, out_channels) float in [−1, 1].
        """
        if z.ndim != 2 or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (batch, z_dim={self.z_dim}), got {z.shape}")
        widths = generator_widths(self.resolution, self.base_channels)
        kernel = (self.kernel_size, self.kernel_size)

        h = nn.Dense(
            FEATURE_MAP_SIZE**2 * widths[0],
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
        )(z)  # [B, 16·max]
        condition = gan_norms.Condition(z=z, labels=labels)
        if self.norm_before_reshape:
            h = self._normalize(h, condition, train)
        h = h.reshape(z.shape[0], FEATURE_MAP_SIZE, FEATURE_MAP_SIZE, widths[0])
        if not self.norm_before_reshape:
            h = self._normalize(h, condition, train)
        h = nn.relu(h)
        upsample = functools.partial(ConvTranspose, kernel_size=kernel, strides=(2, 2),
                                     use_bias=self.use_bias, kernel_init=self.kernel_init,
                                     conv_transpose=self.conv_transpose)
        h = maybe_attend(h, self.attention, self.attention_resolution)
        for features in widths[1:]:
            h = nn.relu(self._normalize(upsample(features)(h), condition, train))
            h = maybe_attend(h, self.attention, self.attention_resolution)
        h = upsample(self.out_channels)(h)  # [B, R, R, out_channels]
        return jnp.tanh(h)


class Critic(nn.Module):
    """Images (B, R, R, C) → scores (B,) (docs/wgan_div.md §3.1; the §3.2 variants via fields).

    (num_layers + 1) × [Conv k×k/2 'same' → norm (all but the first conv) → LeakyReLU]
    → pool → Dense(1). Real and fake batches go through in separate calls, so in training
    mode each is normalised by its own statistics (docs/index.md §2 item 3).

    Attributes:
      resolution: input side R, a power of two ≥ 32 (seed 128).
      base_channels: width of the first conv (seed 64).
      kernel_size: square kernel side (seed 5).
      negative_slope: LeakyReLU slope (seed 0.2; Keras default 0.3 in §2.5).
      conv_use_bias: biases on the convs (seed none; Keras default yes in §2.5).
      kernel_init: conv kernels (seed N(0, 0.02); Glorot in §2.5).
      head_use_bias: bias on Dense(1) (the W-div, GP and SN critics have none).
      head_kernel_init: Dense(1) kernel (Keras Glorot in every seed script).
      pool: (B, 4, 4, max) → (B, F) before the head: `global_average_pool` or `flatten`.
      norm: norm factory (see module docstring), or None.
      spectral_norm: wrap every conv and the dense head in flax's `SpectralNorm`
        (WGAN-SN, docs/wgan_div.md §3.3); its ``u`` and ``sigma`` live in ``batch_stats``.
      sn_power_iterations: power iterations per call from the stored ``u``. Default 1,
        the SN-GAN practice; the seed ran 5 from a ones vector each call
        (see `models.spectral_norm`).
      conv_general_dilated: the convolution every conv runs, as ``nn.Conv`` takes it;
        ``kernels.conv.patch_matmul_conv`` gives the same values with derivatives that
        XLA:CPU runs far faster (``kernels.conv.conv_for_backend``).
      num_classes: K > 0 adds the projection term ⟨embed(y), pooled features⟩ to the score
        (class-conditional critic); 0: unconditional.
      head_features: outputs of the dense head: 1 gives (B,) scores, more a (B, F) vector
        (O-GAN's encoder E, docs/gan_architectures.md).
      attention: factory of a self-attention block, or None.
      attention_resolution: the side after which the block runs (0: none).
    """

    resolution: int = 128
    base_channels: int = 64
    kernel_size: int = 5
    negative_slope: float = 0.2
    conv_use_bias: bool = False
    kernel_init: Initializer = DCGAN_INIT
    head_use_bias: bool = False
    head_kernel_init: Initializer = KERAS_INIT
    pool: Callable[[Array], Array] = global_average_pool
    norm: NormFactory | None = KERAS_BATCH_NORM
    spectral_norm: bool = False
    sn_power_iterations: int = 1
    conv_general_dilated: Callable[..., Array] = jax.lax.conv_general_dilated
    num_classes: int = 0
    head_features: int = 1
    attention: ModuleFactory | None = None
    attention_resolution: int = 0

    def __post_init__(self):
        num_layers(self.resolution)
        for name in ("base_channels", "kernel_size", "sn_power_iterations", "head_features"):
            _check_positive(name, getattr(self, name))
        super().__post_init__()

    def _linear(self, layer: nn.Module, x: Array, train: bool) -> Array:
        if not self.spectral_norm:
            return layer(x)
        return sn.spectrally_normalized_call(
            layer, x, n_steps=self.sn_power_iterations, update_stats=train
        )

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, *, train: bool) -> Array:
        """Scores images.

        Args:
          x: (B, R, R, C) float images, scaled to [−1, 1].
          labels: (B,) int labels (needed when `num_classes` > 0; ignored otherwise).
          train: batch statistics and spectral-norm state updates vs stored ones.

        Returns:
          (B,) float scores (logits for the DCGAN loss); (B, head_features) when
          head_features > 1.
        """
        if x.ndim != 4 or x.shape[1:3] != (self.resolution, self.resolution):
            raise ValueError(
                f"x must have shape (batch, {self.resolution}, {self.resolution}, channels),"
                f" got {x.shape}"
            )
        h = x
        for i, features in enumerate(critic_widths(self.resolution, self.base_channels)):
            conv = nn.Conv(
                features,
                (self.kernel_size, self.kernel_size),
                strides=(2, 2),
                padding="SAME",
                use_bias=self.conv_use_bias,
                kernel_init=self.kernel_init,
                conv_general_dilated=self.conv_general_dilated,
            )
            h = self._linear(conv, h, train)
            if i > 0 and self.norm is not None:  # DCGAN: no BN on the first conv
                h = self.norm(use_running_average=not train)(h)
            h = nn.leaky_relu(h, negative_slope=self.negative_slope)
            h = maybe_attend(h, self.attention, self.attention_resolution)
        h = self.pool(h)  # [B, F]
        head = nn.Dense(self.head_features, use_bias=self.head_use_bias,
                        kernel_init=self.head_kernel_init)
        out = self._linear(head, h, train)
        return score_head(out, h, labels, self.num_classes)


def score_head(out: Array, features: Array, labels: Array | None, num_classes: int) -> Array:
    """A critic's output from its dense head: (B,) scores plus the projection term when
    class-conditional, or the (B, F) vector of a multi-output head as it is."""
    if out.shape[-1] > 1:
        return out
    scores = out[:, 0]
    if num_classes:
        scores = scores + gan_norms.projection_score(features, labels, num_classes)
    return scores


# The four nets of the seed's repository (docs/wgan_div.md §3.2). Every row is a partial, so any
# field can still be overridden: CRITICS["dcgan"](resolution=128).
_KERAS_DEFAULT_CRITIC = functools.partial(
    Critic,
    resolution=64,
    negative_slope=0.3,  # `LeakyReLU()` with no argument
    conv_use_bias=True,
    kernel_init=KERAS_INIT,
    pool=flatten,
)
_KERAS_DEFAULT_GENERATOR = functools.partial(
    Generator, resolution=64, z_dim=100, kernel_init=KERAS_INIT
)

CRITICS: dict[str, Callable[..., Critic]] = {
    "wgan_div": Critic,  # docs/wgan_div.md §3.1
    "dcgan": functools.partial(_KERAS_DEFAULT_CRITIC, head_use_bias=True),  # Dense(1, sigmoid)
    "wgan_gp": _KERAS_DEFAULT_CRITIC,  # Dense(1, use_bias=False), linear
    "wgan_sn": functools.partial(
        _KERAS_DEFAULT_CRITIC,
        spectral_norm=True,
        norm=sn.UnitNormScaleBatchNorm,  # the seed's SN of BN γ
    ),
    # O-GAN's encoder (o_gan_celeba_sm_4x4.py, docs/gan_architectures.md): 4×4 convs with
    # bias, LeakyReLU 0.2, Flatten, Dense(Z) with bias (head_features=Z set by the trunk).
    "ogan": functools.partial(Critic, kernel_size=4, conv_use_bias=True, pool=flatten,
                              head_use_bias=True),
}

GENERATORS: dict[str, Callable[..., Generator]] = {
    "wgan_div": Generator,  # docs/wgan_div.md §3.1
    "dcgan": _KERAS_DEFAULT_GENERATOR,
    "wgan_gp": _KERAS_DEFAULT_GENERATOR,
    "wgan_sn": _KERAS_DEFAULT_GENERATOR,
    # O-GAN / SELF-MOD seed: 4×4 transposed convs, the dense layer's norm after the reshape.
    "ogan": functools.partial(Generator, kernel_size=4, norm_before_reshape=False),
}
