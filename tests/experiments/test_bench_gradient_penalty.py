"""Tests for experiments/benchmarks/gradient_penalty.py: the comparison is like for like.

The PyTorch critic is held to the flax one with copied weights (float32 within the
benchmark's tolerances, float64 to rounding); ``patch_matmul_conv`` to
``lax.conv_general_dilated`` in values, gradients and second derivatives; the JAX step
variants to one another; and the quick benchmark run to its rows.
"""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from experiments.benchmarks import gradient_penalty as bench
from experiments.benchmarks import harness
from models import dcgan

NHWC = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                    precision=lax.Precision.HIGHEST)


def patch_conv(x, w, strides, padding):
    return bench.patch_matmul_conv(x, w, strides, padding, dimension_numbers=NHWC,
                                   precision=lax.Precision.HIGHEST)


def second_order(conv, strides, padding):
    """x, w ↦ ∂/∂(x, w) of Σ (∇ₓ Σ tanh(conv(x, w)))²: a double backward through conv."""

    def input_gradient_energy(x, w):
        gradient = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w, strides, padding))))(x)
        return jnp.sum(jnp.square(gradient))

    return jax.jit(jax.grad(input_gradient_energy, argnums=(0, 1)))


@settings(max_examples=5, deadline=None)
@given(size=st.integers(1, 7), kernel=st.integers(1, 5), stride=st.integers(1, 3),
       padding=st.sampled_from(["SAME", "VALID", ((2, 0), (1, 3))]),
       channels=st.integers(1, 3), features=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_patch_matmul_conv_matches_lax_conv(size, kernel, stride, padding, channels,
                                            features, seed):
    # Keep the padded input at least as large as the kernel (else lax has no output).
    kernel = min(kernel, {"SAME": kernel, "VALID": size}.get(padding, size + 2))
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (2, size, size + 1, channels))
    w = jax.random.normal(kw, (kernel, kernel, channels, features))
    strides = (stride, stride)
    expected = jax.jit(lax_conv, static_argnums=(2, 3))(x, w, strides, padding)
    actual = jax.jit(patch_conv, static_argnums=(2, 3))(x, w, strides, padding)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(second_order(patch_conv, strides, padding)(x, w),
                         second_order(lax_conv, strides, padding)(x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_patch_matmul_conv_rejects_what_it_does_not_support():
    x, w = jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    with pytest.raises(ValueError, match="rhs_dilation"):
        bench.patch_matmul_conv(x, w, (1, 1), "SAME", rhs_dilation=(2, 2))
    with pytest.raises(ValueError, match="feature_group_count"):
        bench.patch_matmul_conv(x, w, (1, 1), "SAME", feature_group_count=3)
    with pytest.raises(ValueError, match="NHWC"):
        bench.patch_matmul_conv(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        bench.patch_matmul_conv(x[0], w, (1, 1), "SAME")


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
def test_torch_critic_agrees_with_flax_in_float64():
    """To rounding: the two nets (padding, BN, pooling, penalty) are the same function."""
    pytest.importorskip("torch")
    with jax.enable_x64(True):
        errors = bench.compare_with_torch(bench.Size(resolution=32, batch=4), dtype=np.float64)
    for name in ("scores", "wasserstein", "penalty", "penalty_grad"):
        assert errors[name] < 1e-10, (name, errors)


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
    # The float32 check itself, on the quick size: JAX against PyTorch with copied weights.
    errors = step_rows["PyTorch penalised"].extra["agreement"]
    assert errors["scores"] < 1e-5
    assert errors["wasserstein"] < bench.VALUE_RTOL
    assert errors["penalty"] < bench.VALUE_RTOL
    assert errors["penalty_grad"] < bench.GRADIENT_RTOL
    assert errors["penalty_value"] > 0
    assert any("penalised / plain step" in note for note in report.notes)
    assert "critic step" in report.markdown()
