"""Generator normalisations and the SAGAN self-attention block (docs/gan_architectures.md).

The post (https://kexue.fm/archives/6549) traces the generator's normalisation from plain
batch norm to conditional BN, SELF-MOD and AdaIN. Each is a module here with one interface,
so that any of them goes into any trunk of `models.gan_trunks`:

    norm = NORMS[name](use_running_average=not train, **settings)
    y = norm(x, condition)          # x: (B, ..., C) → (B, ..., C)

`condition` is a `Condition` (the latent z, or StyleGAN's mapped w; the class labels); a norm
reads what it needs and ignores the rest. Glossary of shapes: B batch, C channels (the last
axis), Z latent size, K classes, N = H·W positions.

| name             | statistics                  | scale γ, shift β                         |
|------------------|-----------------------------|------------------------------------------|
| `bn`             | batch (B, H, W)             | learned vectors                          |
| `none`           | —                           | —                                        |
| `layer_norm`     | per sample (H, W, C)        | learned vectors                          |
| `conditional_bn` | batch (B, H, W)             | per class: embeddings, init 1 and 0      |
| `self_mod`       | batch (B, H, W), no affine  | 1 + MLP_γ(z), MLP_β(z), one pair per layer |
| `adain`          | per sample (H, W)           | 1 + Dense_γ(z), Dense_β(z) per layer     |

Batch statistics follow Keras's BatchNormalization (momentum 0.99, ε = 1e-3; docs/index.md
§2): training normalises with the current call's statistics only. A (B, F) input (the DCGAN
generator's dense layer, normalised per unit before the reshape) has no spatial axes:
`adain` then takes its per-sample statistics over the F features.
"""

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels import attention as attention_lib

Array = jax.Array

BN_MOMENTUM = 0.99   # Keras's defaults (docs/index.md §2)
BN_EPSILON = 1e-3


class Condition(NamedTuple):
    """What a conditional norm may read.

    Attributes:
      z: (B, Z) float latents (StyleGAN: the mapped w), or None.
      labels: (B,) int class labels in [0, K), or None.
    """

    z: Array | None = None
    labels: Array | None = None


def _require(condition: Condition | None, field: str, norm: str) -> Array:
    value = None if condition is None else getattr(condition, field)
    if value is None:
        raise ValueError(f"the {norm} norm needs condition.{field}; got none")
    return value


def _broadcast(params: Array, x: Array) -> Array:
    """(B, C) per-sample parameters → (B, 1, ..., 1, C) against x (B, ..., C)."""
    return params.reshape(params.shape[0], *([1] * (x.ndim - 2)), params.shape[-1])


def _plain_batch_norm(use_running_average: bool, x: Array) -> Array:
    """Batch norm without γ and β (Keras defaults), a `BatchNorm_0` child."""
    return nn.BatchNorm(use_running_average=use_running_average, momentum=BN_MOMENTUM,
                        epsilon=BN_EPSILON, use_scale=False, use_bias=False)(x)


