"""The joint NER + entity-linking model of the CCKS2019 post (https://kexue.fm/archives/6919).

Glossary of shapes: B batch, T query characters, S description characters, W word-vector
dimension, E embedding width, H LSTM units per direction, F linking-feature channels.

One character-level query encoder is shared by two heads:

* embedding: e = Dropout(0.2)(CharEmbed(x) + Dense(E, no bias)(word vector of x's word)),
  the word vectors frozen (they are an input here, never a parameter); the max-match start
  and end indicators are concatenated (E + 2 channels) and Q₀ = BiLSTM(H per direction)(e),
  mask-aware (`models.recurrent.Bidirectional` reverses only each text's true length);
* NER, "half pointer, half tagging": h = Conv1D(128, 3, ReLU, same)(Q₀); p_start =
  σ(Dense(1)(h)) · maxmatch_start, p_end = σ(Dense(1)(h)) · maxmatch_end, so a mention can
  only start and end where max-match put a boundary;
* linking, for one (mention, candidate entity) pair: Q = BiLSTM([Q₀; y]) with the linking
  features y (the mention's span; the character occurs in the candidate's description; the
  character's word occurs in the description's words; the character lies in a match of one
  of the candidate's short objects); m = mean of Q over the span; the description
  D = BiLSTM(Dropout(0.2)(the same embedding of the description)); a₁ = max over query
  positions of MHA(q=Q, k=v=D), a₂ = max over description positions of MHA(q=D, k=v=Q),
  each 8 heads × 16, Glorot-normal projections without bias, through
  `kernels.attention.cross_attention` with the padding of the attended side masked;
  p_link = σ(Dense(1)(ReLU(Dense(128)(Dropout(0.2)([a₁; a₂; m]))))).

Keras defaults reproduced (the post's code is Keras 2): Embedding U(−0.05, 0.05), Dense and
Conv1D Glorot-uniform with zero biases, CuDNNLSTM through `models.recurrent.LSTM`.

`features` selects which of the four linking channels the model reads (an ablation: a
left-out channel is not an input at all); the span still defines m.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.attention import cross_attention
from models.recurrent import LSTM, Bidirectional

Array = jax.Array

# The four linking-feature channels, in the order the input pipeline stacks them.
FEATURES = ("span", "char", "word", "object")


def keras_embedding_init(key, shape, dtype=jnp.float32) -> Array:
    """Keras's `Embedding` default: uniform in [−0.05, 0.05)."""
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def masked_max(x: Array, mask: Array) -> Array:
    """Max over axis 1 of (B, N, C) ``x`` where ``mask`` (B, N) is True; zeros if none is."""
    low = jnp.finfo(x.dtype).min
    best = jnp.max(jnp.where(mask[:, :, None], x, low), axis=1)
    return jnp.where(jnp.any(mask, axis=1)[:, None], best, 0.0)


def masked_mean(x: Array, mask: Array) -> Array:
    """Mean over axis 1 of (B, N, C) ``x`` where ``mask`` (B, N) is True; zeros if none is."""
    weights = mask.astype(x.dtype)[:, :, None]
    return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


