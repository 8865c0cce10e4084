"""Tests for experiments/benchmarks/gradient_penalty.py: the comparison is like for like.

The benchmark's JAX loss is the GAN experiment's (`critic_scores_and_penalty`), its two
settings and both conv implementations compute the same loss and gradients, and (marked
``bench``: needs PyTorch) the PyTorch critic is held to the flax one with copied weights:
in float64 the two are the same function, and each float32 result stays near its float64
one (``patch_matmul_conv`` itself: tests/kernels/test_conv.py).
"""

import copy
import functools

import jax
import numpy as np
import pytest

from experiments.benchmarks import gradient_penalty as bench
from experiments.benchmarks import harness
from kernels import gradient_penalty
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


def test_jax_loss_is_the_experiments_kernel_call(monkeypatch):
    """The timed loss goes through `critic_scores_and_penalty` with the W-div settings."""
    calls = []
    original = gradient_penalty.critic_scores_and_penalty

    def recording(*args, **kwargs):
        calls.append((args[4], kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(gradient_penalty, "critic_scores_and_penalty", recording)
    w = jax.numpy.ones((2, 2, 3))

    def apply(variables, x):
        return jax.numpy.sum(x * variables["params"]["w"], axis=(1, 2, 3)), {"batch_stats": {}}

    x = jax.numpy.ones((3, 2, 2, 3))
    for penalty in bench.PENALTIES:
        bench.jax_critic_loss({"w": w}, {}, x, -x, apply=apply, penalty=penalty)
    assert [(p.kind, p.k, p.p, p.strategy, kwargs["share_forward"]) for p, kwargs in calls] == [
        ("none", bench.K, bench.P, "real_and_fake", False),
        ("wgan_div", bench.K, bench.P, "real_and_fake", False),
        ("wgan_div", bench.K, bench.P, "real_and_fake", True)]


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

    # XLA's convs with the penalty's own forward against both changes at once (the conv
    # alone is held to lax's in tests/kernels/test_conv.py, to second order).
    (loss, (stats, terms)), grads = loss_and_grads("xla", "separate_forward")
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
    w = jax.numpy.linspace(-0.3, 0.4, 2 * 2 * 3).reshape(2, 2, 3)

    def apply(variables, x):
        return jax.numpy.sum(x * variables["params"]["w"], axis=(1, 2, 3)), {"batch_stats": {}}

    x = jax.numpy.ones((3, 2, 2, 3))
    expected = bench.K * float(jax.numpy.sum(w**2)) ** (bench.P / 2)
    for penalty in ("separate_forward", "shared_forward"):
        _, (_, terms) = bench.jax_critic_loss({"w": w}, {}, x, -x, apply=apply, penalty=penalty)
        assert float(terms["penalty"]) == pytest.approx(expected, rel=1e-5)
        assert float(terms["wasserstein"]) == pytest.approx(-2 * float(jax.numpy.sum(w)),
                                                            rel=1e-5)


# ----------------------------------------------------------------------------------------
# PyTorch against JAX, like for like.

# In float64 the two nets agree to ~1e-14 (FLOAT64_RTOL bounds it): they are the same
# function. In float32 each is then measured against that float64 result; PyTorch's double
# backward is the noisier one (at 64 px, batch 64 its ∂penalty/∂weights was off by 7.9e-3,
# JAX's by 1.1e-3), so comparing the two float32 results with each other would mostly
# measure PyTorch's rounding. JAX's float32 errors must stay within VALUE_RTOL (scores, loss
# terms) and GRADIENT_RTOL.
FLOAT64_RTOL = 1e-10
VALUE_RTOL = 1e-4
GRADIENT_RTOL = 3e-3


def flax_grads_layout(critic) -> dict:
    """The torch critic's ``.grad`` tensors as numpy arrays in the flax parameter layout."""
    convs, norms, (linear,) = bench._torch_layers(critic)

    def array(parameter, *axes):
        return parameter.grad.detach().numpy().transpose(*axes)

    grads = {f"Conv_{i}": {"kernel": array(c.weight, 2, 3, 1, 0)} for i, c in enumerate(convs)}
    grads.update({f"BatchNorm_{i}": {"scale": array(n.weight, 0), "bias": array(n.bias, 0)}
                  for i, n in enumerate(norms)})
    grads["Dense_0"] = {"kernel": array(linear.weight, 1, 0)}
    return grads


def jax_outputs(size, dtype=np.float32) -> dict:
    """The flax critic's scores (2, B), loss terms and ∂penalty/∂weights, on the
    benchmark's weights and batches, through the experiment's shared forward."""
    model, params, batch_stats = bench.init_critic(size)
    x_real, x_fake = (x.astype(dtype) for x in bench.synthetic_batches(size))
    params, batch_stats = jax.tree.map(lambda a: jax.numpy.asarray(a, dtype),
                                       (params, batch_stats))
    apply = bench.critic_apply(model)

    @jax.jit
    def outputs(params):
        def penalty_of(params):
            _, (_, terms) = bench.jax_critic_loss(params, batch_stats, x_real, x_fake,
                                                  apply=apply, penalty="shared_forward")
            return terms["penalty"], terms

        (_, terms), penalty_grads = jax.value_and_grad(penalty_of, has_aux=True)(params)
        variables = {"params": params, "batch_stats": batch_stats}
        scores = jax.numpy.stack([apply(variables, x_real)[0], apply(variables, x_fake)[0]])
        return {"scores": scores, "wasserstein": terms["wasserstein"],
                "penalty": terms["penalty"], "penalty_grads": penalty_grads}

    return jax.tree.map(np.asarray, outputs(params))


def torch_outputs(size, dtype=np.float32) -> dict:
    """``jax_outputs`` from the PyTorch critic with the flax critic's weights copied."""
    import torch

    _, params, _ = bench.init_critic(size)
    x_real, x_fake = (x.astype(dtype) for x in bench.synthetic_batches(size))
    critic = bench.torch_critic(size.resolution).train()
    bench.copy_params_to_torch(params, critic)
    critic = critic.to(getattr(torch, np.dtype(dtype).name))
    real, fake = bench.to_nchw(x_real), bench.to_nchw(x_fake)
    scores = torch.stack([critic(real), critic(fake)]).detach().numpy()
    critic.zero_grad(set_to_none=True)
    _, terms = bench.torch_critic_loss(critic, real, fake, penalised=True)
    terms["penalty"].backward()
    return {"scores": scores, "wasserstein": terms["wasserstein"].detach().numpy(),
            "penalty": terms["penalty"].detach().numpy(),
            "penalty_grads": jax.tree.map(np.asarray, flax_grads_layout(critic))}


def _relative_error(value, reference) -> float:
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    difference, scale = np.linalg.norm(value - reference), np.linalg.norm(reference)
    return float(difference / scale) if scale > 0 else float(difference)


def relative_errors(outputs: dict, reference: dict) -> dict[str, float]:
    """Relative errors of two outputs; the Wasserstein term's relative to |E T(real)| +
    |E T(fake)| (the difference of means may cancel); "penalty_grad" the largest over the
    parameter tensors."""
    grad_errors = jax.tree.map(_relative_error, outputs["penalty_grads"],
                               reference["penalty_grads"])
    mean_scores = np.abs(np.mean(np.asarray(reference["scores"], np.float64), axis=1))
    return {
        "scores": _relative_error(outputs["scores"], reference["scores"]),
        "wasserstein": abs(float(outputs["wasserstein"]) - float(reference["wasserstein"]))
        / float(np.sum(mean_scores)),
        "penalty": _relative_error(outputs["penalty"], reference["penalty"]),
        "penalty_grad": max(jax.tree.leaves(grad_errors)),
    }


@pytest.mark.bench
def test_torch_critic_is_the_flax_critic_like_for_like():
    pytest.importorskip("torch")
    size = bench.QUICK
    with jax.enable_x64(True):
        jax64 = jax_outputs(size, np.float64)
    torch64 = torch_outputs(size, np.float64)
    same_function = relative_errors(jax64, torch64)
    assert max(same_function.values()) < FLOAT64_RTOL, same_function
    jax32 = relative_errors(jax_outputs(size), jax64)
    assert jax32["scores"] < 1e-5
    assert jax32["wasserstein"] < VALUE_RTOL and jax32["penalty"] < VALUE_RTOL, jax32
    assert jax32["penalty_grad"] < GRADIENT_RTOL, jax32
    torch32 = relative_errors(torch_outputs(size), torch64)
    assert torch32["penalty_grad"] > 0  # PyTorch's float32 was measured, not copied
    assert float(jax64["penalty"]) > 0


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
def test_quick_run_times_every_row_and_records_the_ratios():
    pytest.importorskip("torch")
    report = harness.Report("gradient_penalty", repeats=1)
    bench.run(report, quick=True)
    step_group = f"{bench.QUICK.resolution}px b{bench.QUICK.batch} critic step"
    step_rows = {row.impl: row for row in report.rows if row.group == step_group}
    assert set(step_rows) == {"PyTorch penalised", "PyTorch plain"} | {
        label for label, _, _ in bench.JAX_VARIANTS}
    assert report.baseline_of(step_group) is step_rows["PyTorch penalised"]
    assert len(report.rows) == len(step_rows) + 3  # and the last-conv ∇ₓ group
    assert all(row.median_s > 0 and row.repeats == 1 for row in report.rows)
    assert all(report.speedup(row) > 0 for row in report.rows)
    times = {impl: row.median_s for impl, row in step_rows.items()}
    overheads = [f for f in report.findings if f.what.startswith("penalised / plain")]
    assert [f.target for f in overheads] == [bench.TARGET_PENALTY_OVERHEAD] * 3 + [None]
    shared = overheads[2]
    assert shared.value == pytest.approx(
        times["JAX penalised, patch-matmul convs, one forward per batch"]
        / times["JAX plain, patch-matmul convs"])
    (against_torch,) = [f for f in report.findings if f.speed]
    assert against_torch.verdict() in ("faster", "slower", "as fast")
    assert "Findings:" in report.markdown() and "critic step" in report.markdown()
