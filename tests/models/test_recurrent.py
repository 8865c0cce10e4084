"""Tests for models.recurrent: the LSTM against numpy and torch, the bidirectional wrapper."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.recurrent import GRU, LSTM, Bidirectional, LSTMState, reverse_valid_steps

BATCH, TIME, FEATURES, UNITS = 4, 6, 5, 3


def random_params(key, features, units):
    """LSTM params with every entry random (biases too), so a wrong gate order shows."""
    keys = jax.random.split(key, 4)
    return {
        "kernel": jax.random.normal(keys[0], (features, 4 * units)) * 0.5,
        "recurrent_kernel": jax.random.normal(keys[1], (units, 4 * units)) * 0.5,
        "input_bias": jax.random.normal(keys[2], (4 * units,)) * 0.5,
        "recurrent_bias": jax.random.normal(keys[3], (4 * units,)) * 0.5,
    }


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_lstm(params, inputs, initial_state=None):
    """Naive float64 numpy LSTM over one unpadded sequence, gates (i, f, c, o).

    Args:
      params: our parameter dict.
      inputs: (T, F) array.
      initial_state: optional (h, c), each (H,).

    Returns:
      (T, H) outputs and the final (h, c).
    """
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    units = p["recurrent_kernel"].shape[0]
    if initial_state is None:
        h, c = np.zeros(units), np.zeros(units)
    else:
        h, c = (np.asarray(x, np.float64) for x in initial_state)
    outputs = []
    for x in np.asarray(inputs, np.float64):
        z = x @ p["kernel"] + p["input_bias"] + h @ p["recurrent_kernel"] + p["recurrent_bias"]
        i, f, g, o = (z[n * units:(n + 1) * units] for n in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs) if outputs else np.zeros((0, units)), (h, c)


def lstm_apply(params, inputs, initial_state=None, mask=None):
    return LSTM(UNITS, return_sequences=True).apply(
        {"params": params}, inputs, initial_state=initial_state, mask=mask)


def scalar_loss(outputs, final_state, weights):
    # Weights every step differently and passes both h and c, so all gradients flow.
    return (outputs * weights).sum() + jnp.sin(final_state.hidden).sum() + (
        final_state.cell ** 2).sum()


@pytest.fixture(scope="module")
def case():
    keys = jax.random.split(jax.random.key(0), 5)
    return {
        "params": random_params(keys[0], FEATURES, UNITS),
        "inputs": jax.random.normal(keys[1], (BATCH, TIME, FEATURES)),
        "initial_state": LSTMState(jax.random.normal(keys[2], (BATCH, UNITS)) * 0.5,
                                   jax.random.normal(keys[3], (BATCH, UNITS)) * 0.5),
        "weights": jax.random.normal(keys[4], (BATCH, TIME, UNITS)),
    }


# ------------------------------------------------------------------------------------------
# LSTM.


@pytest.mark.parametrize("with_initial_state", [False, True])
def test_lstm_matches_numpy_reference(case, with_initial_state):
    initial_state = case["initial_state"] if with_initial_state else None
    outputs, final_state = jax.jit(lstm_apply)(case["params"], case["inputs"], initial_state)
    for row in range(BATCH):
        row_state = None if initial_state is None else [x[row] for x in initial_state]
        expected, (h, c) = reference_lstm(case["params"], case["inputs"][row], row_state)
        np.testing.assert_allclose(outputs[row], expected, atol=1e-5)
        np.testing.assert_allclose(final_state.hidden[row], h, atol=1e-5)
        np.testing.assert_allclose(final_state.cell[row], c, atol=1e-5)


def torch_lstm_with(params, features, units):
    """A torch.nn.LSTM holding a copy of our params (PyTorch's gate order is ours too)."""
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(features, units, batch_first=True).double()
    p = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in params.items()}
    with torch.no_grad():
        module.weight_ih_l0.copy_(p["kernel"].T)
        module.weight_hh_l0.copy_(p["recurrent_kernel"].T)
        module.bias_ih_l0.copy_(p["input_bias"])
        module.bias_hh_l0.copy_(p["recurrent_bias"])
    return module


