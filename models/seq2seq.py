"""Seq2seq headline model with two interacting decoders (https://kexue.fm/archives/6877).

Glossary of shapes: B batch, Tx text length, T title length (decoder positions), V vocabulary,
E embedding width, D decoder width (128), H heads (8), Dh head width (16), K beam size,
L the decoding cache length (``max_len``).

The model (docs/headlines.md §2):

* a shared ``Embedding(V, E)`` for the text and both decoders;
* the encoder: LayerNorm → BiLSTM(64 per direction) → LayerNorm → BiLSTM(64), the backward
  halves reversing only each text's true length (`models.recurrent.Bidirectional`); its output
  x (B, Tx, 2·64) is zero at padding and x_max (B, 2·64) is its masked max over time;
* two decoders, left-to-right (L2R) and right-to-left (R2L), each SMLN → LSTM(D) → SMLN →
  LSTM(D) → SMLN, where SMLN is a self-modulated LayerNorm: LN(h) ⊙ (1 + γ(x_max)) + β(x_max)
  with γ, β = Dense(D)(Dense(32, ReLU)(x_max));
* per direction, multi-head attention (Q, K, V projections without bias, no output
  projection, as the post's base attention) to the other direction's states, causal (L2R
  position n reads R2L positions 0…n) — dropped when ``interaction=False``, the unidirectional
  baseline — and to the encoder output x;
* per direction Dense(D) + LeakyReLU(0.2) on concat(y, y′, y_x), then one classifier Dense(V)
  shared by both directions, averaged with the copy prior exp(s) ⊙ χ + t, where χ (B, V)
  marks the characters present in the text and s, t are per-vocabulary vectors starting at 0.

The recurrent state of a decoder depends only on its own prefix, so decoding caches it per
hypothesis (`DecoderCache`); the states a direction exposes to the other one are cached as
the other direction's projected keys and values, one slot per position, so one decoding step
costs one LSTM step per hypothesis plus attention over a fixed-length cache.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.attention import cross_attention
from models.recurrent import LSTM, Bidirectional, LSTMState

Array = jax.Array

DIRECTIONS = ("l2r", "r2l")


class Encoded(NamedTuple):
    """The encoder's output for a batch of texts.

    Attributes:
      x: (B, Tx, 2·encoder_units) float, zero at padding.
      mask: (B, Tx) bool, True on real characters.
      x_max: (B, 2·encoder_units) float, the masked max over time.
      present: (B, V) float, 1 where a vocabulary id occurs in the text (χ of the copy prior).
    """

    x: Array
    mask: Array
    x_max: Array
    present: Array


class DecoderCache(NamedTuple):
    """What one direction carries from one decoding step to the next, per hypothesis.

    Attributes:
      lstm: the two LSTM layers' states, each `LSTMState` of (N, D) arrays.
      keys: (N, L, H, Dh), this direction's states at positions < step, projected to keys
        by the other direction's cross attention.
      values: (N, L, H, Dh), likewise values.
    """

    lstm: tuple
    keys: Array
    values: Array


class SelfModulatedLayerNorm(nn.Module):
    """LN(h) ⊙ (1 + γ(z)) + β(z), γ and β from a two-layer MLP of a summary vector z.

    Attributes:
      hidden_dim: the MLP's hidden width (the post's z_dim // 4 = 32).
      epsilon: added to the variance.
    """

    hidden_dim: int = 32
    epsilon: float = 1e-6
    dtype: Any = None

    @nn.compact
    def __call__(self, h: Array, z: Array) -> Array:
        """h: (B, T, F); z: (B, Z). Returns (B, T, F)."""
        features = h.shape[-1]
        hidden = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="hidden")(z))
        gamma = nn.Dense(features, kernel_init=nn.initializers.zeros_init(), dtype=self.dtype,
                         name="gamma")(hidden)
        beta = nn.Dense(features, kernel_init=nn.initializers.zeros_init(), dtype=self.dtype,
                        name="beta")(hidden)
        mean = jnp.mean(h, axis=-1, keepdims=True)
        variance = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
        normed = (h - mean) * jax.lax.rsqrt(variance + self.epsilon)
        return normed * (1.0 + gamma[:, None, :]) + beta[:, None, :]


class DecoderStack(nn.Module):
    """SMLN → LSTM → SMLN → LSTM → SMLN over embedded decoder inputs."""

    units: int = 128
    modulation_dim: int = 32
    dtype: Any = None

    def setup(self):
        self.norms = [SelfModulatedLayerNorm(self.modulation_dim, dtype=self.dtype)
                      for _ in range(3)]
        self.lstms = [LSTM(self.units, return_sequences=True, dtype=self.dtype)
                      for _ in range(2)]

    def __call__(self, inputs: Array, z: Array, states=None) -> tuple[Array, tuple]:
        """inputs: (B, T, E); z: (B, Z); states: None or two `LSTMState`s of (B, D).

        Returns:
          (y (B, T, D), the two LSTM states after the last step).
        """
        h = inputs
        new_states = []
        for layer, lstm in enumerate(self.lstms):
            h = self.norms[layer](h, z)
            h, state = lstm(h, initial_state=None if states is None else states[layer])
            new_states.append(state)
        return self.norms[2](h, z), tuple(new_states)


class Projections(nn.Module):
    """Q, K, V projections of the post's attention: no bias, no output projection."""

    heads: int = 8
    head_dim: int = 16
    dtype: Any = None

    def setup(self):
        dense = lambda: nn.DenseGeneral((self.heads, self.head_dim), use_bias=False,  # noqa
                                        dtype=self.dtype)
        self.query, self.key, self.value = dense(), dense(), dense()

    def keys_values(self, y: Array) -> tuple[Array, Array]:
        """(B, T, F) → keys and values, each (B, T, H, Dh)."""
        return self.key(y), self.value(y)

    def queries(self, y: Array) -> Array:
        """(B, T, F) → (B, T, H, Dh)."""
        return self.query(y)

    def __call__(self, y: Array, memory: Array) -> Array:  # used only by init
        return cross_attention(self.queries(y), *self.keys_values(memory))