class EntityLinker(nn.Module):
    """Joint half-pointer NER and binary entity linking (see the module docstring).

    Attributes:
      vocab_size: characters, ids 0 (padding) and 1 (unknown) included.
      embed_dim: E, the character embedding and word projection width (the post: 128).
      hidden_dim: H, LSTM units per direction (the post: 64).
      conv_dim: NER Conv1D channels (the post: 128).
      conv_width: NER Conv1D kernel size (the post: 3).
      num_heads: attention heads (the post: 8).
      head_dim: per-head width (the post: 16).
      link_hidden: width of the scorer's hidden layer (the post: 128).
      dropout: rate on both embeddings and on the scorer's input (the post: 0.2).
      features: which of `FEATURES` the linking branch reads.
      use_word_vectors: add the projected frozen word vectors to the char embeddings.
      dtype: computation dtype (None: float32 from the parameters).
    """

    vocab_size: int
    embed_dim: int = 128
    hidden_dim: int = 64
    conv_dim: int = 128
    conv_width: int = 3
    num_heads: int = 8
    head_dim: int = 16
    link_hidden: int = 128
    dropout: float = 0.2
    features: tuple[str, ...] = FEATURES
    use_word_vectors: bool = True
    dtype: Any = None

    def setup(self):
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown linking features {sorted(unknown)}; valid: {FEATURES}")
        self.char_embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                                   embedding_init=keras_embedding_init)
        if self.use_word_vectors:
            self.word_projection = nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype)
        self.embed_dropout = nn.Dropout(self.dropout)

        def bilstm():
            return Bidirectional(LSTM(self.hidden_dim, return_sequences=True, dtype=self.dtype))

        self.query_lstm = bilstm()
        self.ner_conv = nn.Conv(self.conv_dim, (self.conv_width,), padding="SAME",
                                dtype=self.dtype)
        self.ner_out = nn.Dense(2, dtype=self.dtype)   # [start, end] logits
        self.link_lstm = bilstm()
        self.description_lstm = bilstm()
        width = self.num_heads * self.head_dim
        projection = dict(features=width, use_bias=False, dtype=self.dtype,
                          kernel_init=nn.initializers.glorot_normal())
        self.query_to_description = {name: nn.Dense(**projection)
                                     for name in ("query", "key", "value")}
        self.description_to_query = {name: nn.Dense(**projection)
                                     for name in ("query", "key", "value")}
        self.link_dropout = nn.Dropout(self.dropout)
        self.link_dense = nn.Dense(self.link_hidden, dtype=self.dtype)
        self.link_out = nn.Dense(1, dtype=self.dtype)

    # Pieces --------------------------------------------------------------------------

    def embed(self, char_ids: Array, word_vectors: Array | None, *,
              deterministic: bool) -> Array:
        """(B, N) ids and (B, N, W) per-character word vectors → (B, N, E) embeddings."""
        x = self.char_embed(char_ids)
        if self.use_word_vectors:
            x = x + self.word_projection(word_vectors)
        return self.embed_dropout(x, deterministic=deterministic)

    def encode_query(self, char_ids: Array, word_vectors: Array | None, boundaries: Array, *,
                     deterministic: bool) -> Array:
        """Q₀: (B, T) ids, (B, T, W) word vectors, (B, T, 2) max-match start/end 0/1 →
        (B, T, 2H), zero at padding."""
        mask = char_ids > 0
        x = self.embed(char_ids, word_vectors, deterministic=deterministic)
        x = jnp.concatenate([x, boundaries.astype(x.dtype)], axis=-1)      # [B, T, E + 2]
        x = x * mask[:, :, None].astype(x.dtype)
        q0, _ = self.query_lstm(x, mask=mask)
        return q0

    def ner_logits(self, q0: Array) -> Array:
        """(B, T, 2H) Q₀ → (B, T, 2) start and end logits (before σ and the boundary mask)."""
        return self.ner_out(nn.relu(self.ner_conv(q0)))

    def _attend(self, projections, queries: Array, keys: Array, key_mask: Array) -> Array:
        batch, length = queries.shape[:2]
        heads = (self.num_heads, self.head_dim)
        q = projections["query"](queries).reshape(batch, length, *heads)
        k = projections["key"](keys).reshape(*keys.shape[:2], *heads)
        v = projections["value"](keys).reshape(*keys.shape[:2], *heads)
        out = cross_attention(q, k, v, key_mask=key_mask)                  # [B, Tq, h, d]
        return out.reshape(batch, length, -1)

    def link_logit(self, q0: Array, char_ids: Array, link_features: Array,
                   description_ids: Array, description_vectors: Array | None, *,
                   deterministic: bool) -> Array:
        """The link logit of each (mention, candidate) pair.

        Args:
          q0: (B, T, 2H) from `encode_query`.
          char_ids: (B, T) query ids (for the mask).
          link_features: (B, T, 4) the `FEATURES` channels, 0/1; channel 0 is the span.
          description_ids: (B, S) the candidate's description characters.
          description_vectors: (B, S, W) their word vectors (None without word vectors).
          deterministic: no dropout.

        Returns:
          (B,) logits; σ of them is p_link.
        """
        query_mask, description_mask = char_ids > 0, description_ids > 0
        chosen = [FEATURES.index(name) for name in self.features]
        # jnp.take, not x[..., idx]: a numpy `link_features` cannot be indexed by a tracer.
        y = jnp.take(link_features, jnp.asarray(chosen, jnp.int32), axis=-1)
        y = y.astype(q0.dtype)                                              # [B, T, F]
        q, _ = self.link_lstm(jnp.concatenate([q0, y], axis=-1), mask=query_mask)
        span = (link_features[..., 0] > 0) & query_mask
        mention = masked_mean(q, span)                                      # [B, 2H]
        d = self.embed(description_ids, description_vectors, deterministic=deterministic)
        d = d * description_mask[:, :, None].astype(d.dtype)
        d, _ = self.description_lstm(d, mask=description_mask)             # [B, S, 2H]
        a1 = masked_max(self._attend(self.query_to_description, q, d, description_mask),
                        query_mask)
        a2 = masked_max(self._attend(self.description_to_query, d, q, query_mask),
                        description_mask)
        x = jnp.concatenate([a1, a2, mention], axis=-1)
        x = self.link_dropout(x, deterministic=deterministic)
        return self.link_out(nn.relu(self.link_dense(x)))[:, 0]

    def __call__(self, char_ids: Array, word_vectors: Array | None, boundaries: Array,
                 link_features: Array, description_ids: Array,
                 description_vectors: Array | None, *, deterministic: bool = True
                 ) -> tuple[Array, Array]:
        """Both heads on one batch of (text, sampled mention, sampled candidate).

        Args:
          char_ids: (B, T) int, 0 = padding.
          word_vectors: (B, T, W) float, each character's word vector (None without).
          boundaries: (B, T, 2) float, max-match start / end indicators.
          link_features: (B, T, 4) float, the `FEATURES` channels.
          description_ids: (B, S) int.
          description_vectors: (B, S, W) float (None without word vectors).
          deterministic: no dropout (evaluation).

        Returns:
          (ner_logits (B, T, 2), link_logit (B,)).
        """
        q0 = self.encode_query(char_ids, word_vectors, boundaries, deterministic=deterministic)
        return self.ner_logits(q0), self.link_logit(
            q0, char_ids, link_features, description_ids, description_vectors,
            deterministic=deterministic)

    def ner(self, char_ids: Array, word_vectors: Array | None, boundaries: Array) -> Array:
        """(B, T, 2) p_start, p_end = σ(logits) · max-match boundaries (no dropout)."""
        q0 = self.encode_query(char_ids, word_vectors, boundaries, deterministic=True)
        logits = self.ner_logits(q0).astype(jnp.float32)
        return jax.nn.sigmoid(logits) * boundaries.astype(jnp.float32)

    def link(self, char_ids: Array, word_vectors: Array | None, boundaries: Array,
             link_features: Array, description_ids: Array,
             description_vectors: Array | None) -> Array:
        """(B,) p_link of each pair (no dropout)."""
        q0 = self.encode_query(char_ids, word_vectors, boundaries, deterministic=True)
        logit = self.link_logit(q0, char_ids, link_features, description_ids,
                                description_vectors, deterministic=True)
        return jax.nn.sigmoid(logit.astype(jnp.float32))


