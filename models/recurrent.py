"""Recurrent layers with Keras's semantics (GRU, LSTM) and a mask-aware bidirectional wrapper.

Glossary of shapes: B batch, T time steps, F input features, H units.

Both layers follow the Keras 2.x cuDNN layers the seeds use (docs/index.md §2 item 2): a
``kernel`` (F, gH) Glorot-uniform, a ``recurrent_kernel`` (H, gH) orthogonal on the whole
matrix (orthonormal rows, as Keras's `Orthogonal` gives for that shape), and two bias vectors
``input_bias`` and ``recurrent_bias`` (gH,) (Keras keeps them as one (2gH,) vector, input half
first), with g = 3 gates for the GRU and 4 for the LSTM. The input projection of all time
steps is one (B·T, F) @ (F, gH) matmul; only the (B, H) @ (H, gH) recurrent part runs inside
`jax.lax.scan`. An optional ``mask`` (B, T) carries the state over masked steps unchanged.

**GRU** (`CuDNNGRU`). The seed's sentence encoder (docs/sentence_similarity.md §2) is a
Keras 2.x `CuDNNGRU(128)`. `GRU` reproduces what that layer computes and how it is
initialised:

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

**LSTM** (`CuDNNLSTM`). The seq2seq headline model (post: https://kexue.fm/archives/6877)
and the entity-linking model (https://kexue.fm/archives/6919) stack Keras 2.x `CuDNNLSTM`
layers, bidirectional in their encoders. `LSTM` reproduces what that layer computes and how
it is initialised:

- gate order in every (…, 4H) array: input i, forget f, cell candidate c, output o
  (Keras's order; PyTorch's `nn.LSTM` uses the same one, calling c "g");
- ``kernel`` (F, 4H) Glorot-uniform, ``recurrent_kernel`` (H, 4H) orthogonal on the whole
  (H, 4H) matrix, two bias vectors ``input_bias`` (4H,) zeros and ``recurrent_bias`` (4H,)
  zeros except ones on the forget gate: `CuDNNLSTM`'s ``unit_forget_bias=True`` puts the 1
  in the recurrent half of its (8H,) bias, so the summed forget bias starts at 1 as in
  Keras's `LSTM(unit_forget_bias=True)`;
- sigmoid gates (not Keras `LSTM`'s old ``hard_sigmoid`` default: `CuDNNLSTM` has none):

      i  = σ(x W_i + b_i + h U_i + c_i)        f = σ(x W_f + b_f + h U_f + c_f)
      c̃  = tanh(x W_c + b_c + h U_c + c_c)     o = σ(x W_o + b_o + h U_o + c_o)
      c' = f ⊙ c + i ⊙ c̃                       h' = o ⊙ tanh(c')

- an optional ``mask`` (the Keras layer has none): a masked step carries (h, c) over
  unchanged and outputs zeros, so padded positions of the output sequence are zero.

`Bidirectional` runs either layer forward and backward. The backward pass reverses only the
true length of each sequence, as the posts' code does (https://kexue.fm/archives/6877): the
reverse of [a b c PAD PAD] is [c b a PAD PAD], so the backward layer sees the real tokens
first and the padding, masked, last. A plain reverse of the padded array would instead feed
the padding first and shift every real step.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = nn.initializers.Initializer

GRU_GATE_ORDER = ("update", "reset", "candidate")
LSTM_GATE_ORDER = ("input", "forget", "cell", "output")


def _check_inputs(inputs: Array, mask: Array | None) -> None:
    if inputs.ndim != 3:
        raise ValueError(f"inputs must be (batch, time, features), got shape {inputs.shape}")
    if mask is not None and mask.shape != inputs.shape[:2]:
        raise ValueError(
            f"mask must have shape {inputs.shape[:2]} (batch, time), got {mask.shape}")


def _project_inputs(module: nn.Module, inputs: Array, gates: int, kernel_init: Initializer,
                    recurrent_init: Initializer, input_bias_init: Initializer,
                    recurrent_bias_init: Initializer) -> tuple[Array, Array, Array]:
    """Declares a Keras recurrent layer's four parameters and projects every time step.

    Called from the layer's compact ``__call__``; ``module`` has ``units``, ``dtype`` and
    ``param_dtype``.

    Args:
      module: the layer.
      inputs: (B, T, F).
      gates: g, the gate blocks of the (…, gH) arrays.

    Returns:
      (projected (T, B, gH) = x_t W + b time-major, recurrent_kernel (H, gH),
      recurrent_bias (gH,)), all in the computation dtype.
    """
    width = gates * module.units
    kernel = module.param("kernel", kernel_init, (inputs.shape[-1], width), module.param_dtype)
    recurrent_kernel = module.param(
        "recurrent_kernel", recurrent_init, (module.units, width), module.param_dtype)
    input_bias = module.param("input_bias", input_bias_init, (width,), module.param_dtype)
    recurrent_bias = module.param(
        "recurrent_bias", recurrent_bias_init, (width,), module.param_dtype)
    inputs, kernel, recurrent_kernel, input_bias, recurrent_bias = nn.dtypes.promote_dtype(
        inputs, kernel, recurrent_kernel, input_bias, recurrent_bias, dtype=module.dtype)
    # All time steps in one matmul, written straight into time-major layout.
    projected = jnp.einsum("btf,fg->tbg", inputs, kernel) + input_bias
    return projected, recurrent_kernel, recurrent_bias


# ------------------------------------------------------------------------------------------
# GRU.


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
        _check_inputs(inputs, mask)
        batch, units = inputs.shape[0], self.units
        if initial_state is not None and initial_state.shape != (batch, units):
            raise ValueError(
                f"initial_state must have shape {(batch, units)}, "
                f"got {initial_state.shape}"
            )
        projected, recurrent_kernel, recurrent_bias = _project_inputs(
            self, inputs, 3, self.kernel_init, self.recurrent_init, self.bias_init,
            self.bias_init)
        if initial_state is None:
            initial_state = jnp.zeros((batch, units), projected.dtype)

        time_major_mask = None if mask is None else jnp.swapaxes(mask, 0, 1)
        outputs, final_state = gru_recurrence(
            projected,
            recurrent_kernel,
            recurrent_bias,
            initial_state.astype(projected.dtype),
            time_major_mask,
            return_sequences=self.return_sequences,
            unroll=self.unroll,
        )
        if not self.return_sequences:
            return None, final_state
        return jnp.swapaxes(outputs, 0, 1), final_state


# ------------------------------------------------------------------------------------------
# LSTM.


class LSTMState(NamedTuple):
    """The LSTM's carried state, in Keras's ``return_state`` order (h, c); each (B, H)."""

    hidden: Array
    cell: Array


def unit_forget_bias_init(key, shape, dtype=jnp.float32) -> Array:
    """(4H,) zeros with ones on the forget-gate block (Keras's ``unit_forget_bias``)."""
    del key
    units = shape[0] // 4
    return jnp.zeros(shape, dtype).at[units:2 * units].set(1.0)


def lstm_recurrence(
    projected_inputs: Array,
    recurrent_kernel: Array,
    recurrent_bias: Array,
    initial_state: LSTMState,
    mask: Array | None = None,
    *,
    return_sequences: bool = True,
    unroll: int = 1,
) -> tuple[Array | None, LSTMState]:
    """Runs the LSTM recurrence over pre-projected, time-major inputs.

    Args:
      projected_inputs: (T, B, 4H) float, x_t W + b for every step, gates (i, f, c, o).
      recurrent_kernel: (H, 4H) float, U, gates (i, f, c, o).
      recurrent_bias: (4H,) float, the recurrent bias.
      initial_state: `LSTMState` of two (B, H) floats, (h_0, c_0).
      mask: optional (T, B) bool; where False the state is carried over unchanged and the
        output is zero.
      return_sequences: whether to stack the output h of every step.
      unroll: steps per `lax.scan` iteration (a speed knob only).

    Returns:
      ``(outputs, final_state)``: the (T, B, H) outputs of every step (None unless
      ``return_sequences``) and the `LSTMState` after the last step.
    """

    def step(state, inputs):
        x_t, keep_t = inputs
        gates = x_t + state.hidden @ recurrent_kernel + recurrent_bias  # [B, 4H]
        input_gate, forget_gate, candidate, output_gate = jnp.split(gates, 4, axis=-1)
        cell = (jax.nn.sigmoid(forget_gate) * state.cell
                + jax.nn.sigmoid(input_gate) * jnp.tanh(candidate))
        hidden = jax.nn.sigmoid(output_gate) * jnp.tanh(cell)
        output = hidden
        if keep_t is not None:
            keep = keep_t[:, None]
            hidden = jnp.where(keep, hidden, state.hidden)
            cell = jnp.where(keep, cell, state.cell)
            output = jnp.where(keep, output, 0.0)
        return LSTMState(hidden, cell), (output if return_sequences else None)

    final_state, outputs = jax.lax.scan(
        step, initial_state, (projected_inputs, mask), unroll=unroll
    )
    return outputs, final_state


class LSTM(nn.Module):
    """Keras `CuDNNLSTM`: gates (i, f, c, o), two biases, forget bias 1, orthogonal U.

    Attributes:
      units: H, the state size.
      return_sequences: whether to also return the (B, T, H) outputs of every step.
      kernel_init: init of the (F, 4H) input kernel (Keras: Glorot-uniform).
      recurrent_init: init of the (H, 4H) recurrent kernel (Keras: orthogonal on the whole
        matrix, so its rows are orthonormal).
      input_bias_init: init of the (4H,) input bias (Keras: zeros).
      recurrent_bias_init: init of the (4H,) recurrent bias (Keras: zeros with ones on the
        forget gate).
      dtype: computation dtype (None: from the inputs and params).
      param_dtype: dtype of the parameters.
      unroll: time steps per `lax.scan` iteration; changes speed, not results.
    """

    units: int
    return_sequences: bool = False
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    recurrent_init: Initializer = nn.initializers.orthogonal()
    input_bias_init: Initializer = nn.initializers.zeros_init()
    recurrent_bias_init: Initializer = unit_forget_bias_init
    dtype: Any = None
    param_dtype: Any = jnp.float32
    unroll: int = 1

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        *,
        initial_state: LSTMState | None = None,
        mask: Array | None = None,
    ) -> tuple[Array | None, LSTMState]:
        """Runs the LSTM over a batch of sequences.

        Args:
          inputs: (B, T, F) float.
          initial_state: optional `LSTMState` (h_0, c_0), each (B, H); zeros by default (as
            Keras). Feeding back a returned state runs a sequence piece by piece, one step
            at a time in a decoder.
          mask: optional (B, T) bool; False steps leave the state unchanged and output 0.

        Returns:
          ``(outputs, final_state)``: outputs is (B, T, H) when ``return_sequences`` and
          None otherwise; final_state is the `LSTMState` after the last step.

        Raises:
          ValueError: if the shapes of the arguments do not fit together.
        """
        _check_inputs(inputs, mask)
        batch, units = inputs.shape[0], self.units
        if initial_state is not None and (
            len(initial_state) != 2
            or any(jnp.shape(x) != (batch, units) for x in initial_state)
        ):
            raise ValueError(
                f"initial_state must be an LSTMState of two {(batch, units)} arrays, got "
                f"shapes {[jnp.shape(x) for x in initial_state]}"
            )
        projected, recurrent_kernel, recurrent_bias = _project_inputs(
            self, inputs, 4, self.kernel_init, self.recurrent_init, self.input_bias_init,
            self.recurrent_bias_init)
        if initial_state is None:
            zeros = jnp.zeros((batch, units), projected.dtype)
            initial_state = LSTMState(zeros, zeros)
        initial_state = LSTMState(*(jnp.asarray(x, projected.dtype) for x in initial_state))

        time_major_mask = None if mask is None else jnp.swapaxes(mask, 0, 1)
        outputs, final_state = lstm_recurrence(
            projected,
            recurrent_kernel,
            recurrent_bias,
            initial_state,
            time_major_mask,
            return_sequences=self.return_sequences,
            unroll=self.unroll,
        )
        if not self.return_sequences:
            return None, final_state
        return jnp.swapaxes(outputs, 0, 1), final_state


