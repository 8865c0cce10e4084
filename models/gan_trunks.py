"""GAN trunks behind one constructor: DCGAN, ResNet, StyleGAN-lite (docs/gan_architectures.md).

The post https://kexue.fm/archives/6549 compares generator architectures; here each is a
row of `TRUNKS`, built from one `TrunkSpec` into a (generator, critic) pair:

    nets = TRUNKS["resnet"](TrunkSpec(resolution=64, z_dim=128, base_channels=64, norm=...))
    images = nets.generator.apply(variables, z, labels, train=True)     # (B, R, R, 3)
    scores = nets.critic.apply(variables, images, labels, train=True)   # (B,)

The generator's normalisation (`models.gan_norms.NORMS`), the SAGAN block, class
conditioning and the convolution functions are fields of the spec, independent of the trunk.

- ``dcgan``: `models.dcgan` (transposed convs, the rows of `dcgan.GENERATORS` / `CRITICS`).
- ``resnet``: the ResNet GAN of the post's §"ResNet": nearest up-sampling and 3×3 convs in
  pre-activation residual blocks x' = s(x) + α·f(x) (s: the identity, or a 1×1 conv where
  the width changes), α = `residual_scale` (the post: often 0.1 for stability); the critic
  down-samples by 2×2 average pooling; no transposed conv anywhere; Glorot-uniform kernels
  (Keras's default).
- ``stylegan_lite``: StyleGAN without progressive growing (the post's simplified variant):
  a learned constant 4×4 input, a mapping MLP z → w, the DCGAN generator's transposed
  convs, and the configured norm conditioned on w after every layer (AdaIN for StyleGAN;
  it must read the latent, `gan_norms.LATENT_NORMS`); no noise inputs. The critic is the
  DCGAN row's.

Glossary of shapes: B batch, R resolution (a power of two ≥ 32), Z latent size, K classes.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import dcgan, gan_norms

Array = jax.Array
NormFactory = Callable[..., nn.Module]
ModuleFactory = Callable[[], nn.Module]


@dataclasses.dataclass(frozen=True)
class TrunkSpec:
    """Everything a trunk is built from (one signature for every row of `TRUNKS`).

    Attributes:
      resolution: image side R, a power of two ≥ 32.
      z_dim: latent size Z.
      base_channels: the narrowest width (widths double towards the 4×4 map, as DCGAN's).
      norm: the generator's norm factory (`gan_norms.norm_factory`), or None.
      conv: the forward convolution (``lax.conv_general_dilated`` or
        `kernels.conv.patch_matmul_conv`; `kernels.conv.conv_for_backend`).
      conv_transpose: the transposed convolution (``lax.conv_transpose`` or
        `kernels.conv.patch_matmul_conv_transpose`).
      attention: factory of a `gan_norms.SelfAttention` block, or None.
      attention_resolution: the side at which both nets run the block (0: none).
      num_classes: K > 0: a projection critic (labels in, as conditional BN's generator).
      critic_outputs: the critic's head width: 1 for scores, Z for O-GAN's encoder.
      residual_scale: α of the ResNet blocks.
      upsample_conv: the ResNet generator's conv of the ×2 nearest up-sampled input, as one
        function (`kernels.conv.nearest_upsample_conv`: the same values without the
        up-sampled copy), or None: up-sample, then `conv`.
      pooled_conv: the ResNet critic's 2×2 average-pooled conv as one function
        (`kernels.conv.average_pooled_conv`), or None: `conv`, then pool.
      mapping_layers: depth of StyleGAN-lite's mapping MLP.
      dcgan_generator, dcgan_critic: rows of `dcgan.GENERATORS` / `dcgan.CRITICS` (the
        dcgan trunk's nets; StyleGAN-lite's critic and its conv settings).
      sn_power_iterations: for the spectrally normalised critic row "wgan_sn".
    """

    resolution: int
    z_dim: int
    base_channels: int
    norm: NormFactory | None = gan_norms.BatchNorm
    conv: Callable[..., Array] = jax.lax.conv_general_dilated
    conv_transpose: Callable[..., Array] = jax.lax.conv_transpose
    attention: ModuleFactory | None = None
    attention_resolution: int = 0
    num_classes: int = 0
    critic_outputs: int = 1
    residual_scale: float = 0.1
    upsample_conv: Callable[..., Array] | None = None
    pooled_conv: Callable[..., Array] | None = None
    mapping_layers: int = 4
    dcgan_generator: str = "wgan_div"
    dcgan_critic: str = "wgan_div"
    sn_power_iterations: int = 1


@dataclasses.dataclass(frozen=True)
class TrunkNets:
    """A built trunk: generator (z (B, Z), labels → (B, R, R, 3)) and critic
    (images, labels → (B,) scores, or (B, critic_outputs))."""

    generator: nn.Module
    critic: nn.Module


def _dcgan_critic(spec: TrunkSpec) -> nn.Module:
    settings = dict(resolution=spec.resolution, base_channels=spec.base_channels,
                    conv_general_dilated=spec.conv, num_classes=spec.num_classes,
                    head_features=spec.critic_outputs, attention=spec.attention,
                    attention_resolution=spec.attention_resolution)
    if spec.dcgan_critic == "wgan_sn":
        settings["sn_power_iterations"] = spec.sn_power_iterations
    return dcgan.CRITICS[spec.dcgan_critic](**settings)


def dcgan_trunk(spec: TrunkSpec) -> TrunkNets:
    """The DCGAN rows `spec.dcgan_generator` / `spec.dcgan_critic` with the spec's parts."""
    generator = dcgan.GENERATORS[spec.dcgan_generator](
        resolution=spec.resolution, z_dim=spec.z_dim, base_channels=spec.base_channels,
        norm=spec.norm, conv_transpose=spec.conv_transpose, attention=spec.attention,
        attention_resolution=spec.attention_resolution)
    return TrunkNets(generator=generator, critic=_dcgan_critic(spec))


# ----------------------------------------------------------------------------------------
# ResNet.


def upsample_nearest(x: Array) -> Array:
    """(B, H, W, C) → (B, 2H, 2W, C), every pixel repeated 2×2 (Keras's UpSampling2D)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def average_pool(x: Array) -> Array:
    """(B, H, W, C) → (B, H/2, W/2, C), the mean of each 2×2 block (AvgPool2D)."""
    batch, height, width, channels = x.shape
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


def _conv(features: int, kernel: int, conv_fn, name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), padding="SAME",
                   kernel_init=dcgan.KERAS_INIT, conv_general_dilated=conv_fn, name=name)


class ResidualUpBlock(nn.Module):
    """s(up(x)) + α·conv(relu(norm(conv(up(relu(norm(x))))))) with up = nearest ×2.

    Attributes:
      features: output channels.
      residual_scale: α.
      norm: the generator's norm factory, or None.
      conv: the forward convolution function.
      upsample_conv: conv of the up-sampled input in one function (`TrunkSpec`), or None.
    """

    features: int
    residual_scale: float
    norm: NormFactory | None
    conv: Callable[..., Array]
    upsample_conv: Callable[..., Array] | None = None

    def _normalize(self, x, condition, train):
        return x if self.norm is None else self.norm(use_running_average=not train)(
            x, condition)

    @nn.compact
    def __call__(self, x: Array, condition: gan_norms.Condition, *, train: bool) -> Array:
        """(B, S, S, C) → (B, 2S, 2S, features)."""
        h = nn.relu(self._normalize(x, condition, train))
        if self.upsample_conv is None:
            h = _conv(self.features, 3, self.conv)(upsample_nearest(h))
        else:
            h = _conv(self.features, 3, self.upsample_conv)(h)
        h = _conv(self.features, 3, self.conv)(nn.relu(self._normalize(h, condition, train)))
        shortcut = x
        if x.shape[-1] != self.features:   # a 1×1 conv commutes with up-sampling: run it first
            shortcut = _conv(self.features, 1, self.conv, name="shortcut")(shortcut)
        return upsample_nearest(shortcut) + self.residual_scale * h


class ResNetGenerator(nn.Module):
    """z (B, Z) → images (B, R, R, 3): Dense(4·4·max) → log2(R) − 2 up-blocks (widths as
    DCGAN's, the last two at base) → norm → ReLU → Conv3×3(3) → tanh.

    Attributes: as `TrunkSpec`'s (resolution, z_dim, base_channels, norm, conv,
      residual_scale, attention, attention_resolution, upsample_conv).
    """

    resolution: int
    z_dim: int
    base_channels: int
    norm: NormFactory | None
    conv: Callable[..., Array]
    residual_scale: float = 0.1
    attention: ModuleFactory | None = None
    attention_resolution: int = 0
    upsample_conv: Callable[..., Array] | None = None

    @nn.compact
    def __call__(self, z: Array, labels: Array | None = None, *, train: bool) -> Array:
        """(B, Z) latents, optional (B,) labels → (B, R, R, 3) in [−1, 1]."""
        widths = dcgan.generator_widths(self.resolution, self.base_channels)
        condition = gan_norms.Condition(z=z, labels=labels)
        size = dcgan.FEATURE_MAP_SIZE
        h = nn.Dense(size * size * widths[0], kernel_init=dcgan.KERAS_INIT)(z)
        h = h.reshape(z.shape[0], size, size, widths[0])            # [B, 4, 4, max]
        h = dcgan.maybe_attend(h, self.attention, self.attention_resolution)
        for features in (*widths[1:], widths[-1]):                   # 4 → R
            h = ResidualUpBlock(features, self.residual_scale, self.norm, self.conv,
                                self.upsample_conv)(h, condition, train=train)
            h = dcgan.maybe_attend(h, self.attention, self.attention_resolution)
        if self.norm is not None:
            h = self.norm(use_running_average=not train)(h, condition)
        return jnp.tanh(_conv(3, 3, self.conv)(nn.relu(h)))


class ResidualDownBlock(nn.Module):
    """pool(s(x)) + α·pool(conv(act(norm(conv(act(x)))))), act = LeakyReLU(0.2), pool 2×2
    average, s a 1×1 conv where the width changes (the identity otherwise).

    Attributes:
      features: output channels.
      residual_scale: α.
      norm: the critic's norm factory (plain; no condition), or None.
      conv: the forward convolution function.
      activate_input: apply the activation to x first (not on the image itself).
      pooled_conv: the second conv and the pool in one function (`TrunkSpec`), or None.
    """

    features: int
    residual_scale: float
    norm: NormFactory | None
    conv: Callable[..., Array]
    activate_input: bool = True
    pooled_conv: Callable[..., Array] | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """(B, S, S, C) → (B, S/2, S/2, features)."""
        h = nn.leaky_relu(x, 0.2) if self.activate_input else x
        h = _conv(self.features, 3, self.conv)(h)
        if self.norm is not None:
            h = self.norm(use_running_average=not train)(h)
        h = nn.leaky_relu(h, 0.2)
        if self.pooled_conv is None:
            h = average_pool(_conv(self.features, 3, self.conv)(h))
        else:
            h = _conv(self.features, 3, self.pooled_conv)(h)
        shortcut = average_pool(x)   # a 1×1 conv commutes with pooling: pool first
        if x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.conv, name="shortcut")(shortcut)
        return shortcut + self.residual_scale * h


class ResNetCritic(nn.Module):
    """Images (B, R, R, 3) → scores (B,): log2(R) − 2 down-blocks (widths base … max, R → 4)
    → LeakyReLU → global average pool → Dense(head_features) (+ projection with labels).

    Batch norm in the residual branches (the post's author keeps BN in the critic; None
    removes it). Attributes: as `TrunkSpec`'s, plus `norm` (the critic's own).
    """

    resolution: int
    base_channels: int
    conv: Callable[..., Array]
    residual_scale: float = 0.1
    norm: NormFactory | None = dcgan.KERAS_BATCH_NORM
    num_classes: int = 0
    head_features: int = 1
    attention: ModuleFactory | None = None
    attention_resolution: int = 0
    pooled_conv: Callable[..., Array] | None = None

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, *, train: bool) -> Array:
        """(B, R, R, C) images in [−1, 1], optional (B,) labels → (B,) scores."""
        h = x
        for i, features in enumerate(dcgan.critic_widths(self.resolution, self.base_channels)):
            h = ResidualDownBlock(features, self.residual_scale, self.norm, self.conv,
                                  activate_input=i > 0, pooled_conv=self.pooled_conv)(
                h, train=train)
            h = dcgan.maybe_attend(h, self.attention, self.attention_resolution)
        h = dcgan.global_average_pool(nn.leaky_relu(h, 0.2))          # [B, max]
        out = nn.Dense(self.head_features)(h)
        return dcgan.score_head(out, h, labels, self.num_classes)


def resnet_trunk(spec: TrunkSpec) -> TrunkNets:
    """The ResNet generator and critic with the spec's parts."""
    generator = ResNetGenerator(
        resolution=spec.resolution, z_dim=spec.z_dim, base_channels=spec.base_channels,
        norm=spec.norm, conv=spec.conv, residual_scale=spec.residual_scale,
        attention=spec.attention, attention_resolution=spec.attention_resolution,
        upsample_conv=spec.upsample_conv)
    critic = ResNetCritic(
        resolution=spec.resolution, base_channels=spec.base_channels, conv=spec.conv,
        residual_scale=spec.residual_scale, num_classes=spec.num_classes,
        head_features=spec.critic_outputs, attention=spec.attention,
        attention_resolution=spec.attention_resolution, pooled_conv=spec.pooled_conv)
    return TrunkNets(generator=generator, critic=critic)


# ----------------------------------------------------------------------------------------
# StyleGAN-lite.


class MappingNetwork(nn.Module):
    """z (B, Z) → w (B, Z): `layers` × [Dense(Z) → LeakyReLU(0.2)] after normalising z to
    unit mean square (StyleGAN's pixel norm of the input)."""

    layers: int = 4

    @nn.compact
    def __call__(self, z: Array) -> Array:
        """(B, Z) → (B, Z)."""
        w = z * jax.lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + 1e-8)
        for _ in range(self.layers):
            w = nn.leaky_relu(nn.Dense(z.shape[-1])(w), 0.2)
        return w


