"""MLP generator and critic for the 2-D mixture-of-Gaussians benchmark.

The benchmark and the nets: docs/wgan_div.md §3.4 and §5.1.

Glossary of shapes: B batch, Z latent size, D data dimension (2).

Both nets follow the toy setup of the WGAN-GP paper (Gulrajani et al. 2017, its public
`gan_toy.py`), the common reference for 8-Gaussians / 25-Gaussians mode-collapse plots:
three hidden ReLU layers of 512 units, a linear output, no normalisation, z ∈ R² ∼ N(0, I),
hidden kernels He-uniform (U(±√(6/fan_in))), the output kernel Glorot-uniform, biases zero.

The critic can be spectrally normalised (every dense layer wrapped in flax's
`SpectralNorm`, state in ``batch_stats``) so that the WGAN-SN preset runs on the same
benchmark; `train` then decides whether the power-iteration state is updated. The
generator takes `train` only so both families share one call signature.
"""

import flax.linen as nn
import jax

from models import spectral_norm as sn

Array = jax.Array
Initializer = nn.initializers.Initializer

HIDDEN_INIT = nn.initializers.he_uniform()
OUTPUT_INIT = nn.initializers.glorot_uniform()


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


class MLPGenerator(nn.Module):
    """z (B, Z) → points (B, D): num_hidden × [Dense(width) → ReLU] → Dense(D).

    Attributes:
      z_dim: latent size Z (2 in `gan_toy.py`).
      data_dim: output dimension D (2).
      width: hidden units per layer (512).
      num_hidden: hidden layers (3).
      hidden_init, output_init: kernel initializers.
    """

    z_dim: int = 2
    data_dim: int = 2
    width: int = 512
    num_hidden: int = 3
    hidden_init: Initializer = HIDDEN_INIT
    output_init: Initializer = OUTPUT_INIT

    def __post_init__(self):
        for name in ("z_dim", "data_dim", "width", "num_hidden"):
            _check_positive(name, getattr(self, name))
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool = False) -> Array:
        """Maps latents to points.

        Args:
          z: (B, Z) float latents.
          train: unused (no normalisation); accepted for a uniform signature.

        Returns:
          (B, D) float points.
        """
        del train
        if z.ndim != 2 or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (batch, z_dim={self.z_dim}), got {z.shape}")
        h = z
        for _ in range(self.num_hidden):
            h = nn.relu(nn.Dense(self.width, kernel_init=self.hidden_init)(h))
        return nn.Dense(self.data_dim, kernel_init=self.output_init)(h)


class MLPCritic(nn.Module):
    """Points (B, D) → scores (B,): num_hidden × [Dense(width) → ReLU] → Dense(1).

    Attributes:
      data_dim: input dimension D (2).
      width: hidden units per layer (512).
      num_hidden: hidden layers (3).
      hidden_init, output_init: kernel initializers.
      spectral_norm: wrap every dense layer in flax's `SpectralNorm` (WGAN-SN).
      sn_power_iterations: power iterations per call from the stored ``u`` (≥ 1).
    """

    data_dim: int = 2
    width: int = 512
    num_hidden: int = 3
    hidden_init: Initializer = HIDDEN_INIT
    output_init: Initializer = OUTPUT_INIT
    spectral_norm: bool = False
    sn_power_iterations: int = 1

    def __post_init__(self):
        for name in ("data_dim", "width", "num_hidden", "sn_power_iterations"):
            _check_positive(name, getattr(self, name))
        super().__post_init__()

    def _linear(self, layer: nn.Module, x: Array, train: bool) -> Array:
        if not self.spectral_norm:
            return layer(x)
        return sn.spectrally_normalized_call(
            layer, x, n_steps=self.sn_power_iterations, update_stats=train
        )

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """Scores points.

        Args:
          x: (B, D) float points.
          train: update the spectral-norm state (only used with ``spectral_norm``).

        Returns:
          (B,) float scores.
        """
        if x.ndim != 2 or x.shape[-1] != self.data_dim:
            raise ValueError(
                f"x must have shape (batch, data_dim={self.data_dim}), got {x.shape}"
            )
        h = x
        for _ in range(self.num_hidden):
            dense = nn.Dense(self.width, kernel_init=self.hidden_init)
            h = nn.relu(self._linear(dense, h, train))
        head = nn.Dense(1, kernel_init=self.output_init)
        return self._linear(head, h, train)[:, 0]