class BatchNorm(nn.BatchNorm):
    """flax's BatchNorm with Keras's momentum and ε that ignores the condition.

    The same parameters (`scale`, `bias`) and moving statistics as
    ``nn.BatchNorm(momentum=0.99, epsilon=1e-3)``.
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON

    def __call__(self, x: Array, condition: Condition | None = None) -> Array:
        """(B, ..., C) → (B, ..., C)."""
        return super().__call__(x)


class NoNorm(nn.Module):
    """The identity: a generator without normalisation."""

    use_running_average: bool = False

    def __call__(self, x: Array, condition: Condition | None = None) -> Array:
        """Returns x unchanged."""
        return x


class LayerNorm(nn.Module):
    """Per-sample statistics over every axis but the batch, per-channel γ and β.

    y = γ·(x − μ_b)/√(σ²_b + ε) + β with μ_b, σ²_b over (H, W, C) of sample b (the
    WGAN-GP ResNet's choice for the post's "replace BN by LayerNorm").

    Attributes:
      use_running_average: unused (no moving statistics); kept for the common interface.
      epsilon: added to the variance.
    """

    use_running_average: bool = False
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, condition: Condition | None = None) -> Array:
        """(B, ..., C) → (B, ..., C)."""
        return nn.LayerNorm(epsilon=self.epsilon,
                            reduction_axes=tuple(range(1, x.ndim)), feature_axes=-1)(x)


class ConditionalBatchNorm(nn.Module):
    """Class-conditional BN (de Vries et al. 2017): BN without affine, then γ(y)·x̂ + β(y).

    γ and β are rows of two (K, C) tables, initialised at 1 and 0 (the post: γ ≈ 1, β ≈ 0
    for stability), so at initialisation this is plain BN for every class.

    Attributes:
      use_running_average: moving averages instead of batch statistics.
      num_classes: K ≥ 1.
    """

    use_running_average: bool = False
    num_classes: int = 1

    @nn.compact
    def __call__(self, x: Array, condition: Condition | None = None) -> Array:
        """x (B, ..., C) and condition.labels (B,) → (B, ..., C)."""
        labels = _require(condition, "labels", "conditional_bn")
        features = x.shape[-1]
        normalized = _plain_batch_norm(self.use_running_average, x)
        gamma = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.ones,
                         name="gamma")(labels)                       # [B, C]
        beta = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros,
                        name="beta")(labels)                         # [B, C]
        return (normalized * _broadcast(gamma, x).astype(x.dtype)
                + _broadcast(beta, x).astype(x.dtype))


class _TwoLayerMlp(nn.Module):
    """Dense(hidden) → ReLU → Dense(features): SELF-MOD's γ(z) or β(z)."""

    hidden: int
    features: int
    head_init: nn.initializers.Initializer

    @nn.compact
    def __call__(self, z: Array) -> Array:
        h = nn.relu(nn.Dense(self.hidden)(z))
        return nn.Dense(self.features, kernel_init=self.head_init)(h)


class SelfModulatedBatchNorm(nn.Module):
    """SELF-MOD (Chen et al., ICLR 2019): BN(x; no affine) ⊙ (1 + γ(z)) + β(z).

    γ and β are separate two-layer MLPs of z per layer (the author's
    `SelfModulatedBatchNormalization` in bojone/o-gan: hidden width z_dim = 128; the paper's
    official code uses 32). With zero-initialised output layers it equals plain BN.

    Attributes:
      use_running_average: moving averages instead of batch statistics.
      hidden: the MLPs' hidden width.
      head_init: kernel initializer of the MLPs' output layers (Keras's Glorot).
    """

    use_running_average: bool = False
    hidden: int = 128
    head_init: nn.initializers.Initializer = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, x: Array, condition: Condition | None = None) -> Array:
        """x (B, ..., C) and condition.z (B, Z) → (B, ..., C)."""
        z = _require(condition, "z", "self_mod").astype(x.dtype)
        features = x.shape[-1]
        normalized = _plain_batch_norm(self.use_running_average, x)
        gamma = _TwoLayerMlp(self.hidden, features, self.head_init, name="gamma")(z)
        beta = _TwoLayerMlp(self.hidden, features, self.head_init, name="beta")(z)
        return normalized * (1.0 + _broadcast(gamma, x)) + _broadcast(beta, x)


class AdaptiveInstanceNorm(nn.Module):
    """AdaIN (Huang & Belongie 2017; StyleGAN): per-sample statistics, affine from z.

    y = (1 + γ(z))·(x − μ_{b,c})/√(σ²_{b,c} + ε) + β(z), with μ, σ² over (H, W) of each
    sample and channel (over the features of a (B, F) input), γ and β per-layer affine maps
    of z (StyleGAN's "A" blocks). No moving averages: training and evaluation agree.

    Attributes:
      use_running_average: unused (per-sample statistics); kept for the common interface.
      epsilon: added to the variance.
      head_init: kernel initializer of the affine maps.
    """

    use_running_average: bool = False
    epsilon: float = 1e-5
    head_init: nn.initializers.Initializer = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, x: Array, condition: Condition | None = None) -> Array:
        """x (B, ..., C) and condition.z (B, Z) → (B, ..., C)."""
        z = _require(condition, "z", "adain").astype(x.dtype)
        axes = tuple(range(1, x.ndim - 1)) or (1,)
        statistics = x.astype(jnp.float32)
        mean = jnp.mean(statistics, axis=axes, keepdims=True)
        variance = jnp.var(statistics, axis=axes, keepdims=True)
        normalized = ((statistics - mean) * jax.lax.rsqrt(variance + self.epsilon)
                      ).astype(x.dtype)
        features = x.shape[-1]
        gamma = nn.Dense(features, kernel_init=self.head_init, name="gamma")(z)
        beta = nn.Dense(features, kernel_init=self.head_init, name="beta")(z)
        return normalized * (1.0 + _broadcast(gamma, x)) + _broadcast(beta, x)