class StyleGenerator(nn.Module):
    """z (B, Z) → images (B, R, R, 3): w = mapping(z); a learned (4, 4, max) constant →
    norm(w) → ReLU → num_layers × [ConvT k×k/2 → norm(w) → ReLU] → ConvT(3) → tanh.

    The norms read w through `Condition.z` (AdaIN: per-layer affine maps of w).
    Attributes: as `TrunkSpec`'s; `kernel_size` the transposed convs' (DCGAN row's).
    """

    resolution: int
    z_dim: int
    base_channels: int
    norm: NormFactory | None
    conv_transpose: Callable[..., Array]
    mapping_layers: int = 4
    kernel_size: int = 5
    attention: ModuleFactory | None = None
    attention_resolution: int = 0

    @nn.compact
    def __call__(self, z: Array, labels: Array | None = None, *, train: bool) -> Array:
        """(B, Z) latents, optional (B,) labels → (B, R, R, 3) in [−1, 1]."""
        if self.norm is None:
            raise ValueError("stylegan_lite needs a norm that reads the latent "
                             f"({gan_norms.LATENT_NORMS}); got none")
        widths = dcgan.generator_widths(self.resolution, self.base_channels)
        condition = gan_norms.Condition(z=MappingNetwork(self.mapping_layers)(z),
                                        labels=labels)
        size = dcgan.FEATURE_MAP_SIZE
        # Not ones: a spatially uniform map is all zeros after per-sample normalisation.
        constant = self.param("constant", nn.initializers.normal(1.0), (size, size, widths[0]))
        h = jnp.broadcast_to(constant.astype(z.dtype), (z.shape[0], size, size, widths[0]))
        h = nn.relu(self.norm(use_running_average=not train)(h, condition))
        upsample = functools.partial(
            dcgan.ConvTranspose, kernel_size=(self.kernel_size, self.kernel_size),
            kernel_init=dcgan.DCGAN_INIT, conv_transpose=self.conv_transpose)
        h = dcgan.maybe_attend(h, self.attention, self.attention_resolution)
        for features in widths[1:]:
            h = upsample(features)(h)
            h = nn.relu(self.norm(use_running_average=not train)(h, condition))
            h = dcgan.maybe_attend(h, self.attention, self.attention_resolution)
        return jnp.tanh(upsample(3)(h))


