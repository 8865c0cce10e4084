"""Tests for experiments/benchmarks/gradient_penalty.py: the comparison is like for like.

The PyTorch critic is held to the flax one with copied weights (float64 to rounding, each
float32 result near its float64 one, in the quick run); the JAX step variants to one
another; and the quick benchmark run to its rows (``patch_matmul_conv`` itself:
tests/kernels/test_conv.py).
"""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import gradient_penalty as bench
from experiments.benchmarks import harness
from models import dcgan

def test_bad_variant_names_raise():
    model = dcgan.CRITICS["wgan_div"](resolution=32)
    with pytest.raises(ValueError, match="conv must be one of"):
        bench.critic_apply(model, "winograd")
    with pytest.raises(ValueError, match="penalty must be one of"):
        bench.jax_critic_step(model, penalty="gp")


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (64, 5, 2, (1, 2)),   # the critic's convs: 64 → 32, the odd pixel after
    (8, 5, 2, (1, 2)),
    (7, 3, 2, (1, 1)),    # out 4: (4 − 1)·2 + 3 − 7 = 2
    (5, 1, 1, (0, 0)),
    (6, 4, 1, (1, 2)),
])
def test_tf_same_padding_hand_computed(size, kernel, stride, expected):
    assert bench.tf_same_padding(size, kernel, stride) == expected


def test_jax_variants_compute_the_same_loss_and_gradients():
    """Patch-matmul convs and the shared forward change the cost, not the result."""
    size = bench.Size(resolution=32, batch=2)
    model, params, batch_stats = bench.init_critic(size)
    x_real, x_fake = bench.synthetic_batches(size)

    def loss_and_grads(conv, penalty):
        loss = functools.partial(bench.jax_critic_loss, apply=bench.critic_apply(model, conv),
                                 penalty=penalty)
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(
            params, batch_stats, x_real, x_fake)

    # The model as it is, through the kernel, against both changes at once (the conv alone
    # is held to lax's by the test above, to second order).
    (loss, (stats, terms)), grads = loss_and_grads("xla", "kernel")
    (got_loss, (got_stats, got_terms)), got_grads = loss_and_grads("patch_matmul",
                                                                   "shared_forward")
    assert float(terms["penalty"]) > 0
    assert float(got_loss) == pytest.approx(float(loss), rel=1e-5)
    assert float(got_terms["penalty"]) == pytest.approx(float(terms["penalty"]), rel=1e-4)
    for got, want in zip(jax.tree.leaves((got_grads, got_stats)),
                         jax.tree.leaves((grads, stats))):
        assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want) + 1e-12


def test_penalty_matches_the_kernel_by_hand_on_a_linear_critic():
    """T(x) = ⟨w, x⟩ has ∇ₓT = w: both penalty paths give k·½·(‖w‖^p + ‖w‖^p) = k‖w‖^p."""
    w = jnp.linspace(-0.3, 0.4, 2 * 2 * 3).reshape(2, 2, 3)

    def apply(variables, x):
        return jnp.sum(x * variables["params"]["w"], axis=(1, 2, 3)), {"batch_stats": {}}

    x = jnp.ones((3, 2, 2, 3))
    expected = bench.K * float(jnp.sum(w**2)) ** (bench.P / 2)
    for penalty in ("kernel", "shared_forward"):
        _, (_, terms) = bench.jax_critic_loss({"w": w}, {}, x, -x, apply=apply, penalty=penalty)
        assert float(terms["penalty"]) == pytest.approx(expected, rel=1e-5)
        assert float(terms["wasserstein"]) == pytest.approx(-2 * float(jnp.sum(w)), rel=1e-5)


@pytest.mark.bench
def test_torch_padding_differs_from_symmetric_padding():
    """The explicit (1, 2) pad matters: PyTorch's symmetric padding=2 gives other scores."""
    torch = pytest.importorskip("torch")
    model, params, batch_stats = bench.init_critic(bench.QUICK)
    x_real, _ = bench.synthetic_batches(bench.QUICK)
    critic = bench.torch_critic(bench.QUICK.resolution).train()
    bench.copy_params_to_torch(params, critic)
    expected = model.apply({"params": params, "batch_stats": batch_stats}, x_real, train=True,
                           mutable=["batch_stats"])[0]
    symmetric = torch.nn.Sequential(*[
        torch.nn.Identity() if isinstance(m, torch.nn.ZeroPad2d) else m
        for m in copy.deepcopy(critic)])
    for m in symmetric:
        if isinstance(m, torch.nn.Conv2d):
            m.padding = (2, 2)
    with torch.no_grad():
        same = critic(bench.to_nchw(x_real)).numpy()
        shifted = symmetric(bench.to_nchw(x_real)).numpy()
    np.testing.assert_allclose(same, expected, rtol=1e-4, atol=1e-6)
    assert np.max(np.abs(shifted - np.asarray(expected))) > 1e-3 * np.max(np.abs(expected))


@pytest.mark.bench
def test_quick_run_times_every_row_and_passes_the_check():
    pytest.importorskip("torch")
    report = harness.Report("gradient_penalty", repeats=1)
    bench.run(report, quick=True)
    step_group = f"{bench.QUICK.resolution}px b{bench.QUICK.batch} critic step"
    step_rows = {row.impl: row for row in report.rows if row.group == step_group}
    assert set(step_rows) == {
        "PyTorch penalised", "PyTorch plain", "JAX plain, XLA convs",
        "JAX penalised, XLA convs", "JAX plain, patch-matmul convs",
        "JAX penalised, patch-matmul convs",
        "JAX penalised, patch-matmul convs, one forward per batch"}
    assert report.baseline_of(step_group) is step_rows["PyTorch penalised"]
    assert len(report.rows) == len(step_rows) + 3  # and the last-conv ∇ₓ group
    assert all(row.median_s > 0 and row.repeats == 1 for row in report.rows)
    assert all(report.speedup(row) > 0 for row in report.rows)
    assert any(note.startswith("like-for-like check passed") for note in report.notes)
    # The check itself, on the quick size: float64 against PyTorch, float32 against float64.
    errors = step_rows["PyTorch penalised"].extra["agreement"]
    assert max(errors["float64"][name] for name in ("scores", "penalty", "penalty_grad")) < 1e-10
    assert errors["jax"]["scores"] < 1e-5
    assert errors["jax"]["wasserstein"] < bench.VALUE_RTOL
    assert errors["jax"]["penalty"] < bench.VALUE_RTOL
    assert errors["jax"]["penalty_grad"] < bench.GRADIENT_RTOL
    assert errors["torch"]["penalty_grad"] > 0  # PyTorch's float32 was measured too
    assert errors["jax"]["penalty_value"] > 0
    assert any("penalised / plain step" in note for note in report.notes)
    assert "critic step" in report.markdown()
