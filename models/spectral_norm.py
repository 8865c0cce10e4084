"""Spectral normalisation for the WGAN-SN critic (docs/wgan_div.md §3.3, `wgan_sn_celeba.py`).

Glossary of shapes: B batch, C channels or features.

Matrices (conv and dense kernels) use flax's own `nn.SpectralNorm` wrapper, which is the
SN-GAN recipe (Miyato et al. 2018): the kernel is reshaped to (prod(shape[:-1]), C), a
right singular vector estimate ``u`` (1, C) persists in the ``batch_stats`` collection
(initialised from N(0, I) with the ``params`` rng), each training call runs
``n_steps`` power iterations from it, divides the kernel by σ = v W uᵀ and, with
``update_stats=True``, stores the new ``u`` and ``sigma``. Gradients do not flow through
``u`` and ``v``. Vectors (biases, BatchNorm scales) are left alone by flax.

The seed differs in two ways, named here as departures and what we keep of them:

- it restarts 5 power iterations from a ones vector on every call and lets gradients
  flow through the iteration; we keep ``u`` between calls, so one iteration per call
  tracks σ at least as closely once the first few calls are past (`sn_power_iterations`
  on the modules sets the count);
- it also "spectrally normalises" the critic's BatchNorm γ. For a vector the seed's
  power iteration (on γ as a 1×C matrix) returns exactly ‖γ‖₂, so that constraint is
  γ / ‖γ‖₂, a reparameterisation with gradients through the norm. Flax's wrapper skips
  vectors, hence `UnitNormScaleBatchNorm` below.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# K.l2_normalize's floor on the squared norm (Keras 2.2.4), used by the seed's power step.
_SQUARED_NORM_FLOOR = 1e-12


class UnitNormScaleBatchNorm(nn.Module):
    """BatchNorm over the last axis whose scale γ is divided by its L2 norm.

    y = γ/‖γ‖₂ · (x − μ)/√(σ² + ε) + β, with μ, σ² the batch statistics in training
    (`use_running_average=False`) and the moving averages otherwise. This is the seed's
    spectral normalisation of BN's γ (docs/wgan_div.md §3.3), under Keras's BN defaults
    (docs/index.md §2 item 3).
    Note that with γ initialised to ones the effective scale starts at 1/√C.

    Drop-in for `functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1e-3)` as the
    ``norm`` field of `models.dcgan.Critic`: parameters ``scale`` and ``bias`` (C,),
    moving statistics in ``batch_stats`` under a ``BatchNorm_0`` child.

    Attributes:
      use_running_average: normalise with the moving averages instead of the batch.
      momentum: moving-average decay (Keras 0.99: new = 0.99·old + 0.01·batch).
      epsilon: added to the variance (Keras 1e-3).
    """

    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Normalises x: (..., C) float → (..., C)."""
        features = x.shape[-1]
        normalized = nn.BatchNorm(
            use_running_average=self.use_running_average,
            momentum=self.momentum,
            epsilon=self.epsilon,
            use_scale=False,
            use_bias=False,
        )(x)
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        norm = jnp.sqrt(jnp.maximum(jnp.sum(scale**2), _SQUARED_NORM_FLOOR))
        return normalized * (scale / norm) + bias


def spectrally_normalized_call(
    layer: nn.Module, x: Array, *, n_steps: int, update_stats: bool
) -> Array:
    """Applies ``layer`` to ``x`` with its kernel divided by its top singular value.

    Must be called inside a compact method; the wrapper becomes a ``SpectralNorm_i``
    child whose ``batch_stats`` hold ``{layer name}/kernel/u`` (1, C) and ``…/sigma`` ().
    The layer's own parameters stay where they would be without the wrapper.

    Args:
      layer: an unbound flax layer with a matrix or higher-rank ``kernel``.
      x: the layer's input.
      n_steps: power iterations per call (≥ 1).
      update_stats: store the new ``u`` and ``sigma`` (training) or leave them (eval).

    Returns:
      The layer's output under the normalised kernel.
    """
    return nn.SpectralNorm(layer, n_steps=n_steps)(x, update_stats=update_stats)
