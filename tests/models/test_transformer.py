"""Tests for models.transformer: shapes, parameter count, causality under every pattern,
the block against a plain-jnp block, the efficient kernels against dense masks, remat."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.attention import Atrous, Fixed, Full, Local, Sparse, Strided, reference_attention
from models import transformer
from models.transformer import (
    DecoderLM,
    MultiHeadAttention,
    SinusoidalPositions,
    TransformerBlock,
    count_params,
    layer_patterns,
    parse_pattern,
)

VOCAB, WIDTH, HEADS, LAYERS, LENGTH = 11, 16, 2, 2, 29


def _model(pattern=Full(), **overrides) -> DecoderLM:
    fields = dict(vocab_size=VOCAB, max_len=32, num_layers=LAYERS, width=WIDTH,
                  num_heads=HEADS, pattern=pattern)
    return DecoderLM(**{**fields, **overrides})


def _tokens(seed: int, batch: int = 2, length: int = LENGTH) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype(np.int32)


def _init(model, tokens, seed=0):
    return jax.jit(model.init)(jax.random.PRNGKey(seed), tokens)


def _randomize(params, seed=1, scale=0.3):
    """Adds noise to every parameter, so zero biases and unit scales are exercised too."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])


def test_logits_shape_and_dtype():
    model = _model(parse_pattern("local:3,atrous:4"))
    tokens = _tokens(0, batch=3)
    logits = jax.jit(model.apply)(_init(model, tokens), tokens)
    assert logits.shape == (3, LENGTH, VOCAB) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_parameter_count_by_hand():
    # V = 11, N_max = 32, W = 16, 2 layers, F = 64.
    per_block = (2 * 16          # attention LayerNorm scale + bias
                 + 3 * 16 * 16   # Q, K, V kernels, no bias (docs/sparse_attention.md §1.1)
                 + 16 * 16 + 16  # output projection + bias
                 + 2 * 16        # MLP LayerNorm
                 + 16 * 64 + 64  # MLP in
                 + 64 * 16 + 16)  # MLP out
    tied = 11 * 16 + 32 * 16 + 2 * per_block + 2 * 16

    def count(**overrides):
        shapes = jax.eval_shape(_model(**overrides).init, jax.random.PRNGKey(0), _tokens(0))
        return count_params(shapes)

    assert count() == tied == 7_184
    assert count(tie_embeddings=False) == tied + 16 * 11 + 11
    assert count(output_projection=False) == tied - 2 * (16 * 16 + 16)
    assert count(positions="sinusoidal") == tied - 32 * 16
    assert count(remat=True) == tied


CAUSALITY_PATTERNS = [Full(), Atrous(3), Local(2), Local(2, dilation=2), Sparse(4),
                      Strided(4), Fixed(4, 1), (Local(2), Atrous(3))]


@pytest.mark.parametrize("pattern", CAUSALITY_PATTERNS, ids=str)
def test_future_tokens_do_not_change_earlier_logits(pattern):
    model = _model(pattern)
    tokens = _tokens(1)
    params = _randomize(_init(model, tokens))
    apply = jax.jit(model.apply)
    logits = np.asarray(apply(params, tokens))
    for t in (0, 7, LENGTH - 2):
        changed = tokens.copy()
        changed[:, t + 1:] = (tokens[:, t + 1:] + 1 + _tokens(t)[:, t + 1:] % (VOCAB - 1)
                              ) % VOCAB
        other = np.asarray(apply(params, changed))
        np.testing.assert_allclose(other[:, :t + 1], logits[:, :t + 1], atol=1e-6, rtol=0)
        # ... while the changed positions themselves do change (the check can fail).
        assert np.abs(other[:, t + 1] - logits[:, t + 1]).max() > 1e-3


def _layer_norm(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def plain_block(p, x, num_heads):
    """The pre-LN block written out in jnp: dense causal softmax, exact GELU."""
    batch, length, width = x.shape
    head_dim = width // num_heads
    a = p["attention"]
    h = _layer_norm(x, p["attention_norm"])
    q, k, v = (jnp.einsum("bnw,whd->bnhd", h, a[name]["kernel"])
               for name in ("query", "key", "value"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
    causal = np.tril(np.ones((length, length), bool))
    weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
    heads = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    x = x + jnp.einsum("bqhd,hdw->bqw", heads, a["out"]["kernel"]) + a["out"]["bias"]
    h = _layer_norm(x, p["mlp_norm"]) @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
    h = 0.5 * h * (1.0 + jax.scipy.special.erf(h / math.sqrt(2.0)))
    return x + h @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]


def test_full_block_equals_plain_jnp_block():
    block = TransformerBlock(num_heads=4, pattern=Full(), causal=True)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 37, 32))
    params = _randomize(block.init(jax.random.PRNGKey(4), x), scale=0.2)
    got = jax.jit(block.apply)(params, x)
    want = jax.jit(plain_block, static_argnums=2)(params["params"], x, 4)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_attention_without_output_projection_is_the_heads_concatenation():
    layer = MultiHeadAttention(num_heads=2, pattern=Full(), causal=False,
                               output_projection=False)
    x = jax.random.normal(jax.random.PRNGKey(5), (1, 6, 8))
    params = layer.init(jax.random.PRNGKey(6), x)
    p = params["params"]
    q, k, v = (jnp.einsum("bnw,whd->bnhd", x, p[n]["kernel"]) for n in ("query", "key", "value"))
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0, axis=-1)
    want = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(1, 6, 8)
    np.testing.assert_allclose(layer.apply(params, x), want, atol=1e-5, rtol=1e-5)


