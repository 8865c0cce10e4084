"""A pre-LN Transformer decoder whose attention pattern is a config value.

The model and its choices: docs/sparse_attention.md §5.

Glossary of shapes: B batch, N length (context), V vocabulary, W width (model dimension),
H heads, D = W / H head dimension, F = 4·W MLP width.

The block (pre-LN, as the Sparse Transformer's pre-activation residual blocks, arXiv 1904.10509):

    x ← x + MultiHeadAttention(LayerNorm(x))
    x ← x + Dense(W)(gelu(Dense(F)(LayerNorm(x))))

Attention follows the seed's `Attention` layer (docs/sparse_attention.md §1.1) where that
makes sense:

  - Q, K and V are `Dense(H·D)` projections **without bias**, Glorot-uniform (Keras default,
    docs/index.md §2); the softmax scale is 1/√D (applied inside `kernels.attention.attention`).
  - Departure: an **output projection** `Dense(W)` (with bias) follows the heads' concatenation.
    The seed has none, because its attention layers sit in front of other layers; in a
    residual stack it is what lets each block write its heads' outputs into any direction of
    the residual stream, and every Transformer LM has one. `output_projection=False` gives
    the seed's layer (the residual then adds the raw concatenation of the heads).
  - The pattern (`Full`, `Atrous`, `Local`, `Sparse`, `Strided`, `Fixed`) and the attention
    function itself are module fields: swapping `attention` for `reference_attention` (dense
    mask) gives the same model computed the slow way, which the tests use.

`DecoderLM`: token embedding + positions → `num_layers` blocks → final LayerNorm → logits,
always causal. The per-layer pattern is one pattern or a tuple cycled over the layers, e.g.
``(Local(32), Atrous(32))`` for the post's "alternating Local and Atrous layers"
(docs/sparse_attention.md §1.2: two layers reach every earlier position).
`parse_pattern("local:32,atrous:32")` builds such a tuple from a config string.

Choices, documented:
  - Positions are learned (`"learned"`: a (max_len, W) table, N(0, 0.02²), GPT-2 style) by
    default, or fixed sinusoids (`"sinusoidal"`, Vaswani et al., scaled to the size of the
    token embeddings), picked by name.
  - The output layer is tied to the token embedding by default (logits = x·Eᵀ, no bias): it
    saves V·W parameters, which matters for a large character set (4,437 characters in
    红楼梦). `tie_embeddings=False` gives an untied `Dense(V)` with bias.
  - Token embeddings are N(0, 0.02²) rather than flax's N(0, 1): with tied output, unit-scale
    embeddings would make the initial logits of size √W instead of about zero.
  - GELU is the exact erf form; LayerNorm ε is flax's 1e-6.
  - `remat=True` wraps each block in `nn.remat`: its activations are recomputed in the
    backward pass instead of stored (the Sparse Transformer's recomputation, arXiv 1904.10509), for
    long contexts; the parameters and the numbers are the same.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.attention import Atrous, Fixed, Full, Local, Pattern, Sparse, Strided, attention

Array = jax.Array

# `attention(q, k, v, pattern, *, causal, key_mask) -> out`, q/k/v/out [B, N, H, D].
AttentionFn = Callable[..., Array]

EMBEDDING_STDDEV = 0.02  # GPT-2's initialisation of token and position tables

# name → (pattern class, the numbers of integer arguments it takes).
_PATTERN_SYNTAX = {
    "full": (Full, (0,)),
    "atrous": (Atrous, (1,)),
    "local": (Local, (1, 2)),
    "sparse": (Sparse, (1,)),
    "strided": (Strided, (1,)),
    "fixed": (Fixed, (2,)),
}

PATTERN_GRAMMAR = ("full | atrous:RATE | local:RADIUS[:DILATION] | sparse:RATE | "
                   "strided:STRIDE | fixed:STRIDE:SUMMARY, comma-separated to cycle over layers")


def parse_pattern(text: str) -> tuple[Pattern, ...]:
    """Parses a pattern string into the per-layer cycle of patterns.

    Examples: ``"full"`` → (Full(),); ``"local:64"`` → (Local(64),); ``"fixed:64:8"`` →
    (Fixed(64, 8),); ``"local:64,atrous:8"`` → (Local(64), Atrous(8)), alternating over
    layers.

    Args:
      text: see `PATTERN_GRAMMAR`.

    Returns:
      A non-empty tuple of patterns.

    Raises:
      ValueError: naming the string and the faulty part, for an unknown name, a wrong number
        of arguments, a non-integer or an argument out of range.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"pattern {text!r} is empty; expected {PATTERN_GRAMMAR}")
    patterns = []
    for part in text.split(","):
        name, *args = part.strip().lower().split(":")
        if name not in _PATTERN_SYNTAX:
            raise ValueError(f"pattern {text!r}: unknown pattern {name!r} in {part!r}; "
                             f"expected {PATTERN_GRAMMAR}")
        cls, arities = _PATTERN_SYNTAX[name]
        if len(args) not in arities:
            raise ValueError(f"pattern {text!r}: {name} takes {' or '.join(map(str, arities))} "
                             f"integer argument(s), got {part!r}")
        try:
            numbers = [int(arg) for arg in args]
        except ValueError:
            raise ValueError(f"pattern {text!r}: arguments of {part!r} must be integers"
                             ) from None
        try:
            patterns.append(cls(*numbers))
        except ValueError as error:
            raise ValueError(f"pattern {text!r}: {error}") from None
    return tuple(patterns)


