"""A small linear-regression task for trainer tests (real optimisation, known solution)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import data, trainer

TRUE_WEIGHTS = np.array([1.5, -2.0, 0.5], np.float32)


def make_task(num_examples=256, batch_size=16, seed=0, nan_at_example=None, evaluate=True):
    """Regression y = x·w* + noise; `nan_at_example` puts a NaN into one example's target."""
    rng = np.random.default_rng(123)
    x = rng.normal(size=(num_examples, 3)).astype(np.float32)
    y = (x @ TRUE_WEIGHTS + 0.01 * rng.normal(size=num_examples)).astype(np.float32)
    if nan_at_example is not None:
        y[nan_at_example] = np.nan
    optimizer = optax.adam(0.05)

    def init_state(key):
        params = {"w": 0.1 * jax.random.normal(key, (3,)), "b": jnp.zeros(())}
        return {"params": params, "opt_state": optimizer.init(params)}

    def train_step(state, batch, key):
        noise = 1e-3 * jax.random.normal(key, batch["x"].shape)  # exercises the step key

        def loss_fn(params):
            prediction = (batch["x"] + noise) @ params["w"] + params["b"]
            return jnp.mean((prediction - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        params, opt_state, norms = trainer.apply_updates(
            state["params"], grads, state["opt_state"], optimizer)
        return {"params": params, "opt_state": opt_state}, {"loss": loss, **norms}

    def evaluate_fn(state):
        error = np.abs(np.asarray(state["params"]["w"]) - TRUE_WEIGHTS).max()
        return {"neg_weight_error": -float(error)}

    batches = data.EpochBatches({"x": x, "y": y}, batch_size=batch_size, seed=seed)
    return trainer.Task(init_state, train_step, batches, evaluate_fn if evaluate else None)
