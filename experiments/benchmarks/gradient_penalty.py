"""WGAN-div critic step: the penalty's double-backward cost over the plain step, JAX vs PyTorch.

What is timed (CPU, float32, one process): one update of the seed's critic
(docs/wgan_div.md §3.1), i.e. the DCGAN critic of `models.dcgan` with batch norm in training
mode, the real and the fake batch through it in separate calls, the loss
E[T(fake)] − E[T(real)] (`kernels.gan_losses`) plus, for the penalised step, the W-div
penalty k·½·(E_real‖∇ₓT‖^p + E_fake‖∇ₓT‖^p) with k = 2, p = 6 (strategy ``real_and_fake``),
then Adam(2e-4, β1 0.5, β2 0.999, ε 1e-7: the seed's, docs/wgan_div.md §4.1, with Keras's ε,
docs/index.md §2 item 5). The full size is that of the paper code and the baselines, 64×64
at batch 64; ``quick`` is 32×32 at batch 8.

The JAX loss is the GAN experiment's: `kernels.gradient_penalty.critic_scores_and_penalty`,
which `experiments/gan/train.py` calls in its critic update. Its two settings are timed:
``share_forward=True`` (the experiment's path: ∇ₓ from the pullback of the pass that scored
each batch, one forward per batch as in PyTorch and the seed) and ``share_forward=False``
(the penalty's own forward passes inside ∇ₓ, as ``wgan_div_penalty`` alone computes it).

The generator is left out in both frameworks: the fake batch is a fixed tensor, so each row
times the critic's update alone and the two frameworks do the same work. Real and fake
images are synthetic (U(−1, 1) and tanh of a normal draw); the time does not depend on them.

PyTorch runs an equivalent critic (``torch_critic``) started from the flax critic's weights
(``copy_params_to_torch``); tests/experiments/test_bench_gradient_penalty.py holds the two
to the same scores, loss terms and penalty gradients. TensorFlow's 'same' padding of a 5×5,
stride-2 conv pads 1 row/column before and 2 after (the odd pixel goes after); ``nn.Conv2d``
pads symmetrically, so each conv is preceded by an explicit ``nn.ZeroPad2d((1, 2, 1, 2))``
and runs with ``padding=0``. flax's ``padding="SAME"`` is TensorFlow's rule.

The rows, by what each isolates:

1. XLA's own convs against ``kernels.conv.patch_matmul_conv`` (the critic's
   ``conv_general_dilated`` field; the GAN experiment's ``model.dcgan.conv="auto"`` picks it
   on CPU), plain and penalised.
2. Group "last conv ∇ₓ": the input gradient of the last conv (8×8 → 4×4), a convolution
   whose input is spatially smaller than its kernel. XLA:CPU's algebraic simplifier swaps
   its operands (a window reversal, ``rhs_reversal`` in the optimised HLO); the group times
   it as XLA compiles it, through ``patch_matmul_conv``, and compiled without ``algsimp``.
3. The penalised step with and without the shared forward.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from experiments.benchmarks import harness
from kernels import conv as conv_lib
from kernels import gan_losses, gradient_penalty
from models import dcgan

K, P = 2.0, 6.0                            # the seed's W-div k and p (docs/wgan_div.md §2.2)
LEARNING_RATE, BETA1, BETA2 = 2e-4, 0.5, 0.999  # the seed's (docs/wgan_div.md §4.1)
ADAM_EPS = 1e-7                            # Keras's Adam ε (docs/index.md §2 item 5)
# Keras's BN (docs/index.md §2 item 3); PyTorch's momentum is 1 − 0.99.
KERAS_BN_EPS, KERAS_BN_MOMENTUM = 1e-3, 0.99
NEGATIVE_SLOPE = 0.2                       # the W-div critic's (docs/wgan_div.md §3.1)

CONVS = ("xla", "patch_matmul")
# None: the plain step; the penalised step with the penalty's own forward passes, or sharing
# the scoring passes (`critic_scores_and_penalty`'s share_forward).
PENALTIES = (None, "separate_forward", "shared_forward")
# The target penalised / plain step time (docs/wgan_div.md §8; PyTorch users report about 5×).
TARGET_PENALTY_OVERHEAD = 3.0


class Size(NamedTuple):
    resolution: int
    batch: int


FULL = Size(resolution=64, batch=64)   # the paper code's and baselines' (docs/wgan_div.md §5.2)
QUICK = Size(resolution=32, batch=8)


# ----------------------------------------------------------------------------------------
# The JAX critic step.

CriticApply = Callable[[dict, jax.Array], tuple[jax.Array, dict]]


def critic_apply(model: nn.Module, conv: str = "xla") -> CriticApply:
    """The critic in training mode: (variables, x (B, R, R, 3)) → (scores (B,), state).

    Args:
      model: a ``models.dcgan.Critic``.
      conv: "xla" (``lax.conv_general_dilated``) or "patch_matmul"
        (``kernels.conv.patch_matmul_conv``), set as the critic's ``conv_general_dilated``.

    Returns:
      A function of the critic's variables and a batch giving its scores and its updated
      ``{"batch_stats": ...}`` (each call normalises with its own batch's statistics).
    """
    if conv not in CONVS:
        raise ValueError(f"conv must be one of {CONVS}, got {conv!r}")
    model = model.clone(conv_general_dilated=conv_lib.conv_for_backend(conv))

    def apply(variables, x):
        return model.apply(variables, x, train=True, mutable=["batch_stats"])

    return apply


def _check_penalty(penalty) -> None:
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def jax_critic_loss(params, batch_stats, x_real, x_fake, *, apply: CriticApply,
                    penalty: str | None):
    """The seed's critic loss E[T(fake)] − E[T(real)] (+ the W-div penalty), docs/wgan_div.md §2.

    The GAN experiment's computation: `kernels.gradient_penalty.critic_scores_and_penalty`.

    Args:
      params, batch_stats: the critic's variables.
      x_real, x_fake: (B, R, R, 3) float32 batches, each through the critic in its own call.
      apply: from ``critic_apply``.
      penalty: None (plain step); "separate_forward": the W-div penalty (k = 2, p = 6,
        ``real_and_fake``) on the penalty's own forward passes; "shared_forward": the same
        penalty from the scoring passes' pullbacks (the experiment's setting).

    Returns:
      (loss, (batch_stats after the real then the fake call, {"wasserstein", "penalty"})),
      scalars float32.
    """
    _check_penalty(penalty)
    kind = "none" if penalty is None else "wgan_div"

    def critic(x, batch_stats):
        scores, state = apply({"params": params, "batch_stats": batch_stats}, x)
        return scores, state["batch_stats"]

    real_scores, fake_scores, penalty_value, batch_stats = (
        gradient_penalty.critic_scores_and_penalty(
            critic, batch_stats, x_real, x_fake,
            gradient_penalty.Penalty(kind=kind, k=K, p=P, strategy="real_and_fake"),
            share_forward=penalty == "shared_forward"))
    wasserstein = gan_losses.wasserstein_critic_loss(real_scores, fake_scores)
    terms = {"wasserstein": wasserstein, "penalty": penalty_value}
    return wasserstein + penalty_value, (batch_stats, terms)


def critic_optimizer() -> optax.GradientTransformation:
    """Adam(2e-4, β1 0.5, β2 0.999) with Keras's ε (docs/wgan_div.md §4.1, docs/index.md §2)."""
    return optax.adam(LEARNING_RATE, b1=BETA1, b2=BETA2, eps=ADAM_EPS)