def test_lstm_matches_torch_values_and_gradients(case):
    torch = pytest.importorskip("torch")

    def loss(params, inputs, initial_state):
        outputs, final_state = lstm_apply(params, inputs, initial_state)
        return scalar_loss(outputs, final_state, case["weights"])

    outputs, final_state = jax.jit(lstm_apply)(case["params"], case["inputs"],
                                               case["initial_state"])
    param_grads, input_grads, state_grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
        case["params"], case["inputs"], case["initial_state"])

    module = torch_lstm_with(case["params"], FEATURES, UNITS)
    t_inputs = torch.tensor(np.asarray(case["inputs"], np.float64), requires_grad=True)
    t_h0, t_c0 = (torch.tensor(np.asarray(x, np.float64)[None], requires_grad=True)
                  for x in case["initial_state"])
    t_outputs, (t_h, t_c) = module(t_inputs, (t_h0, t_c0))
    t_weights = torch.from_numpy(np.asarray(case["weights"], np.float64))
    ((t_outputs * t_weights).sum() + torch.sin(t_h[0]).sum() + (t_c[0] ** 2).sum()).backward()

    np.testing.assert_allclose(outputs, t_outputs.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(final_state.hidden, t_h[0].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(final_state.cell, t_c[0].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(input_grads, t_inputs.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(state_grads.hidden, t_h0.grad[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(state_grads.cell, t_c0.grad[0].numpy(), atol=1e-4)
    expected = {"kernel": module.weight_ih_l0.grad.numpy().T,
                "recurrent_kernel": module.weight_hh_l0.grad.numpy().T,
                "input_bias": module.bias_ih_l0.grad.numpy(),
                "recurrent_bias": module.bias_hh_l0.grad.numpy()}
    for name, grad in param_grads.items():
        np.testing.assert_allclose(grad, expected[name], atol=1e-4, err_msg=name)


def test_lstm_gradients_match_finite_differences(case):
    mask = jnp.arange(TIME)[None, :] < jnp.array([[TIME], [2], [0], [5]])

    def loss(params, inputs, initial_state):
        outputs, final_state = lstm_apply(params, inputs, initial_state, mask)
        return scalar_loss(outputs, final_state, case["weights"])

    with jax.enable_x64(True):
        args = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64),
                            (case["params"], case["inputs"], case["initial_state"]))
        jax.test_util.check_grads(jax.jit(loss), args, order=1, modes=["rev"],
                                  atol=1e-6, rtol=1e-6)


@settings(max_examples=8, deadline=None)
@given(lengths=st.lists(st.integers(0, TIME), min_size=BATCH, max_size=BATCH))
def test_lstm_mask_carries_state_and_zeroes_outputs(case, lengths):
    mask = jnp.arange(TIME)[None, :] < jnp.asarray(lengths)[:, None]
    outputs, final_state = jax.jit(lstm_apply)(case["params"], case["inputs"],
                                               case["initial_state"], mask)
    for row, length in enumerate(lengths):
        h0c0 = [np.asarray(x[row], np.float64) for x in case["initial_state"]]
        expected, (h, c) = reference_lstm(case["params"], case["inputs"][row, :length], h0c0)
        np.testing.assert_allclose(outputs[row, :length], expected, atol=1e-5)
        np.testing.assert_array_equal(outputs[row, length:], 0.0)
        np.testing.assert_allclose(final_state.hidden[row], h, atol=1e-5)
        np.testing.assert_allclose(final_state.cell[row], c, atol=1e-5)


def test_lstm_one_step_at_a_time_equals_the_whole_sequence(case):
    """Feeding the returned state back, as a decoder does, continues the same sequence."""
    apply = jax.jit(lstm_apply)
    whole, whole_state = apply(case["params"], case["inputs"])
    state, steps = None, []
    for t in range(TIME):
        output, state = apply(case["params"], case["inputs"][:, t:t + 1], state)
        steps.append(output[:, 0])
    np.testing.assert_allclose(np.stack(steps, axis=1), whole, atol=1e-6)
    np.testing.assert_allclose(state.cell, whole_state.cell, atol=1e-6)


def test_lstm_keras_initialisation_and_parameter_count():
    features, units = 40, 32
    params = LSTM(units).init(jax.random.key(1), jnp.zeros((1, 1, features)))["params"]
    assert jax.tree.map(jnp.shape, params) == {
        "kernel": (features, 4 * units), "recurrent_kernel": (units, 4 * units),
        "input_bias": (4 * units,), "recurrent_bias": (4 * units,)}
    recurrent = np.asarray(params["recurrent_kernel"], np.float64)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(units), atol=1e-5)
    limit = np.sqrt(6.0 / (features + 4 * units))  # Glorot-uniform with fan_out = 4H
    kernel = np.asarray(params["kernel"])
    assert limit * 0.9 < np.abs(kernel).max() <= limit
    np.testing.assert_allclose(kernel.std(), limit / np.sqrt(3.0), rtol=0.1)
    np.testing.assert_array_equal(params["input_bias"], 0.0)
    expected_bias = np.zeros(4 * units)
    expected_bias[units:2 * units] = 1.0  # the forget gate, gates (i, f, c, o)
    np.testing.assert_array_equal(params["recurrent_bias"], expected_bias)
    # The seq2seq encoder's BiLSTM(64/dir) on 128-d input: 2 · 4·64·(128 + 64 + 2) = 99,328.
    bi = Bidirectional(LSTM(64, return_sequences=True))
    count = sum(x.size for x in jax.tree.leaves(
        jax.eval_shape(bi.init, jax.random.key(0), jnp.zeros((1, 2, 128)))))
    assert count == 2 * 4 * 64 * (128 + 64 + 2) == 99_328


def test_lstm_without_sequences_and_bad_shapes(case):
    outputs, state = LSTM(UNITS).apply({"params": case["params"]}, case["inputs"])
    assert outputs is None and state.hidden.shape == (BATCH, UNITS)
    apply = LSTM(UNITS).apply
    with pytest.raises(ValueError, match="inputs must be"):
        apply({"params": case["params"]}, case["inputs"][0])
    with pytest.raises(ValueError, match="mask must have shape"):
        apply({"params": case["params"]}, case["inputs"], mask=jnp.ones((BATCH, 2), bool))
    with pytest.raises(ValueError, match="initial_state must be an LSTMState"):
        apply({"params": case["params"]}, case["inputs"],
              initial_state=LSTMState(*(jnp.zeros((BATCH, UNITS + 1)),) * 2))


# ------------------------------------------------------------------------------------------
# Bidirectional.


def test_reverse_valid_steps_by_hand():
    x = jnp.array([[1, 2, 3, 0, 0], [1, 2, 3, 4, 5], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    got = reverse_valid_steps(x, jnp.array([3, 5, 1, 0]))
    np.testing.assert_array_equal(
        got, [[3, 2, 1, 0, 0], [5, 4, 3, 2, 1], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    features = jnp.arange(2 * 4 * 2).reshape(2, 4, 2)
    np.testing.assert_array_equal(reverse_valid_steps(features, jnp.array([2, 4]))[0],
                                  [[2, 3], [0, 1], [4, 5], [6, 7]])


LAYERS = {"lstm": LSTM, "gru": GRU}


@pytest.mark.parametrize("merge", ["concat", "sum"])
@pytest.mark.parametrize("layer_name", sorted(LAYERS))
def test_bidirectional_on_a_padded_batch_equals_each_example_alone(layer_name, merge):
    """The key property: padding changes nothing, and backward reads the true reversal."""
    make = LAYERS[layer_name]
    lengths = [6, 3, 1, 0, 4]
    time = max(lengths)
    rng = np.random.default_rng(3)
    inputs = jnp.asarray(rng.normal(size=(len(lengths), time, FEATURES)), jnp.float32)
    mask = jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]
    module = Bidirectional(make(UNITS, return_sequences=True), merge=merge)
    variables = module.init(jax.random.key(2), inputs, mask=mask)
    outputs, (forward_state, backward_state) = jax.jit(
        lambda x, m: module.apply(variables, x, mask=m))(inputs, mask)

    single = make(UNITS, return_sequences=True)
    width = 2 * UNITS if merge == "concat" else UNITS
    assert outputs.shape == (len(lengths), time, width)
    for row, length in enumerate(lengths):
        if length == 0:
            np.testing.assert_array_equal(outputs[row], 0.0)
            continue
        alone = inputs[row:row + 1, :length]  # unpadded
        fwd, fwd_state = single.apply({"params": variables["params"]["forward"]}, alone)
        bwd, bwd_state = single.apply({"params": variables["params"]["backward"]},
                                      alone[:, ::-1])
        bwd = bwd[:, ::-1]
        expected = (jnp.concatenate([fwd, bwd], -1) if merge == "concat" else fwd + bwd)[0]
        np.testing.assert_allclose(outputs[row, :length], expected, atol=1e-5)
        np.testing.assert_array_equal(outputs[row, length:], 0.0)
        for got, want in zip(jax.tree.leaves(forward_state), jax.tree.leaves(fwd_state)):
            np.testing.assert_allclose(got[row], want[0], atol=1e-5)
        for got, want in zip(jax.tree.leaves(backward_state), jax.tree.leaves(bwd_state)):
            np.testing.assert_allclose(got[row], want[0], atol=1e-5)


def test_bidirectional_padding_gets_no_gradient_and_changes_nothing():
    lengths = jnp.array([2, 5])
    mask = jnp.arange(5)[None, :] < lengths[:, None]
    inputs = jax.random.normal(jax.random.key(4), (2, 5, FEATURES))
    module = Bidirectional(LSTM(UNITS, return_sequences=True))
    variables = module.init(jax.random.key(5), inputs, mask=mask)

    def loss(x):
        return jnp.sum(jnp.sin(module.apply(variables, x, mask=mask)[0]))

    grads = jax.grad(loss)(inputs)
    np.testing.assert_array_equal(grads[0, 2:], 0.0)
    assert np.abs(np.asarray(grads[0, :2])).min() > 0
    noisy = inputs.at[0, 2:].set(100.0)
    np.testing.assert_array_equal(module.apply(variables, noisy, mask=mask)[0],
                                  module.apply(variables, inputs, mask=mask)[0])


def test_bidirectional_without_mask_is_a_plain_reverse():
    inputs = jax.random.normal(jax.random.key(6), (2, 4, FEATURES))
    module = Bidirectional(GRU(UNITS, return_sequences=True))
    variables = module.init(jax.random.key(7), inputs)
    outputs, _ = module.apply(variables, inputs)
    single = GRU(UNITS, return_sequences=True)
    bwd, _ = single.apply({"params": variables["params"]["backward"]}, inputs[:, ::-1])
    np.testing.assert_allclose(outputs[..., UNITS:], bwd[:, ::-1], atol=1e-6)


def test_bidirectional_bad_arguments():
    inputs = jnp.zeros((2, 3, FEATURES))
    with pytest.raises(ValueError, match="merge must be one of"):
        Bidirectional(LSTM(UNITS, return_sequences=True), merge="ave").init(
            jax.random.key(0), inputs)
    with pytest.raises(ValueError, match="return_sequences=True"):
        Bidirectional(LSTM(UNITS)).init(jax.random.key(0), inputs)
    with pytest.raises(ValueError, match="mask must have shape"):
        Bidirectional(LSTM(UNITS, return_sequences=True)).init(
            jax.random.key(0), inputs, mask=jnp.ones((2, 4), bool))
