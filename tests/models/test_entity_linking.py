"""Tests for models.entity_linking: shapes, parameter count, the loss, one gradient step.

Everything that computes runs at tiny sizes under one `jax.jit` per distinct shape (XLA's
compile time dominates on CPU); the post's full sizes are only counted, with `jax.eval_shape`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.entity_linking import (
    FEATURES,
    EntityLinker,
    clipped_binary_cross_entropy,
    joint_loss,
    masked_max,
    masked_mean,
)

B, T, S, W, V = 3, 7, 9, 5, 40
TINY = dict(embed_dim=16, hidden_dim=8, conv_dim=8, num_heads=2, head_dim=4, link_hidden=8)


def inputs(key=0):
    """The six model inputs as numpy arrays (numpy, so that building variants of them below
    compiles nothing)."""
    rng = np.random.default_rng(key)
    char_ids = rng.integers(2, V, (B, T)).astype(np.int32)
    char_ids[0, 5:] = 0                                    # a padded text
    description_ids = rng.integers(2, V, (B, S)).astype(np.int32)
    description_ids[1, 4:] = 0
    boundaries = (rng.random((B, T, 2)) < 0.4).astype(np.float32)
    features = (rng.random((B, T, 4)) < 0.5).astype(np.float32)
    features[:, :, 0] = 0
    features[:, 1:3, 0] = 1                                # the mention span
    return (char_ids, rng.normal(size=(B, T, W)).astype(np.float32), boundaries, features,
            description_ids, rng.normal(size=(B, S, W)).astype(np.float32))


def expected_param_count(E=128, H=64, C=128, K=3, heads=8, d=16, L=128, F=4, words=True):
    """Counted by hand from the architecture (module docstring)."""
    def lstm(inp):
        return 2 * (inp * 4 * H + H * 4 * H + 2 * 4 * H)   # two directions
    width = heads * d
    return (V * E + (W * E if words else 0)               # char embedding, word projection
            + lstm(E + 2)                                  # query BiLSTM
            + K * 2 * H * C + C + C * 2 + 2                # Conv1D, start/end Dense
            + lstm(2 * H + F)                              # linking BiLSTM
            + lstm(E)                                      # description BiLSTM
            + 2 * 3 * (2 * H * width)                      # two attentions' q, k, v
            + (2 * width + 2 * H) * L + L + L + 1)         # scorer


# Each program below runs once or twice: LLVM's optimisations would cost more than they save.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compiled(fn, *args):
    """`fn` jitted and compiled for the shapes of `args` (call it with such arguments)."""
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def random_params(model, args, seed=0):
    """Parameters of the right shapes drawn from N(0, 0.3²), without compiling `init`.

    What these tests assert (shapes, padding invariance, a descending step) holds for any
    parameter values; `models.recurrent`'s tests cover the initialisers.
    """
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)


@functools.cache
def tiny_model(**overrides):
    return EntityLinker(vocab_size=V, **{**TINY, **overrides})


@functools.cache
def tiny_params():
    return random_params(tiny_model(), inputs())


def forward(params, args):
    """(ner logits (B, T, 2), link logits (B,), p_start/p_end (B, T, 2)) of the tiny model."""
    model = tiny_model()
    ner, link = model.apply({"params": params}, *args)
    probabilities = model.apply({"params": params}, *args[:3], method=EntityLinker.ner)
    return ner, link, probabilities


@functools.cache
def tiny_outputs():
    """`forward` on `inputs()` (the shape and padding tests share the compile)."""
    outputs = compiled(forward, tiny_params(), inputs())(tiny_params(), inputs())
    return tuple(np.asarray(x) for x in outputs)


def test_parameter_count_at_the_posts_sizes():
    shapes = jax.eval_shape(EntityLinker(vocab_size=V).init, jax.random.PRNGKey(0), *inputs())
    assert count(shapes["params"]) == expected_param_count()
    ner, link = jax.eval_shape(EntityLinker(vocab_size=V).apply, shapes, *inputs())
    assert ner.shape == (B, T, 2) and link.shape == (B,)


def test_shapes_parameter_count_and_boundary_mask():
    params = tiny_params()
    assert count(params) == expected_param_count(E=16, H=8, C=8, heads=2, d=4, L=8)
    ner, link, probabilities = tiny_outputs()
    assert ner.shape == (B, T, 2) and link.shape == (B,)
    # p is σ(logit) times the max-match boundary: zero wherever there is none, σ elsewhere.
    boundaries = inputs()[2]
    np.testing.assert_array_equal(probabilities[boundaries == 0], 0)
    np.testing.assert_allclose(probabilities[boundaries == 1],
                               (1 / (1 + np.exp(-ner)))[boundaries == 1], rtol=1e-5)


def test_ablations_change_the_inputs_not_the_rest():
    model = tiny_model(features=("span", "object"), use_word_vectors=False)
    args = list(inputs())
    args[1] = args[5] = None
    params = random_params(model, args)
    assert "word_projection" not in params
    assert count(params) == expected_param_count(E=16, H=8, C=8, heads=2, d=4, L=8, F=2,
                                                 words=False)
    # The batch holds each pair three times: as is, with the left-out "char" channel
    # flipped, and with the kept "object" channel flipped (one compile, one call).
    flipped = [args[3].copy(), args[3].copy()]
    flipped[0][:, :, 1] = 1 - flipped[0][:, :, 1]
    flipped[1][:, :, 3] = 1 - flipped[1][:, :, 3]
    tripled = [None if x is None else np.concatenate([x, x, x]) for x in args]
    tripled[3] = np.concatenate([args[3], *flipped])
    link = np.asarray(compiled(model.apply, {"params": params}, *tripled)(
        {"params": params}, *tripled)[1])
    np.testing.assert_allclose(link[B:2 * B], link[:B], rtol=1e-6)   # no effect
    assert np.all(np.abs(link[2 * B:] - link[:B]) > 1e-6)            # an effect


def test_padding_does_not_change_the_outputs():
    """Extra padding on the text and the description leaves every real output unchanged."""
    args = inputs()
    params = tiny_params()

    def pad(x, n):
        return np.concatenate([x, np.zeros((x.shape[0], n, *x.shape[2:]), x.dtype)], axis=1)

    padded = (pad(args[0], 3), pad(args[1], 3), pad(args[2], 3), pad(args[3], 3),
              pad(args[4], 2), pad(args[5], 2))
    ner, link, probabilities = tiny_outputs()
    ner_padded, link_padded, probabilities_padded = map(
        np.asarray, compiled(forward, params, padded)(params, padded))
    mask = args[0] > 0
    np.testing.assert_allclose(ner_padded[:, :T][mask], ner[mask], atol=1e-5)
    np.testing.assert_allclose(probabilities_padded[:, :T][mask], probabilities[mask],
                               atol=1e-5)
    np.testing.assert_allclose(link_padded, link, atol=1e-5)


def test_masked_pooling_by_hand():
    x = np.asarray([[[1.0], [5.0], [3.0]], [[-2.0], [-1.0], [7.0]]])
    mask = np.asarray([[True, False, True], [False, False, False]])
    pooled = jax.jit(lambda x, mask: (masked_max(x, mask), masked_mean(x, mask)))(x, mask)
    np.testing.assert_allclose(pooled[0], [[3.0], [0.0]])
    np.testing.assert_allclose(pooled[1], [[2.0], [0.0]])


def test_joint_loss_by_hand():
    # One text of two characters: logits 0 (p = 0.5), the second char has no boundary.
    logits = np.zeros((1, 2, 2), np.float32)
    boundaries = np.asarray([[[1.0, 1.0], [0.0, 0.0]]], np.float32)
    targets = np.asarray([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    mask = np.asarray([[True, True]])
    link_logit, labels = np.zeros(1, np.float32), np.ones(1, np.float32)
    loss, parts = jax.jit(joint_loss)(logits, link_logit, boundaries, targets, mask, labels)
    eps = 1e-7
    # start: −log .5 (char 0) + −log(1 − ε) (char 1); end: −log .5 + −log ε (gold, masked).
    start = (np.log(2) - np.log1p(-eps)) / 2
    end = (np.log(2) - np.log(eps)) / 2
    np.testing.assert_allclose(parts["ner_loss"], start + end, rtol=1e-5)
    np.testing.assert_allclose(parts["link_loss"], np.log(2), rtol=1e-5)
    np.testing.assert_allclose(parts["link_accuracy"], 0.0)   # logit 0 is not > 0
    np.testing.assert_allclose(loss, start + end + np.log(2), rtol=1e-5)
    bce = jax.jit(clipped_binary_cross_entropy)(np.asarray([0.0, 1.0, 0.25], np.float32),
                                                np.asarray([1.0, 0.0, 1.0], np.float32))
    # p = 1 is clipped to float32(1 − ε), which rounds to 1 − 2⁻²³.
    top = -np.log1p(-np.float64(np.float32(1 - eps)))
    np.testing.assert_allclose(bce, [-np.log(eps), top, np.log(4)], rtol=1e-5)


def test_one_gradient_step_lowers_the_loss():
    model = tiny_model(dropout=0.0)
    args = inputs()
    targets = inputs(1)[2]
    labels = np.asarray([1.0, 0.0, 1.0], np.float32)
    optimizer = optax.adam(1e-2)

    def loss_fn(p):
        ner, link = model.apply({"params": p}, *args)
        return joint_loss(ner, link, args[2], targets, args[0] > 0, labels)[0]

    def descend(p):
        """(loss at p, its gradient, p after one Adam step)."""
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, _ = optimizer.update(grads, optimizer.init(p), p)
        return loss, grads, optax.apply_updates(p, updates)

    step = compiled(descend, tiny_params())
    loss, grads, stepped = step(tiny_params())
    grads = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(g)) for g in grads)
    # Every part of the model gets a gradient (the attentions and the description too).
    assert all(np.abs(g).sum() > 0 for g in grads)
    assert step(stepped)[0] < loss


def test_unknown_feature_is_refused():
    with pytest.raises(ValueError, match="unknown linking features"):
        jax.eval_shape(EntityLinker(vocab_size=V, features=("span", "colour")).init,
                       jax.random.PRNGKey(0), *inputs())
    assert FEATURES == ("span", "char", "word", "object")
