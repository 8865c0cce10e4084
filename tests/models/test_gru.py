"""Tests for models.recurrent.GRU: parity with torch.nn.GRU (values and gradients), init, shapes."""

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.recurrent import GRU

BATCH, TIME, FEATURES, UNITS = 5, 7, 6, 4


def random_params(key, features, units):
    """GRU params with every entry random (biases too), so a wrong gate order shows."""
    k_kernel, k_recurrent, k_input_bias, k_recurrent_bias = jax.random.split(key, 4)
    return {
        "kernel": jax.random.normal(k_kernel, (features, 3 * units)) * 0.5,
        "recurrent_kernel": jax.random.normal(k_recurrent, (units, 3 * units)) * 0.5,
        "input_bias": jax.random.normal(k_input_bias, (3 * units,)) * 0.5,
        "recurrent_bias": jax.random.normal(k_recurrent_bias, (3 * units,)) * 0.5,
    }


def reference_gru(params, inputs, initial_state):
    """Naive float64 numpy GRU (reset-after, Keras gate order) over one sequence.

    Args:
      params: our parameter dict.
      inputs: (T, F) array.
      initial_state: (H,) array.

    Returns:
      (T, H) states after every step.
    """
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    units = p["recurrent_kernel"].shape[0]
    state, states = np.asarray(initial_state, np.float64), []
    for x in np.asarray(inputs, np.float64):
        xp = x @ p["kernel"] + p["input_bias"]
        hp = state @ p["recurrent_kernel"] + p["recurrent_bias"]
        z = 1.0 / (1.0 + np.exp(-(xp[:units] + hp[:units])))
        r = 1.0 / (1.0 + np.exp(-(xp[units : 2 * units] + hp[units : 2 * units])))
        candidate = np.tanh(xp[2 * units :] + r * hp[2 * units :])
        state = z * state + (1.0 - z) * candidate
        states.append(state)
    return np.stack(states) if states else np.zeros((0, units))


def keras_to_torch_gates(x):
    """Reorders the last axis (3H) from Keras's (z, r, h) to PyTorch's (r, z, n)."""
    z, r, h = np.split(np.asarray(x), 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def torch_to_keras_gates(x):
    """Reorders the last axis from PyTorch's (r, z, n) back to Keras's (z, r, h)."""
    r, z, h = np.split(np.asarray(x), 3, axis=-1)
    return np.concatenate([z, r, h], axis=-1)


def torch_gru_with(params, features, units):
    """A torch.nn.GRU (reset-after, b_ih and b_hh) holding a copy of our params."""
    torch = pytest.importorskip("torch")
    module = torch.nn.GRU(features, units, batch_first=True).double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(keras_to_torch_gates(params["kernel"]).T))
        module.weight_hh_l0.copy_(
            torch.from_numpy(keras_to_torch_gates(params["recurrent_kernel"]).T)
        )
        module.bias_ih_l0.copy_(torch.from_numpy(keras_to_torch_gates(params["input_bias"])))
        module.bias_hh_l0.copy_(
            torch.from_numpy(keras_to_torch_gates(params["recurrent_bias"]))
        )
    return module


def torch_grads_to_keras(module):
    """Gradients of the torch module's weights in our parameter layout, as numpy."""
    return {
        "kernel": torch_to_keras_gates(module.weight_ih_l0.grad.numpy().T),
        "recurrent_kernel": torch_to_keras_gates(module.weight_hh_l0.grad.numpy().T),
        "input_bias": torch_to_keras_gates(module.bias_ih_l0.grad.numpy()),
        "recurrent_bias": torch_to_keras_gates(module.bias_hh_l0.grad.numpy()),
    }


def gru_apply(params, inputs, initial_state=None, mask=None):
    module = GRU(UNITS, return_sequences=True)
    return module.apply(
        {"params": params}, inputs, initial_state=initial_state, mask=mask
    )