def layer_patterns(pattern: Pattern | Sequence[Pattern], num_layers: int
                   ) -> tuple[Pattern, ...]:
    """The pattern of each layer: one pattern for all, or a sequence cycled over layers."""
    cycle = tuple(pattern) if isinstance(pattern, (tuple, list)) else (pattern,)
    if not cycle:
        raise ValueError("pattern must be a pattern or a non-empty sequence of patterns")
    return tuple(cycle[layer % len(cycle)] for layer in range(num_layers))



def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x · Φ(x) = x/2 · (1 + erf(x/√2)), elementwise on any shape.

    `jax.nn.gelu(approximate=False)` computes the same through erfc, whose lowering on
    XLA:CPU costs about 1.7× as much forward+backward; this is the form PyTorch uses.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1 / math.sqrt(2))))


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention restricted to a pattern (docs/sparse_attention.md §5).

    The seed's layer (docs/sparse_attention.md §1.1) with an output projection added.

    Attributes:
      num_heads: H; the input width W must be a multiple of it (D = W / H).
      pattern: the index set (a `kernels.attention` pattern; static).
      causal: also require key ≤ query.
      attention_fn: the attention function, `kernels.attention.attention` (or
        `reference_attention` to compute the same thing with a dense mask).
      output_projection: add the output `Dense(W)` (see the module docstring).
      dtype: computation dtype; parameters are float32.
    """

    num_heads: int
    pattern: Pattern = Full()
    causal: bool = True
    attention_fn: AttentionFn = attention
    output_projection: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, key_mask: Array | None = None) -> Array:
        """Self-attention over the sequence.

        Args:
          x: [B, N, W] float.
          key_mask: optional bool [B, N]; False marks padding keys.

        Returns:
          [B, N, W] in ``dtype``.

        Raises:
          ValueError: if x is not 3-D or W is not a multiple of num_heads.
        """
        if x.ndim != 3:
            raise ValueError(f"x must have shape (batch, length, width), got {x.shape}")
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} (x {x.shape}) must be a multiple of num_heads "
                             f"{self.num_heads}")
        head_dim = width // self.num_heads
        # Q, K, V: Dense(H·D) without bias, Glorot over (W, H·D), as the seed's layer.
        project = functools.partial(
            nn.DenseGeneral, features=(self.num_heads, head_dim), use_bias=False,
            kernel_init=nn.initializers.glorot_uniform(), dtype=self.dtype)
        q = project(name="query")(x)  # [B, N, H, D]
        k = project(name="key")(x)    # [B, N, H, D]
        v = project(name="value")(x)  # [B, N, H, D]
        out = self.attention_fn(q, k, v, self.pattern, causal=self.causal, key_mask=key_mask)
        if not self.output_projection:
            return out.reshape(x.shape).astype(self.dtype)
        return nn.DenseGeneral(width, axis=(-2, -1), kernel_init=nn.initializers.glorot_uniform(),
                               dtype=self.dtype, name="out")(out)  # [B, N, W]


class TransformerBlock(nn.Module):
    """Pre-LN block: x + Attention(LN(x)), then x + MLP(LN(x)) with GELU and F = 4·W.

    Attributes:
      num_heads: H.
      pattern: this layer's attention pattern.
      causal: causal attention.
      mlp_ratio: F / W (4).
      attention_fn: see `MultiHeadAttention`.
      output_projection: see `MultiHeadAttention`.
      dtype: computation dtype.
    """

    num_heads: int
    pattern: Pattern = Full()
    causal: bool = True
    mlp_ratio: int = 4
    attention_fn: AttentionFn = attention
    output_projection: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, key_mask: Array | None = None) -> Array:
        """[B, N, W] → [B, N, W]; key_mask as in `MultiHeadAttention`."""
        width = x.shape[-1]
        dense = functools.partial(nn.Dense, kernel_init=nn.initializers.glorot_uniform(),
                                  dtype=self.dtype)
        h = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(x)
        x = x + MultiHeadAttention(
            self.num_heads, self.pattern, causal=self.causal, attention_fn=self.attention_fn,
            output_projection=self.output_projection, dtype=self.dtype, name="attention")(
                h, key_mask)
        h = nn.LayerNorm(dtype=self.dtype, name="mlp_norm")(x)
        h = dense(self.mlp_ratio * width, name="mlp_in")(h)  # [B, N, F]
        h = gelu(h)
        return x + dense(width, name="mlp_out")(h)


class LearnedPositions(nn.Module):
    """A trainable (max_len, W) position table, N(0, 0.02²)."""

    max_len: int
    width: int

    @nn.compact
    def __call__(self, length: int) -> Array:
        """The first ``length`` rows, [length, W]; ValueError if length > max_len."""
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len} of the "
                             "learned position table")
        table = self.param("embedding", nn.initializers.normal(EMBEDDING_STDDEV),
                           (self.max_len, self.width))
        return table[:length]


class SinusoidalPositions(nn.Module):
    """Fixed sinusoids (Vaswani et al. 2017): sin on the first W/2 features, cos on the rest.

    Feature k < W/2 at position t is s·sin(t / 10000^(2k/W)); feature W/2 + k is the cosine,
    with s = `EMBEDDING_STDDEV`: unscaled sinusoids (norm √(W/2)) would drown the N(0, 0.02²)
    token embeddings (norm about 0.02·√W) in the first LayerNorm, hiding which token is
    where. No parameters; any length works (``max_len`` is unused, kept for a uniform
    signature).
    """

    max_len: int
    width: int

    def __call__(self, length: int) -> Array:
        """[length, W] float32."""
        half = self.width // 2
        frequencies = jnp.exp(-math.log(10000.0) * jnp.arange(half) * 2.0 / self.width)
        angles = jnp.arange(length)[:, None] * frequencies[None, :]  # [length, W/2]
        table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
        table = jnp.pad(table, ((0, 0), (0, self.width - 2 * half)))  # odd W: a zero column
        return EMBEDDING_STDDEV * table


POSITIONS = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}


class DecoderLM(nn.Module):
    """Decoder-only (causal) Transformer language model with per-layer attention patterns.

    Attributes:
      vocab_size: V.
      max_len: the longest sequence (rows of the learned position table).
      num_layers: number of blocks.
      width: W.
      num_heads: H (W must be a multiple of H).
      pattern: one pattern for every layer, or a tuple cycled over the layers.
      mlp_ratio: F / W.
      positions: "learned" or "sinusoidal" (see `POSITIONS`).
      tie_embeddings: logits from the token embedding (True) or an untied `Dense(V)`.
      output_projection: see `MultiHeadAttention`.
      remat: recompute each block's activations in the backward pass (`nn.remat`).
      attention_fn: see `MultiHeadAttention`.
      dtype: computation dtype (parameters float32; logits are returned in float32).
    """

    vocab_size: int
    max_len: int
    num_layers: int
    width: int
    num_heads: int
    pattern: Any = Full()  # Pattern | tuple[Pattern, ...]
    mlp_ratio: int = 4
    positions: str = "learned"
    tie_embeddings: bool = True
    output_projection: bool = True
    remat: bool = False
    attention_fn: AttentionFn = attention
    dtype: Any = jnp.float32

    def _validate(self, tokens: Array) -> None:
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be a (batch, length) integer array, got shape "
                             f"{tokens.shape} and dtype {tokens.dtype}")
        for name in ("vocab_size", "max_len", "num_layers", "width", "num_heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be a multiple of num_heads "
                             f"{self.num_heads}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {sorted(POSITIONS)}, got "
                             f"{self.positions!r}")

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        """Next-token logits: position t is predicted from tokens 0 … t.

        Args:
          tokens: [B, N] int token ids.

        Returns:
          [B, N, V] float32 logits.

        Raises:
          ValueError: on a bad tokens array, sizes or positions name, or N > max_len with
            learned positions.
        """
        self._validate(tokens)
        embed = nn.Embed(self.vocab_size, self.width,
                         embedding_init=nn.initializers.normal(EMBEDDING_STDDEV),
                         dtype=self.dtype, name="token_embedding")
        x = embed(tokens)  # [B, N, W]
        x = x + POSITIONS[self.positions](self.max_len, self.width, name="position_embedding")(
            tokens.shape[1]).astype(self.dtype)
        block = nn.remat(TransformerBlock) if self.remat else TransformerBlock
        for layer, pattern in enumerate(layer_patterns(self.pattern, self.num_layers)):
            x = block(self.num_heads, pattern, causal=True, mlp_ratio=self.mlp_ratio,
                      attention_fn=self.attention_fn, output_projection=self.output_projection,
                      dtype=self.dtype, name=f"block_{layer}")(x)
        x = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)
        if self.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.Dense(self.vocab_size, kernel_init=nn.initializers.glorot_uniform(),
                              dtype=self.dtype, name="output")(x)
        return logits.astype(jnp.float32)  # [B, N, V]


def count_params(params) -> int:
    """Total number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


__all__ = ["AttentionFn", "DecoderLM", "LearnedPositions", "MultiHeadAttention",
           "PATTERN_GRAMMAR", "POSITIONS", "SinusoidalPositions", "TransformerBlock",
           "count_params", "layer_patterns", "parse_pattern"]
