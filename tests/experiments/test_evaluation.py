"""The evaluator interface: batched prediction with padding, and its scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import evaluation


@pytest.mark.parametrize("count, batch_size", [(7, 3), (6, 3), (1, 4), (5, 5)])
def test_predict_in_batches_equals_one_call_over_everything(count, batch_size):
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(count, 4)).astype(np.float32),
              "ids": np.arange(count, dtype=np.int32)}
    calls = []

    def predict(params, batch):
        calls.append(batch["x"].shape)
        return {"y": batch["x"] @ params, "double_id": 2 * batch["ids"]}

    params = rng.normal(size=(4, 2)).astype(np.float32)
    out = evaluation.predict_in_batches(predict, params, inputs, batch_size)
    np.testing.assert_allclose(out["y"], inputs["x"] @ params, rtol=1e-6)
    np.testing.assert_array_equal(out["double_id"], 2 * np.arange(count))
    assert set(calls) == {(batch_size, 4)}  # one shape: one compilation under jit
    assert len(calls) == -(-count // batch_size)


def test_evaluator_scores_the_predictions_of_the_state():
    inputs = {"x": np.arange(10, dtype=np.float32)[:, None]}
    evaluator = evaluation.Evaluator(
        predict_fn=jax.jit(lambda w, batch: batch["x"][:, 0] * w),
        inputs=inputs, batch_size=4,
        score_fn=lambda y, state: {"sum": np.sum(y), "n": len(y)})
    assert evaluator({"params": jnp.float32(2.0)}) == {"sum": 90.0, "n": 10.0}


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="different numbers of rows"):
        evaluation.predict_in_batches(lambda p, b: b, None,
                                      {"a": np.zeros(2), "b": np.zeros(3)}, 2)
    with pytest.raises(ValueError, match="no inputs"):
        evaluation.predict_in_batches(lambda p, b: b, None, {"a": np.zeros(0)}, 2)