def jax_critic_step(model: nn.Module, *, conv: str = "xla", penalty: str | None = None):
    """One critic update, a pure function to jit.

    Args:
      model: a ``models.dcgan.Critic``.
      conv: see ``critic_apply``.
      penalty: see ``jax_critic_loss``.

    Returns:
      step(params, batch_stats, opt_state, x_real, x_fake) → (params, batch_stats,
      opt_state, loss), the optimiser being ``critic_optimizer()``.
    """
    _check_penalty(penalty)
    apply, optimizer = critic_apply(model, conv), critic_optimizer()
    loss_and_grad = jax.value_and_grad(
        functools.partial(jax_critic_loss, apply=apply, penalty=penalty), has_aux=True)

    def step(params, batch_stats, opt_state, x_real, x_fake):
        (loss, (batch_stats, _)), grads = loss_and_grad(params, batch_stats, x_real, x_fake)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    return step


# ----------------------------------------------------------------------------------------
# The PyTorch critic step.


def tf_same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding of one spatial axis: (before, after), the odd one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def torch_critic(resolution: int, base_channels: int = 64, kernel_size: int = 5):
    """The PyTorch twin of ``models.dcgan.Critic`` (W-div row, docs/wgan_div.md §3.2), NCHW.

    [ZeroPad2d(TF 'same') → Conv2d k×k/2, no bias → BatchNorm2d (all but the first) →
    LeakyReLU(0.2)] per width of ``dcgan.critic_widths`` → global average pool →
    Linear(no bias). BatchNorm2d(eps=1e-3, momentum=0.01) is Keras's (0.99, 1e-3).

    Returns:
      A ``torch.nn.Sequential`` mapping (B, 3, R, R) to (B,) scores.
    """
    from torch import nn as tnn

    layers, channels, size = [], 3, resolution
    for i, width in enumerate(dcgan.critic_widths(resolution, base_channels)):
        before, after = tf_same_padding(size, kernel_size, 2)
        layers += [tnn.ZeroPad2d((before, after, before, after)),
                   tnn.Conv2d(channels, width, kernel_size, stride=2, bias=False)]
        if i > 0:  # no BN after the first conv (docs/wgan_div.md §3.1)
            layers.append(tnn.BatchNorm2d(width, eps=KERAS_BN_EPS,
                                          momentum=1 - KERAS_BN_MOMENTUM))
        layers.append(tnn.LeakyReLU(NEGATIVE_SLOPE))
        channels, size = width, -(-size // 2)
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(),
               tnn.Linear(channels, 1, bias=False), tnn.Flatten(0)]
    return tnn.Sequential(*layers)


