"""The seed's sentence encoder and its cosine classifier (docs/sentence_similarity.md §2).

Glossary of shapes: B batch, T time steps (maxlen, 32 in the seed), V vocabulary size
(characters + pad + unk), D embedding width, H sentence-vector size, C classes
(paraphrase groups, 90,000 in the seed).

Architecture (the post: https://kexue.fm/archives/5743): ``Embedding(V, 128)`` without
masking → ``CuDNNGRU(128)`` → L2 normalisation; the classifier is ``z @ W`` with W (H, C),
no bias, every column kept at unit norm by a projection after each optimizer update (Keras
``unit_norm(axis=0)``), so its outputs are the cosines cos θ_i = ⟨z, c_i⟩ that the margin
losses take.

Keras defaults reproduced (docs/index.md §2):
  - ``Embedding``: U(−0.05, 0.05); the pad id 0 has its own trainable vector.
  - ``CuDNNGRU``: see `models.recurrent` (Glorot kernel, orthogonal recurrent kernel, two zero
    biases, reset-after gates, zero initial state).
  - ``K.l2_normalize``: x / sqrt(max(Σx², 1e-12)).
  - ``Dense`` kernel: Glorot-uniform (here followed by the unit-norm projection once, so
    that step 0 already yields cosines).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.recurrent import GRU, Bidirectional

Array = jax.Array

FINAL_STATES = ("last_step", "masked")
# How the GRU states become one vector: "final" the final state (`final_state` says which),
# "max" the element-wise maximum over the states at the real characters (ids > 0), the
# max-pooled BiLSTM encoder of InferSent (Conneau et al., arXiv 1705.02364).
POOLINGS = ("final", "max")

# Keras's `K.l2_normalize` epsilon: a floor on the squared norm, so that a zero vector
# maps to zero with a finite gradient instead of 0/0.
L2_NORMALIZE_EPSILON = 1e-12


def keras_uniform(minval: float = -0.05, maxval: float = 0.05) -> nn.initializers.Initializer:
    """Keras's ``RandomUniform`` initializer: U(minval, maxval), docs/index.md §2."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=minval, maxval=maxval)

    return init


def unit_norm_columns(init: nn.initializers.Initializer) -> nn.initializers.Initializer:
    """Wraps an initializer of a (dim, classes) kernel so that every column has norm 1."""

    def wrapped(key, shape, dtype=jnp.float32):
        return l2_normalize(init(key, shape, dtype), axis=0)

    return wrapped


