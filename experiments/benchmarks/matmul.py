"""The three matmuls of a dense layer's training step, alone: JAX (XLA:CPU) vs PyTorch.

A dense layer y = x·W over T tokens costs three products per step: the forward x·W, the
input gradient dy·Wᵀ and the weight gradient xᵀ·dy, which contracts over the tokens. XLA:CPU
hands the first two to YNNPACK and runs the third as its own dot; this benchmark times each
product in both frameworks, in one process, at the shapes of BERT-base's feed-forward layer
at the NL2SQL batch (T = 32 × 160 tokens, 3072 → 768; docs/nl2sql.md §6), the products
where `launch.py bench bert` finds JAX's matmul time going. Every row of a product's group
has the same FLOPs; PyTorch is each group's baseline. `--quick` uses 256 × 128 → 64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import harness

FULL = dict(tokens=32 * 160, fan_in=3072, fan_out=768)
QUICK = dict(tokens=256, fan_in=128, fan_out=64)

# name -> (JAX function of (x, w, dy), the same product in PyTorch); NumPy's reference is
# the JAX function's expression on host arrays (`.T` reads the same in both).
PRODUCTS = {
    "forward x·W": (lambda x, w, dy: x @ w, lambda x, w, dy: x @ w),
    "input gradient dy·Wᵀ": (lambda x, w, dy: dy @ w.T, lambda x, w, dy: dy @ w.t()),
    "weight gradient xᵀ·dy": (lambda x, w, dy: x.T @ dy, lambda x, w, dy: x.t() @ dy),
}


def run(report: harness.Report, quick: bool) -> None:
    """One group per product; finding: PyTorch time / JAX time of each."""
    sizes = QUICK if quick else FULL
    tokens, fan_in, fan_out = sizes["tokens"], sizes["fan_in"], sizes["fan_out"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((tokens, fan_in), dtype=np.float32)
    w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
    dy = rng.standard_normal((tokens, fan_out), dtype=np.float32)
    flops = 2.0 * tokens * fan_in * fan_out
    try:
        import torch
    except ImportError:
        torch = None
        report.note("PyTorch is not installed: JAX rows only (pip install torch)")
    for name, (jax_product, torch_product) in PRODUCTS.items():
        group = f"{name}, T={tokens}, {fan_in}→{fan_out}"
        if torch is not None:
            call = functools.partial(torch_product, *(torch.from_numpy(a) for a in (x, w, dy)))
            report.time_call(group, f"torch ({torch.get_num_threads()} threads)", call,
                             baseline=True, flops=flops)
        row = report.time_jax(group, "jax", jax_product, *(jnp.asarray(a) for a in (x, w, dy)),
                              flops=flops)
        expected = jax_product(x.astype(np.float64), w.astype(np.float64),
                               dy.astype(np.float64))
        got = np.asarray(jax.jit(jax_product)(x, w, dy))
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
        if torch is not None:
            report.finding(f"{name}: time of PyTorch / JAX", report.speedup(row), target=1.0,
                           speed=True)