def _torch_layers(critic):
    from torch import nn as tnn

    def of_type(kind):
        return [m for m in critic if isinstance(m, kind)]

    return of_type(tnn.Conv2d), of_type(tnn.BatchNorm2d), of_type(tnn.Linear)


def copy_params_to_torch(params, critic) -> None:
    """Copies a flax critic's parameters into ``torch_critic`` (in place).

    Conv kernels HWIO → OIHW, BN scale/bias → weight/bias, Dense (F, 1) → Linear (1, F).

    Raises:
      ValueError: if the two nets do not have the same layers.
    """
    import torch

    convs, norms, (linear,) = _torch_layers(critic)
    names = sorted(params, key=lambda name: (name.split("_")[0], int(name.split("_")[1])))
    expected = ([f"BatchNorm_{i}" for i in range(len(norms))]
                + [f"Conv_{i}" for i in range(len(convs))] + ["Dense_0"])
    if names != expected:
        raise ValueError(f"flax params {names} do not match the torch critic's layers "
                         f"{expected}")

    def tensor(array, *axes):
        return torch.from_numpy(np.array(array).transpose(*axes).copy())

    with torch.no_grad():
        for i, conv in enumerate(convs):
            conv.weight.copy_(tensor(params[f"Conv_{i}"]["kernel"], 3, 2, 0, 1))
        for i, norm in enumerate(norms):
            norm.weight.copy_(tensor(params[f"BatchNorm_{i}"]["scale"], 0))
            norm.bias.copy_(tensor(params[f"BatchNorm_{i}"]["bias"], 0))
        linear.weight.copy_(tensor(params["Dense_0"]["kernel"], 1, 0))


def torch_critic_loss(critic, x_real, x_fake, *, penalised: bool):
    """The same loss as ``jax_critic_loss`` in PyTorch; the penalty by autograd.grad.

    Args:
      critic: from ``torch_critic``, in training mode.
      x_real, x_fake: (B, 3, R, R) float32 tensors, each through the critic in its own call.
      penalised: add k·½·(mean ‖∇ₓ Σ T(x_real)‖^p + mean ‖∇ₓ Σ T(x_fake)‖^p), the gradients
        taken with ``create_graph=True`` so that the loss can be differentiated again.

    Returns:
      (loss, {"wasserstein", "penalty"}), 0-d tensors.
    """
    import torch

    x_real = x_real.detach().requires_grad_(penalised)
    x_fake = x_fake.detach().requires_grad_(penalised)
    real_scores, fake_scores = critic(x_real), critic(x_fake)
    wasserstein = fake_scores.mean() - real_scores.mean()
    penalty = torch.zeros(())
    if penalised:
        (real_gradient,) = torch.autograd.grad(real_scores.sum(), x_real, create_graph=True)
        (fake_gradient,) = torch.autograd.grad(fake_scores.sum(), x_fake, create_graph=True)

        def mean_norm_power(gradient):
            return gradient.square().flatten(1).sum(1).pow(P / 2).mean()

        penalty = K * (mean_norm_power(real_gradient) + mean_norm_power(fake_gradient)) / 2
    return wasserstein + penalty, {"wasserstein": wasserstein, "penalty": penalty}