NORMS: dict[str, Callable[..., nn.Module]] = {
    "bn": BatchNorm,
    "none": NoNorm,
    "layer_norm": LayerNorm,
    "conditional_bn": ConditionalBatchNorm,
    "self_mod": SelfModulatedBatchNorm,
    "adain": AdaptiveInstanceNorm,
}
# Norms whose output depends on the latent: a trunk without a latent input (StyleGAN's
# learned constant) needs one of these, or every sample would be the same image.
LATENT_NORMS = ("self_mod", "adain")
LABEL_NORMS = ("conditional_bn",)


def norm_factory(name: str, *, num_classes: int = 0, self_mod_hidden: int = 128
                 ) -> Callable[..., nn.Module]:
    """`NORMS[name]` with its settings bound: called as ``factory(use_running_average=...)``.

    Args:
      name: a key of `NORMS`.
      num_classes: K for "conditional_bn" (≥ 1 there).
      self_mod_hidden: the MLPs' hidden width for "self_mod".

    Raises:
      ValueError: an unknown name, or "conditional_bn" without classes.
    """
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; valid: {tuple(NORMS)}")
    settings = {}
    if name == "conditional_bn":
        if num_classes < 1:
            raise ValueError("conditional_bn needs num_classes >= 1 (labelled data)")
        settings["num_classes"] = num_classes
    elif name == "self_mod":
        settings["hidden"] = self_mod_hidden

    def factory(use_running_average: bool = False) -> nn.Module:
        return NORMS[name](use_running_average=use_running_average, **settings)

    return factory


# ----------------------------------------------------------------------------------------
# SAGAN self-attention (Zhang et al. 2019), one block at one resolution.


class SelfAttention(nn.Module):
    """x + γ·Conv1×1(attention(q, k, v)) over the H·W positions in raster order (SAGAN).

    q, k: 1×1 convs to max(1, C/8) channels, v: to max(1, C/2), one head; γ starts at 0, so
    the block is the identity at initialisation. The attention runs through
    `kernels.attention.attention` with any of its patterns (`Full()` is SAGAN's; `Local(r)`
    reaches r positions either side in raster order, `Atrous(r)` every r-th position).

    Attributes:
      pattern: a `kernels.attention` pattern.
      implementation: passed to `kernels.attention.attention` ("auto": the CPU kernel where
        it takes the arrays, XLA elsewhere).
    """

    pattern: attention_lib.Pattern = attention_lib.Full()
    implementation: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """(B, H, W, C) → (B, H, W, C)."""
        batch, height, width, channels = x.shape
        key_dim, value_dim = max(1, channels // 8), max(1, channels // 2)

        def project(features, name):
            y = nn.Dense(features, use_bias=False, name=name)(x)      # a 1×1 conv
            return y.reshape(batch, height * width, 1, features)       # [B, N, 1, F]

        out = attention_lib.attention(project(key_dim, "query"), project(key_dim, "key"),
                                      project(value_dim, "value"), self.pattern,
                                      implementation=self.implementation)
        out = nn.Dense(channels, use_bias=False, name="out")(
            out.reshape(batch, height, width, value_dim))
        gamma = self.param("gamma", nn.initializers.zeros_init(), ())
        return x + gamma.astype(x.dtype) * out


def projection_score(features: Array, labels: Array | None, num_classes: int) -> Array:
    """The projection discriminator's class term ⟨embed(y), φ(x)⟩ (Miyato & Koyama 2018).

    Must be called inside a compact method (adds an `Embed` child named "class_embedding").

    Args:
      features: (B, F) pooled critic features φ(x).
      labels: (B,) int labels.
      num_classes: K.

    Returns:
      (B,) float, added to the unconditional score.
    """
    if labels is None:
        raise ValueError(f"a class-conditional critic ({num_classes} classes) needs labels")
    embedding = nn.Embed(num_classes, features.shape[-1], name="class_embedding")(labels)
    return jnp.sum(embedding.astype(features.dtype) * features, axis=-1)