# ------------------------------------------------------------------------------------------
# Bidirectional.


def reverse_valid_steps(x: Array, lengths: Array) -> Array:
    """Reverses the first ``lengths[b]`` steps of each sequence, leaving the rest in place.

    Its own inverse: [a b c PAD PAD] with length 3 becomes [c b a PAD PAD] and back.

    Args:
      x: (B, T, ...) array.
      lengths: (B,) int, each in [0, T].

    Returns:
      (B, T, ...) array, ``out[b, t] = x[b, lengths[b] − 1 − t]`` for t < lengths[b] and
      ``x[b, t]`` otherwise.
    """
    steps = jnp.arange(x.shape[1])[None, :]  # [1, T]
    lengths = lengths[:, None]
    source = jnp.where(steps < lengths, lengths - 1 - steps, steps)  # [B, T]
    source = source.reshape(source.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, source, axis=1)


MERGE_MODES = {
    "concat": lambda forward, backward: jnp.concatenate([forward, backward], axis=-1),
    "sum": lambda forward, backward: forward + backward,
}


class Bidirectional(nn.Module):
    """Runs a recurrent layer forward and, on the true-length reversal, backward.

    ``layer`` is any module called as ``layer(inputs, *, initial_state=None, mask=None)`` ->
    ``(outputs, final_state)`` that returns sequences (`LSTM` or `GRU` with
    ``return_sequences=True``). Two copies of it, named ``forward`` and ``backward``, hold
    separate weights. The backward copy reads each sequence's first ``length`` steps in
    reverse order, padding still at the end (`reverse_valid_steps`), and its outputs are
    reversed back, so position t of both halves belongs to input step t. Outputs at padded
    steps are zero in both halves, whatever the layer itself puts there.

    Attributes:
      layer: the recurrent layer to run in both directions (a template: it is copied).
      merge: how the two (B, T, H) output sequences are combined, one of `MERGE_MODES`:
        "concat" (B, T, 2H), forward half first, as Keras's default; "sum" (B, T, H).
    """

    layer: nn.Module
    merge: str = "concat"

    @nn.compact
    def __call__(self, inputs: Array, *, mask: Array | None = None) -> tuple[Array, tuple]:
        """Runs both directions over a batch of right-padded sequences.

        Args:
          inputs: (B, T, F) float.
          mask: optional (B, T) bool, True on each sequence's first ``length`` steps and
            False on the padding after them (right padding; a mask with holes is not a
            set of lengths and is not supported).

        Returns:
          ``(outputs, (forward_state, backward_state))``: the merged (B, T, 2H) or (B, T, H)
          outputs, zero at padded steps, and each direction's final state (the forward one
          after the last real step, the backward one after the first).

        Raises:
          ValueError: on an unknown ``merge`` or a mask whose shape is not (B, T).
        """
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {tuple(MERGE_MODES)}, got {self.merge!r}")
        if mask is not None and mask.shape != inputs.shape[:2]:
            raise ValueError(
                f"mask must have shape {inputs.shape[:2]} (batch, time), got {mask.shape}"
            )
        if not getattr(self.layer, "return_sequences", True):
            raise ValueError("Bidirectional needs a layer with return_sequences=True")
        forward_layer = self.layer.copy(name="forward")
        backward_layer = self.layer.copy(name="backward")
        if mask is None:
            lengths = jnp.full(inputs.shape[:1], inputs.shape[1])
        else:
            mask = jnp.asarray(mask, bool)
            lengths = jnp.sum(mask, axis=1)

        forward, forward_state = forward_layer(inputs, mask=mask)
        backward, backward_state = backward_layer(
            reverse_valid_steps(inputs, lengths), mask=mask
        )
        backward = reverse_valid_steps(backward, lengths)
        if mask is not None:
            valid = mask[:, :, None]
            forward = jnp.where(valid, forward, 0.0)
            backward = jnp.where(valid, backward, 0.0)
        return MERGE_MODES[self.merge](forward, backward), (forward_state, backward_state)