# A scalar loss that weights every output step and the final state differently, so
# that gradients flow through all time steps and both outputs.
def scalar_loss(outputs, final_state, weights):
    return (outputs * weights).sum() + jnp.sin(final_state).sum()


@pytest.fixture(scope="module")
def case():
    key = jax.random.key(0)
    k_params, k_inputs, k_state, k_weights = jax.random.split(key, 4)
    return {
        "params": random_params(k_params, FEATURES, UNITS),
        "inputs": jax.random.normal(k_inputs, (BATCH, TIME, FEATURES)),
        "initial_state": jax.random.normal(k_state, (BATCH, UNITS)) * 0.5,
        "weights": jax.random.normal(k_weights, (BATCH, TIME, UNITS)),
    }


@pytest.mark.parametrize("with_initial_state", [False, True])
def test_matches_torch_gru_values(case, with_initial_state):
    torch = pytest.importorskip("torch")
    initial_state = case["initial_state"] if with_initial_state else None
    outputs, final_state = jax.jit(gru_apply)(case["params"], case["inputs"], initial_state)

    module = torch_gru_with(case["params"], FEATURES, UNITS)
    torch_inputs = torch.from_numpy(np.asarray(case["inputs"], np.float64))
    torch_h0 = (
        None if initial_state is None
        else torch.from_numpy(np.asarray(initial_state, np.float64))[None]
    )
    with torch.no_grad():
        expected_outputs, expected_final = module(torch_inputs, torch_h0)

    np.testing.assert_allclose(outputs, expected_outputs.numpy(), atol=1e-5)
    np.testing.assert_allclose(final_state, expected_final[0].numpy(), atol=1e-5)


def test_matches_torch_gru_gradients(case):
    torch = pytest.importorskip("torch")

    def loss(params, inputs, initial_state):
        outputs, final_state = gru_apply(params, inputs, initial_state)
        return scalar_loss(outputs, final_state, case["weights"])

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
        case["params"], case["inputs"], case["initial_state"]
    )
    param_grads, input_grads, state_grads = grads

    module = torch_gru_with(case["params"], FEATURES, UNITS)
    torch_inputs = torch.tensor(np.asarray(case["inputs"], np.float64), requires_grad=True)
    torch_h0 = torch.tensor(
        np.asarray(case["initial_state"], np.float64)[None], requires_grad=True
    )
    outputs, final = module(torch_inputs, torch_h0)
    torch_weights = torch.from_numpy(np.asarray(case["weights"], np.float64))
    ((outputs * torch_weights).sum() + torch.sin(final[0]).sum()).backward()

    np.testing.assert_allclose(input_grads, torch_inputs.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(state_grads, torch_h0.grad[0].numpy(), atol=1e-4)
    expected = torch_grads_to_keras(module)
    for name, grad in param_grads.items():
        np.testing.assert_allclose(grad, expected[name], atol=1e-4, err_msg=name)


def test_matches_numpy_reference(case):
    outputs, final_state = jax.jit(gru_apply)(
        case["params"], case["inputs"], case["initial_state"]
    )
    for row in range(BATCH):
        expected = reference_gru(case["params"], case["inputs"][row], case["initial_state"][row])
        np.testing.assert_allclose(outputs[row], expected, atol=1e-5)
        np.testing.assert_allclose(final_state[row], expected[-1], atol=1e-5)


def test_gradients_match_finite_differences(case):
    def loss(params, inputs):
        outputs, final_state = gru_apply(params, inputs)
        return scalar_loss(outputs, final_state, case["weights"])

    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), case["params"])
        inputs = jnp.asarray(case["inputs"], jnp.float64)
        jax.test_util.check_grads(
            jax.jit(loss), (params, inputs), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
        )


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(0, TIME), min_size=BATCH, max_size=BATCH))
def test_mask_carries_state_like_running_each_prefix_alone(case, lengths):
    """With a right-padding mask, the final state is that of the unpadded prefix."""
    mask = jnp.arange(TIME)[None, :] < jnp.asarray(lengths)[:, None]
    outputs, final_state = jax.jit(gru_apply)(
        case["params"], case["inputs"], case["initial_state"], mask
    )
    for row, length in enumerate(lengths):
        h0 = np.asarray(case["initial_state"][row], np.float64)
        prefix_states = reference_gru(case["params"], case["inputs"][row, :length], h0)
        expected = prefix_states[-1] if length else h0
        np.testing.assert_allclose(outputs[row, :length], prefix_states, atol=1e-5)
        np.testing.assert_allclose(final_state[row], expected, atol=1e-5)
        # Masked steps repeat the carried state.
        np.testing.assert_allclose(
            outputs[row, length:], np.broadcast_to(expected, (TIME - length, UNITS)),
            atol=1e-5,
        )