def torch_critic_step(critic, optimizer, x_real, x_fake, *, penalised: bool):
    """One critic update in PyTorch: zero_grad, loss, backward, Adam step. Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss, _ = torch_critic_loss(critic, x_real, x_fake, penalised=penalised)
    loss.backward()
    optimizer.step()
    return loss.detach()


def torch_optimizer(critic):
    """``torch.optim.Adam`` with ``critic_optimizer()``'s settings (same update rule as optax)."""
    import torch

    return torch.optim.Adam(critic.parameters(), lr=LEARNING_RATE, betas=(BETA1, BETA2),
                            eps=ADAM_EPS)


# ----------------------------------------------------------------------------------------
# Shared set-up.


def synthetic_batches(size: Size, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x_real, x_fake), each (B, R, R, 3) float32 in [−1, 1]: U(−1, 1) and tanh(N(0, 1))."""
    rng = np.random.default_rng(seed)
    shape = (size.batch, size.resolution, size.resolution, 3)
    x_real = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    x_fake = np.tanh(rng.standard_normal(shape)).astype(np.float32)
    return x_real, x_fake


def init_critic(size: Size, seed: int = 0):
    """The W-div critic of ``models.dcgan.CRITICS`` and its initial variables."""
    model = dcgan.CRITICS["wgan_div"](resolution=size.resolution)
    x = jnp.zeros((size.batch, size.resolution, size.resolution, 3), jnp.float32)
    variables = model.init(jax.random.key(seed), x, train=True)
    return model, variables["params"], variables["batch_stats"]


def to_nchw(x: np.ndarray):
    """A (B, H, W, C) numpy array as a contiguous (B, C, H, W) torch tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------------------