def l2_normalize(x: Array, axis: int = -1) -> Array:
    """x / ‖x‖ along ``axis``, as Keras's ``K.l2_normalize`` (zero stays zero).

    Args:
      x: float array of any shape.
      axis: the axis to normalise over.

    Returns:
      An array of x's shape, in float32 or wider: a unit vector rounded to bfloat16 is
      off by up to 0.4%, enough to push cosines past 1.
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared_norm, L2_NORMALIZE_EPSILON))


class SentenceEncoder(nn.Module):
    """Characters → GRU → unit sentence vector z (docs/sentence_similarity.md §2).

    Attributes:
      vocab_size: V, number of token ids (0 = pad, 1 = unk, 2… = characters;
        docs/sentence_similarity.md §4).
      embed_dim: D, embedding width (seed: 128).
      hidden_dim: H, GRU units and sentence-vector size (seed: 128).
      final_state: ``"last_step"`` (the seed: the state after running over the right
        padding too) or ``"masked"`` (the state at the last real character, ids > 0); see
        docs/sentence_similarity.md §2 item 2 and §7. An all-pad row has the zero initial
        state, which normalises to the zero vector.
      bidirectional: False (the seed): one GRU reading left to right. True: a second GRU
        reads each sentence right to left (`models.recurrent.Bidirectional`, on the true
        length in ``"masked"`` mode) and z is 2H wide: both final states, or both halves
        of every step's state, concatenated (docs/sentence_similarity.md §9).
      pooling: one of `POOLINGS`; ``"final"`` (the seed) or ``"max"`` over the real steps.
      dropout: rate of dropout on the embedded characters while training (the seed: 0,
        none); it needs a "dropout" rng when ``train`` and is off otherwise.
      dtype: computation dtype (None: float32 parameters decide).
      unroll: GRU time steps per scan iteration (speed only).
    """

    vocab_size: int
    embed_dim: int = 128
    hidden_dim: int = 128
    final_state: str = "last_step"
    bidirectional: bool = False
    pooling: str = "final"
    dropout: float = 0.0
    dtype: Any = None
    unroll: int = 1

    @nn.compact
    def __call__(self, token_ids: Array, *, train: bool = False) -> Array:
        """Encodes right-padded token ids.

        Args:
          token_ids: (B, T) int, 0 for padding.
          train: apply dropout (needs the "dropout" rng when ``dropout`` > 0).

        Returns:
          (B, H) float sentence vectors of unit norm, (B, 2H) when ``bidirectional`` (zero
          for an all-pad row in ``"masked"`` mode).

        Raises:
          ValueError: on a bad ``final_state`` or a token_ids array that is not 2-D int.
        """
        if self.final_state not in FINAL_STATES:
            raise ValueError(
                f"final_state must be one of {FINAL_STATES}, got {self.final_state!r}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if token_ids.ndim != 2 or not jnp.issubdtype(token_ids.dtype, jnp.integer):
            raise ValueError(
                "token_ids must be a (batch, time) integer array, got shape "
                f"{token_ids.shape} and dtype {token_ids.dtype}"
            )
        embedded = nn.Embed(
            self.vocab_size,
            self.embed_dim,
            embedding_init=keras_uniform(-0.05, 0.05),
            dtype=self.dtype,
            name="embedding",
        )(token_ids)  # [B, T, D]
        embedded = nn.Dropout(self.dropout)(embedded, deterministic=not train)
        mask = token_ids > 0 if self.final_state == "masked" else None
        sequences = self.bidirectional or self.pooling == "max"
        layer = GRU(self.hidden_dim, return_sequences=sequences, dtype=self.dtype,
                    unroll=self.unroll, name=None if self.bidirectional else "gru")
        if self.bidirectional:
            outputs, (forward, backward) = Bidirectional(layer, name="bigru")(
                embedded, mask=mask
            )  # [B, T, 2H]; final states [B, H] after the last real character and the first
            state = jnp.concatenate([forward, backward], axis=-1)  # [B, 2H]
        else:
            outputs, state = layer(embedded, mask=mask)  # [B, T, H] or None; [B, H]
        if self.pooling == "final":
            return l2_normalize(state)
        return l2_normalize(max_over_real_steps(outputs, token_ids > 0))


def max_over_real_steps(outputs: Array, valid: Array) -> Array:
    """Element-wise maximum of the states at the real steps; zero for a row with none.

    Args:
      outputs: (B, T, F) float states.
      valid: (B, T) bool, True at real characters.

    Returns:
      (B, F) float.
    """
    lowest = jnp.finfo(outputs.dtype).min
    pooled = jnp.max(jnp.where(valid[:, :, None], outputs, lowest), axis=1)  # [B, F]
    return jnp.where(jnp.any(valid, axis=1)[:, None], pooled, 0.0)


class CosineClassifier(nn.Module):
    """z @ W with unit-norm class centres W: the cosines cos θ_i.

    The kernel starts Glorot-uniform with each column rescaled to norm 1. It stays a
    plain parameter; keeping its columns at unit norm after every update is the
    optimizer's job (an optax projection, docs/index.md §2 item 6), as in the seed, so the
    outputs are cosines only while that projection is applied
    (docs/sentence_similarity.md §2 item 4).

    Attributes:
      num_classes: C.
      dtype: computation dtype (None: float32 parameters decide).
    """

    num_classes: int
    dtype: Any = None

    @nn.compact
    def __call__(self, embeddings: Array) -> Array:
        """Cosines between unit sentence vectors and the class centres.

        Args:
          embeddings: (B, H) float, unit-norm sentence vectors.

        Returns:
          (B, C) float cosines.
        """
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (batch, dim), got {embeddings.shape}")
        kernel = self.param(
            "kernel",
            unit_norm_columns(nn.initializers.glorot_uniform()),
            (embeddings.shape[-1], self.num_classes),
        )
        embeddings, kernel = nn.dtypes.promote_dtype(embeddings, kernel, dtype=self.dtype)
        return embeddings @ kernel


class SentenceClassifier(nn.Module):
    """The seed's training model: `SentenceEncoder` then `CosineClassifier`.

    The architecture is docs/sentence_similarity.md §2.

    Attributes:
      vocab_size: V.
      num_classes: C, the number of training groups.
      embed_dim: D (seed: 128).
      hidden_dim: H (seed: 128).
      final_state: see `SentenceEncoder`.
      bidirectional: see `SentenceEncoder`.
      pooling: see `SentenceEncoder`.
      dropout: see `SentenceEncoder`.
      dtype: computation dtype.
      unroll: GRU time steps per scan iteration (speed only).
    """

    vocab_size: int
    num_classes: int
    embed_dim: int = 128
    hidden_dim: int = 128
    final_state: str = "last_step"
    bidirectional: bool = False
    pooling: str = "final"
    dropout: float = 0.0
    dtype: Any = None
    unroll: int = 1

    def setup(self):
        self.encoder = SentenceEncoder(
            self.vocab_size,
            self.embed_dim,
            self.hidden_dim,
            self.final_state,
            self.bidirectional,
            self.pooling,
            self.dropout,
            dtype=self.dtype,
            unroll=self.unroll,
        )
        self.classifier = CosineClassifier(self.num_classes, dtype=self.dtype)

    def encode(self, token_ids: Array, *, train: bool = False) -> Array:
        """(B, T) int token ids → (B, H) unit sentence vectors, (B, 2H) when bidirectional
        (what retrieval keeps); ``train`` applies dropout."""
        return self.encoder(token_ids, train=train)

    def __call__(self, token_ids: Array, *, train: bool = False) -> Array:
        """(B, T) int token ids → (B, C) cosines to every class centre."""
        return self.classifier(self.encoder(token_ids, train=train))
