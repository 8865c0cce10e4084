"""Tests for models.entity_linking: shapes, parameter count, the loss, one gradient step."""

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


def inputs(key=0):
    rng = np.random.default_rng(key)
    char_ids = rng.integers(2, V, (B, T)).astype(np.int32)
    char_ids[0, 5:] = 0                                    # a padded text
    description_ids = rng.integers(2, V, (B, S)).astype(np.int32)
    description_ids[1, 4:] = 0
    boundaries = (rng.random((B, T, 2)) < 0.4).astype(np.float32)
    features = (rng.random((B, T, 4)) < 0.5).astype(np.float32)
    features[:, :, 0] = 0
    features[:, 1:3, 0] = 1                                # the mention span
    return (jnp.asarray(char_ids), jnp.asarray(rng.normal(size=(B, T, W)), jnp.float32),
            jnp.asarray(boundaries), jnp.asarray(features), jnp.asarray(description_ids),
            jnp.asarray(rng.normal(size=(B, S, W)), jnp.float32))


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


def test_shapes_and_parameter_count():
    model = EntityLinker(vocab_size=V)
    params = model.init(jax.random.PRNGKey(0), *inputs())["params"]
    ner, link = model.apply({"params": params}, *inputs())
    assert ner.shape == (B, T, 2) and link.shape == (B,)
    assert sum(x.size for x in jax.tree.leaves(params)) == expected_param_count()
    probabilities = model.apply({"params": params}, *inputs()[:3], method=EntityLinker.ner)
    # p is σ(logit) times the max-match boundary: zero wherever there is none.
    np.testing.assert_array_equal(np.asarray(probabilities)[np.asarray(inputs()[2]) == 0], 0)


def test_ablations_change_the_inputs_not_the_rest():
    model = EntityLinker(vocab_size=V, features=("span", "object"), use_word_vectors=False)
    args = list(inputs())
    args[1] = args[5] = None
    params = model.init(jax.random.PRNGKey(0), *args)["params"]
    assert "word_projection" not in params
    assert sum(x.size for x in jax.tree.leaves(params)) == expected_param_count(F=2, words=False)
    # A feature channel left out has no effect on the output.
    changed = list(args)
    changed[3] = args[3].at[:, :, 1].set(1 - args[3][:, :, 1])
    np.testing.assert_allclose(model.apply({"params": params}, *args)[1],
                               model.apply({"params": params}, *changed)[1], rtol=1e-6)


def test_padding_does_not_change_the_outputs():
    """Extra padding on the text and the description leaves every real output unchanged."""
    model = EntityLinker(vocab_size=V, embed_dim=16, hidden_dim=8, conv_dim=8, num_heads=2,
                         head_dim=4, link_hidden=8)
    args = inputs()
    params = model.init(jax.random.PRNGKey(1), *args)["params"]
    def pad(x, n):
        return jnp.concatenate([x, jnp.zeros((x.shape[0], n, *x.shape[2:]), x.dtype)],
                                           axis=1)
    padded = (pad(args[0], 3), pad(args[1], 3), pad(args[2], 3), pad(args[3], 3),
              pad(args[4], 2), pad(args[5], 2))
    ner, link = model.apply({"params": params}, *args)
    ner_padded, link_padded = model.apply({"params": params}, *padded)
    mask = np.asarray(args[0] > 0)
    np.testing.assert_allclose(np.asarray(ner_padded)[:, :T][mask], np.asarray(ner)[mask],
                               atol=1e-5)
    np.testing.assert_allclose(link_padded, link, atol=1e-5)


def test_masked_pooling_by_hand():
    x = jnp.asarray([[[1.0], [5.0], [3.0]], [[-2.0], [-1.0], [7.0]]])
    mask = jnp.asarray([[True, False, True], [False, False, False]])
    np.testing.assert_allclose(masked_max(x, mask), [[3.0], [0.0]])
    np.testing.assert_allclose(masked_mean(x, mask), [[2.0], [0.0]])


def test_joint_loss_by_hand():
    # One text of two characters: logits 0 (p = 0.5), the second char has no boundary.
    logits = jnp.zeros((1, 2, 2))
    boundaries = jnp.asarray([[[1.0, 1.0], [0.0, 0.0]]])
    targets = jnp.asarray([[[1.0, 0.0], [0.0, 1.0]]])
    mask = jnp.asarray([[True, True]])
    link_logit, labels = jnp.asarray([0.0]), jnp.asarray([1.0])
    loss, parts = joint_loss(logits, link_logit, boundaries, targets, mask, labels)
    eps = 1e-7
    # start: −log .5 (char 0) + −log(1 − ε) (char 1); end: −log .5 + −log ε (gold, masked).
    start = (np.log(2) - np.log1p(-eps)) / 2
    end = (np.log(2) - np.log(eps)) / 2
    np.testing.assert_allclose(parts["ner_loss"], start + end, rtol=1e-5)
    np.testing.assert_allclose(parts["link_loss"], np.log(2), rtol=1e-5)
    np.testing.assert_allclose(loss, start + end + np.log(2), rtol=1e-5)
    np.testing.assert_allclose(clipped_binary_cross_entropy(jnp.asarray(0.0), 1.0),
                               -np.log(eps), rtol=1e-5)


def test_one_gradient_step_lowers_the_loss():
    model = EntityLinker(vocab_size=V, embed_dim=16, hidden_dim=8, conv_dim=8, num_heads=2,
                         head_dim=4, link_hidden=8, dropout=0.0)
    args = inputs()
    targets = jnp.asarray(inputs(1)[2])
    labels = jnp.asarray([1.0, 0.0, 1.0])
    params = model.init(jax.random.PRNGKey(0), *args)["params"]

    def loss_fn(p):
        ner, link = model.apply({"params": p}, *args)
        return joint_loss(ner, link, args[2], targets, args[0] > 0, labels)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # Every part of the model gets a gradient (the attentions and the description too).
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
    optimizer = optax.adam(1e-2)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    assert loss_fn(optax.apply_updates(params, updates)) < loss


def test_unknown_feature_is_refused():
    with pytest.raises(ValueError, match="unknown linking features"):
        EntityLinker(vocab_size=V, features=("span", "colour")).init(
            jax.random.PRNGKey(0), *inputs())
    assert FEATURES == ("span", "char", "word", "object")