# The benchmark.


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _cores() -> int:
    # XLA:CPU sizes its thread pool by the CPUs this process may run on.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _last_conv_input_gradient(report: harness.Report, size: Size, repeats: int | None) -> None:
    """Group "last conv ∇ₓ": the last conv's input gradient three ways (docstring, 2)."""
    widths = dcgan.critic_widths(size.resolution)
    side = dcgan.FEATURE_MAP_SIZE * 2
    x = jnp.ones((size.batch, side, side, widths[-2]), jnp.float32)
    kernel = jnp.full((5, 5, widths[-2], widths[-1]), 0.01, jnp.float32)
    cotangent = jnp.ones((size.batch, side // 2, side // 2, widths[-1]), jnp.float32)
    flops = 2.0 * cotangent.size * 25 * widths[-2]
    group = f"{size.resolution}px b{size.batch} last conv ∇ₓ {side}×{side}→{side // 2}×{side // 2}"

    def input_gradient(conv):
        def gradient(x, kernel, cotangent):
            _, pullback = jax.vjp(lambda x: conv(x, kernel, (2, 2), "SAME",
                                                 dimension_numbers=conv_lib.NHWC), x)
            return pullback(cotangent)[0]
        return gradient

    report.time_jax(group, "XLA conv (swapped operands)", input_gradient(lax.conv_general_dilated),
                    x, kernel, cotangent, baseline=True, flops=flops, repeats=repeats)
    report.time_jax(group, "patch_matmul_conv", input_gradient(conv_lib.patch_matmul_conv),
                    x, kernel, cotangent, flops=flops, repeats=repeats)
    start = time.perf_counter()
    without_algsimp = jax.jit(input_gradient(lax.conv_general_dilated)).lower(
        x, kernel, cotangent).compile(compiler_options={"xla_disable_hlo_passes": "algsimp"})
    compile_s = time.perf_counter() - start
    report.time_call(group, "XLA conv, compiled without algsimp",
                     lambda: without_algsimp(x, kernel, cotangent), sync=jax.block_until_ready,
                     flops=flops, repeats=repeats, xla_compile_s=compile_s)


# (label, conv, penalty): the model with XLA's convs, then with patch-matmul convs, then
# with the shared forward (the GAN experiment's critic step on CPU).
JAX_VARIANTS = (
    ("JAX plain, XLA convs", "xla", None),
    ("JAX penalised, XLA convs", "xla", "separate_forward"),
    ("JAX plain, patch-matmul convs", "patch_matmul", None),
    ("JAX penalised, patch-matmul convs", "patch_matmul", "separate_forward"),
    ("JAX penalised, patch-matmul convs, one forward per batch", "patch_matmul",
     "shared_forward"),
)
SLOW_REPEATS = 2


def run(report: harness.Report, quick: bool) -> None:
    """Times the plain and penalised critic steps in JAX and PyTorch (module docstring)."""
    size = QUICK if quick else FULL
    repeats = 1 if quick else None
    group = f"{size.resolution}px b{size.batch} critic step"
    load_before = os.getloadavg()[0]

    model, params, batch_stats = init_critic(size)
    x_real, x_fake = synthetic_batches(size)
    opt_state = critic_optimizer().init(params)
    state = (params, batch_stats, opt_state, jnp.asarray(x_real), jnp.asarray(x_fake))

    torch = _import_torch()
    times: dict[str, float] = {}
    if torch is None:
        report.note("PyTorch is not installed (the [bench] extra): JAX rows only")
    else:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(_cores())
        try:
            critic = torch_critic(size.resolution).train()
            copy_params_to_torch(params, critic)
            optimizer = torch_optimizer(critic)
            real_t, fake_t = to_nchw(x_real), to_nchw(x_fake)
            shapes = f"float32[{size.batch}, 3, {size.resolution}, {size.resolution}] ×2"
            for penalised, label in ((True, "PyTorch penalised"), (False, "PyTorch plain")):
                row = report.time_call(
                    group, label,
                    functools.partial(torch_critic_step, critic, optimizer, real_t, fake_t,
                                      penalised=penalised),
                    baseline=penalised, repeats=repeats, shapes=shapes,
                    threads=torch.get_num_threads())
                times[label] = row.median_s
        finally:
            torch.set_num_threads(previous_threads)

    for label, conv, penalty in JAX_VARIANTS:
        # The penalised step with XLA's convs is the slowest row by far: fewer timed runs.
        slow = conv == "xla" and penalty is not None and not quick
        row = report.time_jax(group, label, jax_critic_step(model, conv=conv, penalty=penalty),
                              *state, repeats=min(report.repeats, SLOW_REPEATS) if slow
                              else repeats)
        times[label] = row.median_s

    _last_conv_input_gradient(report, size, repeats)
    _record_ratios(report, times)
    report.note(f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
                f"on {os.cpu_count()} cores")


def _record_ratios(report: harness.Report, times: dict[str, float]) -> None:
    """The penalised / plain ratios (target ≤ 3×) and the fastest JAX step against PyTorch."""
    xla_plain, xla_penalised, patch_plain, patch_penalised, patch_shared = (
        label for label, _, _ in JAX_VARIANTS)
    for what, penalised, plain in (
            ("JAX, XLA convs", xla_penalised, xla_plain),
            ("JAX, patch-matmul convs, penalty's own forward", patch_penalised, patch_plain),
            ("JAX, patch-matmul convs, one forward per batch", patch_shared, patch_plain)):
        report.finding(f"penalised / plain step time, {what}", times[penalised] / times[plain],
                       target=TARGET_PENALTY_OVERHEAD, at_least=False)
    if "PyTorch plain" not in times:
        return
    report.finding("penalised / plain step time, PyTorch (its users report about 5×)",
                   times["PyTorch penalised"] / times["PyTorch plain"])
    best = min((label for label, _, penalty in JAX_VARIANTS if penalty), key=times.get)
    report.finding(f"PyTorch's penalised step time / the fastest JAX one's ({best}); PyTorch "
                   f"on {_cores()} threads, XLA:CPU on {_cores()} cores",
                   times["PyTorch penalised"] / times[best], speed=True)
    report.note("the generator is excluded in both frameworks (a fixed fake batch); "
                "× baseline = PyTorch's penalised time / the row's time; the penalised "
                f"XLA-conv row of the full size has {SLOW_REPEATS} timed runs")