def clipped_binary_cross_entropy(probabilities: Array, targets: Array,
                                 epsilon: float = 1e-7) -> Array:
    """Keras's binary cross-entropy on probabilities: −y log p − (1 − y) log(1 − p), with p
    clipped to [ε, 1 − ε] (a gold boundary the max-match mask zeroes costs −log ε, finite)."""
    p = jnp.clip(probabilities, epsilon, 1.0 - epsilon)
    return -(targets * jnp.log(p) + (1.0 - targets) * jnp.log1p(-p))


def joint_loss(ner_logits: Array, link_logit: Array, boundaries: Array, ner_targets: Array,
               mask: Array, link_labels: Array) -> tuple[Array, dict[str, Array]]:
    """The post's loss: BCE(start) + BCE(end), each a masked mean over characters, + BCE(link).

    Args:
      ner_logits: (B, T, 2) start and end logits.
      link_logit: (B,) link logits.
      boundaries: (B, T, 2) max-match start / end indicators (p is σ(logit) times these).
      ner_targets: (B, T, 2) gold start / end 0/1.
      mask: (B, T) True on real characters.
      link_labels: (B,) 1 when the sampled candidate is the gold entity.

    Returns:
      (scalar loss, {"ner_loss", "link_loss", "link_accuracy"}), all float32.
    """
    probabilities = jax.nn.sigmoid(ner_logits.astype(jnp.float32)) * boundaries
    per_char = clipped_binary_cross_entropy(probabilities, ner_targets)     # [B, T, 2]
    weights = mask.astype(jnp.float32)[:, :, None]
    ner_loss = jnp.sum(per_char * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0)
    logit = link_logit.astype(jnp.float32)
    link_loss = jnp.mean(clipped_binary_cross_entropy(jax.nn.sigmoid(logit), link_labels))
    accuracy = jnp.mean((logit > 0) == (link_labels > 0.5))
    return jnp.sum(ner_loss) + link_loss, {"ner_loss": jnp.sum(ner_loss),
                                          "link_loss": link_loss, "link_accuracy": accuracy}
