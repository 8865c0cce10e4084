"""Tests for models.sentence_encoder against a naive numpy reference.

The architecture is docs/sentence_similarity.md §2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.sentence_encoder import (
    CosineClassifier,
    SentenceClassifier,
    SentenceEncoder,
    l2_normalize,
)

VOCAB, EMBED, HIDDEN, MAXLEN, BATCH = 50, 12, 8, 9, 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_encode(params, token_ids):
    """Naive float64 numpy encoder: lookup, reset-after GRU one row at a time, L2 norm.

    Runs over every given step (no mask): pass the unpadded ids for the masked state.
    """
    table = np.asarray(params["embedding"]["embedding"], np.float64)
    gru = {k: np.asarray(v, np.float64) for k, v in params["gru"].items()}
    hidden = gru["recurrent_kernel"].shape[0]
    state = np.zeros(hidden)
    for token in token_ids:
        x = table[token] @ gru["kernel"] + gru["input_bias"]
        h = state @ gru["recurrent_kernel"] + gru["recurrent_bias"]
        z = sigmoid(x[:hidden] + h[:hidden])
        r = sigmoid(x[hidden : 2 * hidden] + h[hidden : 2 * hidden])
        candidate = np.tanh(x[2 * hidden :] + r * h[2 * hidden :])
        state = z * state + (1.0 - z) * candidate
    norm = np.linalg.norm(state)
    return state / norm if norm > 0 else state


def random_padded_ids(rng, lengths, maxlen=MAXLEN):
    ids = np.zeros((len(lengths), maxlen), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, VOCAB, size=length)
    return ids


def randomized_params(params, key):
    """Replaces the zero biases with random ones so the reference check covers them."""
    params = jax.tree.map(lambda x: x, params)
    k1, k2 = jax.random.split(key)
    gru = dict(params["gru"])
    gru["input_bias"] = jax.random.normal(k1, gru["input_bias"].shape) * 0.3
    gru["recurrent_bias"] = jax.random.normal(k2, gru["recurrent_bias"].shape) * 0.3
    return {**params, "gru": gru}


def make_encoder(final_state):
    return SentenceEncoder(VOCAB, EMBED, HIDDEN, final_state=final_state)


# Jitted once per module so that hypothesis examples reuse the compiled code.
encode_last_step = jax.jit(make_encoder("last_step").apply)
encode_masked = jax.jit(make_encoder("masked").apply)


@pytest.fixture(scope="module")
def params():
    ids = jnp.zeros((1, MAXLEN), jnp.int32)
    initial = jax.jit(make_encoder("last_step").init)(jax.random.key(0), ids)["params"]
    return randomized_params(initial, jax.random.key(1))


@settings(max_examples=8, deadline=None)
@given(
    lengths=st.lists(st.integers(1, MAXLEN), min_size=BATCH, max_size=BATCH),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_in_both_modes(params, lengths, seed):
    ids = random_padded_ids(np.random.default_rng(seed), lengths)
    last_step = encode_last_step({"params": params}, ids)
    masked = encode_masked({"params": params}, ids)
    for row, length in enumerate(lengths):
        # The seed runs over the right padding (pad id 0 has a real vector) ...
        np.testing.assert_allclose(last_step[row], reference_encode(params, ids[row]),
                                   atol=1e-5)
        # ... the masked state is the sentence's own, computed alone at its length.
        np.testing.assert_allclose(masked[row], reference_encode(params, ids[row, :length]),
                                   atol=1e-5)


def test_masked_equals_encoding_each_sentence_alone(params):
    """The masked state equals running the model itself on the unpadded sentence."""
    lengths = [1, 4, MAXLEN, 7]
    ids = random_padded_ids(np.random.default_rng(2), lengths)
    masked = encode_masked({"params": params}, ids)
    alone = make_encoder("last_step")
    for row, length in enumerate(lengths):
        expected = alone.apply({"params": params}, ids[row : row + 1, :length])[0]
        np.testing.assert_allclose(masked[row], expected, atol=1e-6)


def test_final_state_modes_differ_only_with_padding(params):
    ids = random_padded_ids(np.random.default_rng(3), [MAXLEN, MAXLEN - 3])
    last_step = make_encoder("last_step").apply({"params": params}, ids)
    masked = make_encoder("masked").apply({"params": params}, ids)
    np.testing.assert_allclose(last_step[0], masked[0], atol=1e-6)  # no padding
    assert np.abs(last_step[1] - masked[1]).max() > 1e-3  # three pad steps


def test_all_pad_row_masked_gives_zero_vector_with_finite_gradients(params):
    ids = jnp.zeros((2, MAXLEN), jnp.int32).at[1, :3].set(5)
    encoder = make_encoder("masked")

    def loss(params):
        return encoder.apply({"params": params}, ids).sum()

    z = encoder.apply({"params": params}, ids)
    np.testing.assert_array_equal(z[0], 0.0)
    grads = jax.jit(jax.grad(loss))(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), final_state=st.sampled_from(["last_step", "masked"]))
def test_outputs_have_unit_norm(params, seed, final_state):
    rng = np.random.default_rng(seed)
    ids = random_padded_ids(rng, rng.integers(1, MAXLEN + 1, size=BATCH))
    encode = encode_masked if final_state == "masked" else encode_last_step
    z = encode({"params": params}, ids)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)


def test_l2_normalize_matches_numpy_and_keeps_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], np.float32)
    expected = np.array([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(jax.jit(l2_normalize)(x), expected, atol=1e-6)


def test_embedding_initialisation_is_keras_uniform():
    vocab = 3000
    init = jax.jit(SentenceEncoder(vocab).init)
    params = init(jax.random.key(4), jnp.zeros((1, 2), jnp.int32))
    table = np.asarray(params["params"]["embedding"]["embedding"])
    assert table.shape == (vocab, 128)
    assert table.min() >= -0.05 and table.max() <= 0.05
    # 384k draws of U(−0.05, 0.05): the extremes are reached and the moments fit.
    assert table.min() < -0.0499 and table.max() > 0.0499
    assert abs(table.mean()) < 1e-3
    np.testing.assert_allclose(table.std(), 0.1 / np.sqrt(12.0), rtol=0.01)
    # The pad id 0 is an ordinary trainable row (no masking in the embedding).
    assert np.abs(table[0]).max() > 0.0


def test_parameter_counts_and_shapes():
    vocab, classes = 3000, 20000
    ids = jnp.zeros((4, 32), jnp.int32)
    model = SentenceClassifier(vocab, classes)
    params = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
    count = sum(np.prod(x.shape) for x in jax.tree.leaves(params))
    gru_count = 3 * 128 * 128 * 2 + 2 * 3 * 128
    assert count == vocab * 128 + gru_count + 128 * classes
    assert params["classifier"]["kernel"].shape == (128, classes)
    cosines = jax.eval_shape(model.apply, {"params": params}, ids)
    assert cosines.shape == (4, classes)
    z = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, method="encode"),
                       params, ids)
    assert z.shape == (4, 128)


def test_classifier_starts_with_unit_columns_and_returns_cosines():
    dim, classes = 16, 40
    z = l2_normalize(jax.random.normal(jax.random.key(5), (7, dim)))
    params = CosineClassifier(classes).init(jax.random.key(6), z)["params"]
    kernel = np.asarray(params["kernel"], np.float64)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, atol=1e-6)
    cosines = jax.jit(CosineClassifier(classes).apply)({"params": params}, z)
    np.testing.assert_allclose(cosines, np.asarray(z, np.float64) @ kernel, atol=1e-6)
    assert np.abs(cosines).max() <= 1.0 + 1e-6


def test_sentence_classifier_composes_encoder_and_classifier():
    ids = random_padded_ids(np.random.default_rng(7), [3, MAXLEN, 5])
    model = SentenceClassifier(VOCAB, 11, EMBED, HIDDEN, final_state="masked")
    variables = model.init(jax.random.key(8), ids)
    cosines = jax.jit(model.apply)(variables, ids)
    z = model.apply(variables, ids, method="encode")
    expected_z = make_encoder("masked").apply(
        {"params": variables["params"]["encoder"]}, ids
    )
    np.testing.assert_allclose(z, expected_z, atol=1e-6)
    np.testing.assert_allclose(
        cosines, z @ variables["params"]["classifier"]["kernel"], atol=1e-6
    )


@pytest.mark.parametrize(
    "final_state, ids, match",
    [
        ("first_step", np.zeros((2, 3), np.int32), "final_state"),
        ("masked", np.zeros((2, 3), np.float32), "token_ids"),
        ("masked", np.zeros((2,), np.int32), "token_ids"),
    ],
)
def test_bad_arguments_raise(final_state, ids, match):
    with pytest.raises(ValueError, match=match):
        make_encoder(final_state).init(jax.random.key(0), ids)


def reference_states(params, token_ids):
    """Float64 GRU states after every given step, (len(token_ids), H), unnormalised."""
    table = np.asarray(params["embedding"]["embedding"], np.float64)
    gru = {k: np.asarray(v, np.float64) for k, v in params["gru"].items()}
    hidden = gru["recurrent_kernel"].shape[0]
    state, states = np.zeros(hidden), []
    for token in token_ids:
        x = table[token] @ gru["kernel"] + gru["input_bias"]
        h = state @ gru["recurrent_kernel"] + gru["recurrent_bias"]
        z = sigmoid(x[:hidden] + h[:hidden])
        r = sigmoid(x[hidden : 2 * hidden] + h[hidden : 2 * hidden])
        state = z * state + (1.0 - z) * np.tanh(x[2 * hidden :] + r * h[2 * hidden :])
        states.append(state)
    return np.stack(states)


def test_max_pooling_matches_reference_and_ignores_padding(params):
    lengths = [1, 4, MAXLEN, 7]
    ids = random_padded_ids(np.random.default_rng(11), lengths)
    encoder = SentenceEncoder(VOCAB, EMBED, HIDDEN, final_state="masked", pooling="max")
    z = jax.jit(encoder.apply)({"params": params}, ids)
    for row, length in enumerate(lengths):
        pooled = reference_states(params, ids[row, :length]).max(axis=0)
        np.testing.assert_allclose(z[row], pooled / np.linalg.norm(pooled), atol=1e-5)


def test_bidirectional_halves_are_each_direction_on_the_true_length():
    lengths = [1, 5, MAXLEN]
    ids = random_padded_ids(np.random.default_rng(12), lengths)
    encoder = SentenceEncoder(VOCAB, EMBED, HIDDEN, final_state="masked", bidirectional=True)
    params = encoder.init(jax.random.key(13), ids)["params"]
    assert set(params["bigru"]) == {"forward", "backward"}
    z = np.asarray(jax.jit(encoder.apply)({"params": params}, ids))
    assert z.shape == (len(lengths), 2 * HIDDEN)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    for row, length in enumerate(lengths):
        sentence = ids[row, :length]
        forward = reference_states({"embedding": params["embedding"],
                                    "gru": params["bigru"]["forward"]}, sentence)[-1]
        backward = reference_states({"embedding": params["embedding"],
                                     "gru": params["bigru"]["backward"]}, sentence[::-1])[-1]
        expected = np.concatenate([forward, backward])
        np.testing.assert_allclose(z[row], expected / np.linalg.norm(expected), atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_max_pooling_all_pad_row_is_zero_with_finite_gradients(bidirectional):
    ids = jnp.zeros((2, MAXLEN), jnp.int32).at[1, :3].set(5)
    encoder = SentenceEncoder(VOCAB, EMBED, HIDDEN, final_state="masked", pooling="max",
                              bidirectional=bidirectional)
    params = encoder.init(jax.random.key(14), ids)["params"]
    z = encoder.apply({"params": params}, ids)
    np.testing.assert_array_equal(z[0], 0.0)
    assert z.shape == (2, HIDDEN * (2 if bidirectional else 1))
    grads = jax.jit(jax.grad(lambda p: encoder.apply({"params": p}, ids).sum()))(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_bidirectional_classifier_parameter_count():
    vocab, classes = 300, 200
    ids = jnp.zeros((4, 32), jnp.int32)
    model = SentenceClassifier(vocab, classes, bidirectional=True, pooling="max")
    params = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
    count = sum(np.prod(x.shape) for x in jax.tree.leaves(params))
    gru_count = 3 * 128 * 128 * 2 + 2 * 3 * 128
    assert count == vocab * 128 + 2 * gru_count + 2 * 128 * classes


def test_unknown_pooling_raises():
    with pytest.raises(ValueError, match="pooling"):
        SentenceEncoder(VOCAB, pooling="mean").init(jax.random.key(0),
                                                    np.zeros((2, 3), np.int32))


def test_dropout_acts_only_in_training(params):
    ids = random_padded_ids(np.random.default_rng(15), [3, MAXLEN])
    plain = make_encoder("masked").apply({"params": params}, ids)
    encoder = SentenceEncoder(VOCAB, EMBED, HIDDEN, final_state="masked", dropout=0.5)
    np.testing.assert_allclose(encoder.apply({"params": params}, ids), plain, atol=1e-6)
    dropped = encoder.apply({"params": params}, ids, train=True,
                            rngs={"dropout": jax.random.key(16)})
    assert np.abs(np.asarray(dropped) - np.asarray(plain)).max() > 1e-3