def stylegan_lite_trunk(spec: TrunkSpec) -> TrunkNets:
    """StyleGAN-lite's generator with the DCGAN row's critic."""
    generator = StyleGenerator(
        resolution=spec.resolution, z_dim=spec.z_dim, base_channels=spec.base_channels,
        norm=spec.norm, conv_transpose=spec.conv_transpose, mapping_layers=spec.mapping_layers,
        kernel_size=dcgan.GENERATORS[spec.dcgan_generator]().kernel_size,
        attention=spec.attention, attention_resolution=spec.attention_resolution)
    return TrunkNets(generator=generator, critic=_dcgan_critic(spec))


TRUNKS: dict[str, Callable[[TrunkSpec], TrunkNets]] = {
    "dcgan": dcgan_trunk,
    "resnet": resnet_trunk,
    "stylegan_lite": stylegan_lite_trunk,
}
# Trunks without a latent input: their generator's norm must read the latent.
CONSTANT_INPUT_TRUNKS = ("stylegan_lite",)


def build(name: str, spec: TrunkSpec) -> TrunkNets:
    """`TRUNKS[name](spec)`.

    Raises:
      ValueError: an unknown trunk name.
    """
    if name not in TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; valid: {tuple(TRUNKS)}")
    return TRUNKS[name](spec)
