"""A GRU layer with the semantics of Keras's `CuDNNGRU` (docs/index.md §2 item 2).

Glossary of shapes: B batch, T time steps, F input features, H units.

The seed's sentence encoder (docs/sentence_similarity.md §2) is a Keras 2.x `CuDNNGRU(128)`.
This module reproduces what that layer computes and how it is initialised:

- gate order in every (…, 3H) array: update z, reset r, candidate h (Keras's order;
  PyTorch's `nn.GRU` uses r, z, n);
- ``kernel`` (F, 3H) Glorot-uniform, ``recurrent_kernel`` (H, 3H) orthogonal on the whole
  (H, 3H) matrix (orthonormal rows, as Keras's `Orthogonal` gives for that shape), two zero
  bias vectors ``input_bias`` (3H,) and ``recurrent_bias`` (3H,) (Keras keeps them as one
  (6H,) vector, input half first);
- the reset gate multiplies the recurrent matmul *after* it is taken ("reset_after", the
  cuDNN form):

      z  = σ(x W_z + b_z + h U_z + c_z)
      r  = σ(x W_r + b_r + h U_r + c_r)
      h̃  = tanh(x W_h + b_h + r ⊙ (h U_h + c_h))
      h' = z ⊙ h + (1 − z) ⊙ h̃

  which is exactly PyTorch's `nn.GRU` with its (r, z, n) blocks reordered;
- no masking in the seed's layer; an optional ``mask`` here carries the state unchanged
  over masked steps (what a masked Keras RNN does), used for the `masked` final state.

The input projection for all time steps is one (B·T, F) @ (F, 3H) matmul; only the
(B, H) @ (H, 3H) recurrent part runs inside `jax.lax.scan`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = nn.initializers.Initializer

GATE_ORDER = ("update", "reset", "candidate")


def gru_recurrence(
    projected_inputs: Array,
    recurrent_kernel: Array,
    recurrent_bias: Array,
    initial_state: Array,
    mask: Array | None = None,
    *,
    return_sequences: bool = True,
    unroll: int = 1,
) -> tuple[Array | None, Array]:
    """Runs the reset-after GRU recurrence over pre-projected, time-major inputs.

    Args:
      projected_inputs: (T, B, 3H) float, x_t W + b for every step, gates (z, r, h).
      recurrent_kernel: (H, 3H) float, U, gates (z, r, h).
      recurrent_bias: (3H,) float, c.
      initial_state: (B, H) float, h_0.
      mask: optional (T, B) bool; where False the state is carried over unchanged.
      return_sequences: whether to stack the state of every step.
      unroll: steps per `lax.scan` iteration (a speed knob only).

    Returns:
      ``(outputs, final_state)``: the (T, B, H) states after each step (None unless
      ``return_sequences``) and the (B, H) last one.
    """

    def step(state, inputs):
        x_t, keep_t = inputs
        h_proj = state @ recurrent_kernel + recurrent_bias  # [B, 3H]
        x_z, x_r, x_h = jnp.split(x_t, 3, axis=-1)
        h_z, h_r, h_h = jnp.split(h_proj, 3, axis=-1)
        update = jax.nn.sigmoid(x_z + h_z)
        reset = jax.nn.sigmoid(x_r + h_r)
        candidate = jnp.tanh(x_h + reset * h_h)
        new_state = update * state + (1.0 - update) * candidate
        if keep_t is not None:
            new_state = jnp.where(keep_t[:, None], new_state, state)
        return new_state, (new_state if return_sequences else None)

    final_state, outputs = jax.lax.scan(
        step, initial_state, (projected_inputs, mask), unroll=unroll
    )
    return outputs, final_state


class GRU(nn.Module):
    """Keras `CuDNNGRU` (docs/index.md §2): reset-after gates, two biases, orthogonal U.

    Attributes:
      units: H, the state size.
      return_sequences: whether to also return the (B, T, H) states of every step.
      kernel_init: init of the (F, 3H) input kernel (Keras: Glorot-uniform).
      recurrent_init: init of the (H, 3H) recurrent kernel (Keras: orthogonal on the whole
        matrix, so its rows are orthonormal).
      bias_init: init of both (3H,) biases (Keras: zeros).
      dtype: computation dtype (None: from the inputs and params).
      param_dtype: dtype of the parameters.
      unroll: time steps per `lax.scan` iteration; changes speed, not results.
    """

    units: int
    return_sequences: bool = False
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    recurrent_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    unroll: int = 1

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        *,
        initial_state: Array | None = None,
        mask: Array | None = None,
    ) -> tuple[Array | None, Array]:
        """Runs the GRU over a batch of sequences.

        Args:
          inputs: (B, T, F) float.
          initial_state: optional (B, H) float h_0; zeros by default (as Keras).
          mask: optional (B, T) bool; False steps leave the state unchanged.

        Returns:
          ``(outputs, final_state)``: outputs is (B, T, H) when ``return_sequences`` and
          None otherwise; final_state is (B, H), the state after the last step.

        Raises:
          ValueError: if the shapes of the arguments do not fit together.
        """
        if inputs.ndim != 3:
            raise ValueError(
                f"inputs must be (batch, time, features), got shape {inputs.shape}"
            )
        batch, _, features = inputs.shape
        units = self.units
        if initial_state is not None and initial_state.shape != (batch, units):
            raise ValueError(
                f"initial_state must have shape {(batch, units)}, "
                f"got {initial_state.shape}"
            )
        if mask is not None and mask.shape != inputs.shape[:2]:
            raise ValueError(
                f"mask must have shape {inputs.shape[:2]} (batch, time), got {mask.shape}"
            )

        kernel = self.param(
            "kernel", self.kernel_init, (features, 3 * units), self.param_dtype
        )
        recurrent_kernel = self.param(
            "recurrent_kernel", self.recurrent_init, (units, 3 * units), self.param_dtype
        )
        input_bias = self.param("input_bias", self.bias_init, (3 * units,), self.param_dtype)
        recurrent_bias = self.param(
            "recurrent_bias", self.bias_init, (3 * units,), self.param_dtype
        )
        inputs, kernel, recurrent_kernel, input_bias, recurrent_bias = (
            nn.dtypes.promote_dtype(
                inputs, kernel, recurrent_kernel, input_bias, recurrent_bias,
                dtype=self.dtype,
            )
        )
        if initial_state is None:
            initial_state = jnp.zeros((batch, units), inputs.dtype)

        # All time steps in one matmul, written straight into time-major layout.
        projected = jnp.einsum("btf,fg->tbg", inputs, kernel) + input_bias  # [T, B, 3H]
        time_major_mask = None if mask is None else jnp.swapaxes(mask, 0, 1)
        outputs, final_state = gru_recurrence(
            projected,
            recurrent_kernel,
            recurrent_bias,
            initial_state.astype(inputs.dtype),
            time_major_mask,
            return_sequences=self.return_sequences,
            unroll=self.unroll,
        )
        if not self.return_sequences:
            return None, final_state
        return jnp.swapaxes(outputs, 0, 1), final_state