def _merge_heads(x: Array) -> Array:
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))


class HeadlineSeq2Seq(nn.Module):
    """The post's bidirectional-decoder seq2seq (``interaction=True``) or its baseline.

    Attributes:
      vocab_size: V (ids 0 pad, 1 unknown, 2 and 3 the start/end pair, then characters).
      embed_dim: E (128).
      encoder_units: units per direction of each encoder BiLSTM (64).
      decoder_units: D, the decoders' LSTM width (128).
      heads, head_dim: H × Dh of every attention (8 × 16).
      modulation_dim: the SMLN MLP's hidden width (32).
      interaction: whether each decoder attends to the other direction's states; False is
        the unidirectional baseline (two independent decoders sharing encoder and output).
      dtype: computation dtype.
    """

    vocab_size: int
    embed_dim: int = 128
    encoder_units: int = 64
    decoder_units: int = 128
    heads: int = 8
    head_dim: int = 16
    modulation_dim: int = 32
    interaction: bool = True
    dtype: Any = None

    def setup(self):
        keras_uniform = nn.initializers.uniform(0.1)  # U(0, 0.1) shifted below: U(±0.05)
        self.embedding = nn.Embed(
            self.vocab_size, self.embed_dim, dtype=self.dtype,
            embedding_init=lambda key, shape, dtype: keras_uniform(key, shape, dtype) - 0.05)
        self.encoder_norms = [nn.LayerNorm(epsilon=1e-6, dtype=self.dtype) for _ in range(2)]
        self.encoder_lstms = [
            Bidirectional(LSTM(self.encoder_units, return_sequences=True, dtype=self.dtype))
            for _ in range(2)]
        make = lambda cls, **kw: {d: cls(**kw, dtype=self.dtype) for d in DIRECTIONS}  # noqa
        self.decoders = make(DecoderStack, units=self.decoder_units,
                             modulation_dim=self.modulation_dim)
        self.text_attention = make(Projections, heads=self.heads, head_dim=self.head_dim)
        if self.interaction:
            self.cross_attention = make(Projections, heads=self.heads, head_dim=self.head_dim)
        self.hidden = {d: nn.Dense(self.decoder_units, dtype=self.dtype) for d in DIRECTIONS}
        self.classifier = nn.Dense(self.vocab_size, dtype=self.dtype)
        self.prior_scale = self.param("prior_scale", nn.initializers.zeros_init(),
                                      (self.vocab_size,))
        self.prior_shift = self.param("prior_shift", nn.initializers.zeros_init(),
                                      (self.vocab_size,))

    # -------------------------------------------------------------------------------------
    # Pieces.

    def encode(self, text_ids: Array) -> Encoded:
        """text_ids: (B, Tx) int, 0-padded on the right. Returns `Encoded`."""
        mask = text_ids != 0
        x = self.embedding(text_ids)
        for norm, bilstm in zip(self.encoder_norms, self.encoder_lstms):
            x, _ = bilstm(norm(x), mask=mask)
        x = x * mask[..., None]
        x_max = jnp.max(jnp.where(mask[..., None], x, -jnp.inf), axis=1)
        x_max = jnp.where(jnp.isfinite(x_max), x_max, 0.0)  # an empty text: zeros
        present = jnp.zeros((text_ids.shape[0], self.vocab_size), jnp.float32)
        present = present.at[jnp.arange(text_ids.shape[0])[:, None], text_ids].max(
            mask.astype(jnp.float32))
        return Encoded(x, mask, x_max, present)

    def run_decoder(self, direction: str, ids: Array, x_max: Array, states=None):
        """ids: (B, T) int → (y (B, T, D), LSTM states) of one direction's stack."""
        return self.decoders[direction](self.embedding(ids), x_max, states)

    def text_keys_values(self, direction: str, encoded: Encoded) -> tuple[Array, Array]:
        """The encoder output projected for one direction: two (B, Tx, H, Dh)."""
        return self.text_attention[direction].keys_values(encoded.x)

    def exposed_keys_values(self, direction: str, y: Array) -> tuple[Array, Array]:
        """States y (.., T, D) of ``direction`` projected for the *other* direction to read."""
        other = DIRECTIONS[1 - DIRECTIONS.index(direction)]
        return self.cross_attention[other].keys_values(y)

    def cross_queries(self, direction: str, y: Array) -> Array:
        return self.cross_attention[direction].queries(y)

    def text_context(self, direction: str, y: Array, text_kv, text_mask: Array) -> Array:
        """y (B, T, D) attending the text: (B, T, H·Dh)."""
        q = self.text_attention[direction].queries(y)
        return _merge_heads(cross_attention(q, *text_kv, key_mask=text_mask))

    def output_log_probs(self, direction: str, features: Array, present: Array) -> Array:
        """features (B, ..., 3D or 2D) → (B, ..., V) float32 log-probabilities.

        ``present`` (B, V) is χ; it is broadcast over the middle axes.
        """
        hidden = nn.leaky_relu(self.hidden[direction](features), 0.2)
        logits = self.classifier(hidden).astype(jnp.float32)
        prior = jnp.exp(self.prior_scale) * present + self.prior_shift  # [B, V]
        prior = prior.reshape(prior.shape[:1] + (1,) * (logits.ndim - 2) + prior.shape[1:])
        return jax.nn.log_softmax((logits + prior) / 2.0, axis=-1)

    # -------------------------------------------------------------------------------------
    # Teacher forcing.

    def __call__(self, text_ids: Array, l2r_ids: Array, r2l_ids: Array, *,
                 l2r_context_ids: Array | None = None,
                 r2l_context_ids: Array | None = None) -> tuple[Array, Array]:
        """Next-token log-probabilities of both directions under teacher forcing.

        Args:
          text_ids: (B, Tx) int.
          l2r_ids: (B, T) int, the L2R decoder inputs ([2] + title, 0-padded).
          r2l_ids: (B, T) int, the R2L decoder inputs ([3] + reversed title, 0-padded).
          l2r_context_ids, r2l_context_ids: (B, T′) int, what the *other* direction reads of
            this one (two-pass training: a first model's pseudo-titles); default: the inputs.

        Returns:
          (l2r_log_probs, r2l_log_probs), each (B, T, V) float32: position n predicts token
          n + 1 of its direction's sequence.
        """
        encoded = self.encode(text_ids)
        ids = {"l2r": l2r_ids, "r2l": r2l_ids}
        context_ids = {"l2r": l2r_context_ids, "r2l": r2l_context_ids}
        states = {d: self.run_decoder(d, ids[d], encoded.x_max)[0] for d in DIRECTIONS}
        exposed = {}
        if self.interaction:
            for d in DIRECTIONS:
                if context_ids[d] is None:
                    y, mask = states[d], ids[d] != 0
                else:
                    y = self.run_decoder(d, context_ids[d], encoded.x_max)[0]
                    mask = context_ids[d] != 0
                exposed[d] = (self.exposed_keys_values(d, y), mask)
        outputs = []
        for d, other in zip(DIRECTIONS, DIRECTIONS[::-1]):
            y = states[d]
            parts = [y]
            if self.interaction:
                (k, v), mask = exposed[other]
                parts.append(_merge_heads(cross_attention(
                    self.cross_queries(d, y), k, v, key_mask=mask, causal_offset=0)))
            parts.append(self.text_context(d, y, self.text_keys_values(d, encoded),
                                           encoded.mask))
            outputs.append(self.output_log_probs(d, jnp.concatenate(parts, -1),
                                                 encoded.present))
        return outputs[0], outputs[1]

    # -------------------------------------------------------------------------------------
    # Incremental decoding.

    def init_cache(self, batch: int, max_len: int) -> DecoderCache:
        """Zero LSTM states and an empty (B, L, H, Dh) key/value cache for one direction."""
        zeros = jnp.zeros((batch, self.decoder_units), jnp.float32)
        kv = jnp.zeros((batch, max_len, self.heads, self.head_dim), jnp.float32)
        return DecoderCache((LSTMState(zeros, zeros), LSTMState(zeros, zeros)), kv, kv)

    def decoder_step(self, direction: str, cache: DecoderCache, tokens: Array, x_max: Array,
                     step: Array) -> tuple[Array, DecoderCache]:
        """One LSTM step of one direction for N hypotheses.

        Args:
          cache: `DecoderCache` with leading axis N.
          tokens: (N,) int, each hypothesis's last token.
          x_max: (N, 2·encoder_units), the text summary per hypothesis.
          step: () int, the position being computed.

        Returns:
          (y (N, D), the cache with the LSTM states advanced and, with interaction, this
          position's keys and values written at ``step``).
        """
        y, lstm = self.run_decoder(direction, tokens[:, None], x_max, cache.lstm)
        keys, values = cache.keys, cache.values
        if self.interaction:
            k, v = self.exposed_keys_values(direction, y)  # [N, 1, H, Dh]
            keys = jax.lax.dynamic_update_slice_in_dim(keys, k.astype(keys.dtype), step, 1)
            values = jax.lax.dynamic_update_slice_in_dim(values, v.astype(values.dtype),
                                                         step, 1)
        return y[:, 0], DecoderCache(lstm, keys, values)

    def pair_log_probs(self, direction: str, y: Array, other: DecoderCache, step: Array,
                       text_kv, encoded: Encoded) -> Array:
        """Next-token log-probs of every (own hypothesis, other hypothesis) pair.

        Args:
          y: (B, K, D), this direction's states at ``step`` for its K hypotheses.
          other: the other direction's cache after its step, leading axis B·K.
          step: () int; keys at positions ≤ step are read.
          text_kv: this direction's projected text, two (B, Tx, H, Dh).
          encoded: `Encoded` with leading axis B.

        Returns:
          (B, K_own, K_other, V) float32 log-probs (interaction=False: (B, K, 1, V)).
        """
        batch, beams, _ = y.shape
        text = self.text_context(direction, y, text_kv, encoded.mask)  # [B, K, HDh]
        if not self.interaction:
            features = jnp.concatenate([y, text], -1)[:, :, None]
            return self.output_log_probs(direction, features, encoded.present)
        q = self.cross_queries(direction, y)  # [B, K_own, H, Dh]
        q = jnp.repeat(q, beams, axis=0)  # [B·K_other, K_own, H, Dh]
        max_len = other.keys.shape[1]
        key_mask = jnp.broadcast_to(jnp.arange(max_len) <= step, (batch * beams, max_len))
        cross = _merge_heads(cross_attention(q, other.keys, other.values, key_mask=key_mask))
        cross = jnp.swapaxes(cross.reshape(batch, beams, beams, -1), 1, 2)  # [B, Ko, Kt, ·]
        expand = lambda a: jnp.broadcast_to(a[:, :, None], cross.shape[:3] + a.shape[-1:])  # noqa
        features = jnp.concatenate([expand(y), cross, expand(text)], -1)
        return self.output_log_probs(direction, features, encoded.present)