def test_parameter_count_and_shapes():
    features, units = 128, 128
    module = GRU(units)
    params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((2, 3, features)))
    params = params["params"]
    shapes = jax.tree.map(lambda x: x.shape, params)
    assert shapes == {
        "kernel": (features, 3 * units),
        "recurrent_kernel": (units, 3 * units),
        "input_bias": (3 * units,),
        "recurrent_bias": (3 * units,),
    }
    # Two (·, 3H) kernels and two 3H biases: 3·128·128·2 + 2·3·128 = 99,072.
    count = sum(np.prod(x.shape) for x in jax.tree.leaves(params))
    assert count == 3 * 128 * 128 * 2 + 2 * 3 * 128 == 99_072


def test_keras_initialisation():
    features, units = 40, 32
    params = GRU(units).init(jax.random.key(1), jnp.zeros((1, 1, features)))["params"]
    recurrent = np.asarray(params["recurrent_kernel"], np.float64)
    # Orthogonal on the whole (H, 3H) matrix: its H rows are orthonormal.
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(units), atol=1e-5)
    # Glorot-uniform: U(±sqrt(6 / (fan_in + fan_out))) with fan_out = 3H, mean 0.
    limit = np.sqrt(6.0 / (features + 3 * units))
    kernel = np.asarray(params["kernel"])
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.9 * limit
    np.testing.assert_allclose(kernel.std(), limit / np.sqrt(3.0), rtol=0.1)
    np.testing.assert_array_equal(params["input_bias"], 0.0)
    np.testing.assert_array_equal(params["recurrent_bias"], 0.0)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_output_shapes_and_last_output_is_final_state(case, return_sequences):
    module = GRU(UNITS, return_sequences=return_sequences)
    outputs, final_state = jax.jit(module.apply)({"params": case["params"]}, case["inputs"])
    assert final_state.shape == (BATCH, UNITS)
    if return_sequences:
        assert outputs.shape == (BATCH, TIME, UNITS)
        np.testing.assert_array_equal(outputs[:, -1], final_state)
    else:
        assert outputs is None


def test_unroll_changes_nothing(case):
    apply = functools.partial(GRU(UNITS, return_sequences=True, unroll=3).apply,
                              {"params": case["params"]})
    outputs, final_state = jax.jit(apply)(case["inputs"])
    expected_outputs, expected_final = jax.jit(gru_apply)(case["params"], case["inputs"])
    np.testing.assert_allclose(outputs, expected_outputs, atol=1e-6)
    np.testing.assert_allclose(final_state, expected_final, atol=1e-6)


@pytest.mark.parametrize(
    "shape, kwargs, match",
    [
        ((BATCH, FEATURES), {}, "inputs"),
        ((BATCH, TIME, FEATURES), {"initial_state": jnp.zeros((BATCH, UNITS + 1))},
         "initial_state"),
        ((BATCH, TIME, FEATURES), {"mask": jnp.ones((BATCH, TIME + 1), bool)}, "mask"),
    ],
)
def test_bad_shapes_raise(case, shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRU(UNITS).apply({"params": case["params"]}, jnp.zeros(shape), **kwargs)
