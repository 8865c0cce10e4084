"""The evaluator interface: a jitted `predict_fn` over fixed inputs, then a score.

Every experiment evaluates the same way: run the model over a fixed set of inputs in batches
of one shape (the last batch padded, its padding dropped), gather the predictions on the
host, and score them (retrieval top-k, bits per character, sliced Wasserstein distance, F1).
`Evaluator` is that, as the `state -> {name: float}` callable the trainer takes.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

PyTree = Any


def predict_in_batches(predict_fn: Callable[[PyTree, Mapping[str, np.ndarray]], PyTree],
                       params: PyTree, inputs: Mapping[str, np.ndarray], batch_size: int
                       ) -> PyTree:
    """Runs `predict_fn(params, batch)` over `inputs` in fixed-size batches.

    Args:
      predict_fn: (params, {name: (batch_size, ...)}) -> pytree of (batch_size, ...) arrays;
        jit it once, every call has the same shapes.
      params: whatever `predict_fn` takes first.
      inputs: name -> (n, ...) arrays with the same n.
      batch_size: rows per call; the last batch is padded with copies of row 0.

    Returns:
      The pytree of predictions with leaves (n, ...) as numpy arrays, padding dropped.
    """
    sizes = {name: len(array) for name, array in inputs.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs have different numbers of rows: {sizes}")
    count = next(iter(sizes.values()))
    if count == 0:
        raise ValueError("no inputs to predict on")
    pad = (-count) % batch_size
    padded = {name: np.concatenate([array, np.repeat(array[:1], pad, axis=0)])
              for name, array in inputs.items()}
    chunks = [jax.device_get(predict_fn(params, {name: array[start:start + batch_size]
                                                 for name, array in padded.items()}))
              for start in range(0, count + pad, batch_size)]
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:count], *chunks)


@dataclasses.dataclass
class Evaluator:
    """`state -> {name: float}`: predictions over fixed inputs, then a score.

    Attributes:
      predict_fn: jitted (params, batch) -> predictions (see `predict_in_batches`).
      inputs: the fixed evaluation inputs, name -> (n, ...).
      score_fn: (predictions with leaves (n, ...), state) -> {name: float}; it may also write
        files (sample grids).
      batch_size: rows per `predict_fn` call.
      params_of: state -> what `predict_fn` takes first (default: state["params"]).
    """

    predict_fn: Callable[[PyTree, Mapping[str, np.ndarray]], PyTree]
    inputs: Mapping[str, np.ndarray]
    score_fn: Callable[[PyTree, PyTree], Mapping[str, float]]
    batch_size: int
    params_of: Callable[[PyTree], PyTree] = lambda state: state["params"]

    def predict(self, state: PyTree) -> PyTree:
        """The predictions over `inputs` for `state`."""
        return predict_in_batches(self.predict_fn, self.params_of(state), self.inputs,
                                  self.batch_size)

    def __call__(self, state: PyTree) -> dict[str, float]:
        return {name: float(value)
                for name, value in self.score_fn(self.predict(state), state).items()}