@settings(max_examples=4, deadline=None)
@given(pattern=st.sampled_from([Atrous(3), Local(3), Local(2, dilation=3), Sparse(5),
                                Strided(4), Fixed(5, 2), (Local(3), Atrous(4))]),
       length=st.integers(9, 32), seed=st.integers(0, 100))
def test_efficient_model_equals_dense_mask_model(pattern, length, seed):
    model = _model(pattern)
    dense = _model(pattern, attention_fn=reference_attention)
    tokens = _tokens(seed, length=length)
    params = _randomize(_init(model, tokens), seed=seed)
    np.testing.assert_allclose(jax.jit(model.apply)(params, tokens),
                               jax.jit(dense.apply)(params, tokens), atol=1e-5, rtol=1e-5)


def _loss(model):
    def loss(params, tokens):
        logits = model.apply(params, tokens[:, :-1])
        labels = jax.nn.one_hot(tokens[:, 1:], VOCAB)
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))
    return jax.jit(jax.value_and_grad(loss))


def test_efficient_and_dense_models_have_equal_gradients():
    model = _model(Sparse(4), num_layers=1)
    tokens = _tokens(8, length=LENGTH + 1)
    params = _randomize(_init(model, tokens[:, :-1]))
    loss, grads = _loss(model)(params, tokens)
    dense = _model(Sparse(4), num_layers=1, attention_fn=reference_attention)
    dense_loss, dense_grads = _loss(dense)(params, tokens)
    np.testing.assert_allclose(loss, dense_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
                 grads, dense_grads)


def test_remat_gives_the_same_parameters_loss_and_gradients():
    # One layer of Sparse: remat around both of its custom-VJP parts (band and strided).
    tokens = _tokens(9, length=LENGTH + 1)
    plain = _model(Sparse(4), num_layers=1)
    remat = _model(Sparse(4), num_layers=1, remat=True)
    params = _init(plain, tokens[:, :-1])
    remat_params = _init(remat, tokens[:, :-1])
    assert jax.tree.structure(params) == jax.tree.structure(remat_params)
    jax.tree.map(np.testing.assert_array_equal, params, remat_params)
    params = _randomize(params)
    loss, grads = _loss(plain)(params, tokens)
    remat_loss, remat_grads = _loss(remat)(params, tokens)
    np.testing.assert_allclose(loss, remat_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 grads, remat_grads)


def test_sinusoidal_positions_by_formula():
    got = SinusoidalPositions(max_len=0, width=6).apply({}, 5)
    assert got.shape == (5, 6)
    for t, k in ((0, 0), (3, 1), (4, 2)):  # feature k and W/2 + k at position t
        angle = t / 10000 ** (2 * k / 6)
        np.testing.assert_allclose(got[t, k], 0.02 * math.sin(angle), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got[t, 3 + k], 0.02 * math.cos(angle), rtol=1e-6, atol=1e-9)


def test_layer_patterns_cycle_over_layers():
    assert layer_patterns(Local(2), 3) == (Local(2),) * 3
    assert layer_patterns((Local(2), Atrous(3)), 5) == (Local(2), Atrous(3), Local(2),
                                                        Atrous(3), Local(2))


@pytest.mark.parametrize("text, want", [
    ("full", (Full(),)),
    ("local:64", (Local(64),)),
    ("local:4:2", (Local(4, dilation=2),)),
    ("atrous:8", (Atrous(8),)),
    ("sparse:32", (Sparse(32),)),
    ("strided:32", (Strided(32),)),
    ("fixed:64:8", (Fixed(64, 8),)),
    ("local:64,atrous:8", (Local(64), Atrous(8))),
    (" Local:3 , Atrous:2 ,full", (Local(3), Atrous(2), Full())),
])
def test_parse_pattern(text, want):
    assert parse_pattern(text) == want


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("dense", "unknown pattern 'dense'"),
    ("local", "local takes 1 or 2 integer"),
    ("full:3", "full takes 0 integer"),
    ("atrous:x", "must be integers"),
    ("atrous:0", "rate must be an integer >= 1"),
    ("fixed:4:9", "fixed:4:9"),
    ("local:4,", "unknown pattern ''"),
])
def test_parse_pattern_rejects_bad_strings(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pattern(text)


@pytest.mark.parametrize("overrides, tokens, message", [
    (dict(width=15), _tokens(0), "width 15 must be a multiple of num_heads 2"),
    (dict(max_len=8), _tokens(0), "sequence length 29 exceeds max_len 8"),
    (dict(positions="rotary"), _tokens(0), "positions must be one of"),
    ({}, _tokens(0).astype(np.float32), "tokens must be a .batch, length. integer array"),
    ({}, _tokens(0)[0], r"got shape \(29,\)"),
])
def test_bad_configurations_raise_before_tracing(overrides, tokens, message):
    with pytest.raises(ValueError, match=message):
        _init(_model(**overrides), tokens)


def test_gelu_is_the_exact_erf_form():
    x = np.linspace(-8.0, 8.0, 1601, dtype=np.float32)
    expected = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(float)])
    np.testing.assert_allclose(np.asarray(transformer.gelu(jnp.asarray(x))), expected,
                               atol=2e-6, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: transformer.gelu(v).sum())(x)),
                               np.asarray(jax.grad(lambda v: jax.nn.gelu(v, False).sum())(x)),
                               atol=2e-6)
