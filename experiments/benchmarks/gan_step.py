"""GAN architectures: one critic + generator iteration of the dcgan, resnet and selfmod presets,
JAX vs PyTorch on this CPU (docs/gan_architectures.md).

What is timed (float32, one process): one iteration as `experiments.gan.train` runs it with
the steps forced to 1 D : 1 G: the critic update (real and fake batches in separate calls,
the preset's loss and penalty, Adam) and the generator update (fresh z, Adam). The full size
is 64×64 at batch 64, base width 64, z = 128 (100 for dcgan); ``quick`` is 32×32 at batch 8,
base width 8. JAX's step is the experiment's own (`train.make_state_and_step`, convs as
`model.dcgan.conv="auto"` resolves them); PyTorch runs the same layer lists (`torch_nets`),
checked by parameter count, with ``torch.autograd.grad(create_graph=True)`` for the penalty.

Besides the full iteration, each framework's critic and generator updates are timed alone,
so when JAX is slower the note says which half the time goes to; on CPU a note also gives
each framework's op time by kind for one iteration (convolutions and matmuls, data
movement, the rest; `harness.op_time_by_kind`).
"""

from __future__ import annotations

import jax
import numpy as np

from experiments import configs, gan
from experiments.benchmarks import harness
from experiments.gan import train as gan_train

PRESETS = ("dcgan", "resnet", "selfmod")


def _config(preset: str, quick: bool):
    config = gan.get_config(preset)
    size, batch, base = (32, 8, 8) if quick else (64, 64, 64)
    configs.apply_overrides(config, [
        "data.kind=images", "data.path=unused", f"data.resolution={size}",
        f"batch_size={batch}", f"model.dcgan.base_channels={base}", "steps.critic=1",
        "steps.generator=1"])
    return config


def _jax_rows(report: harness.Report, preset: str, config) -> dict[str, float]:
    nets = gan_train.build_nets(config)
    init, step = gan_train.make_state_and_step(config, nets)
    state = jax.jit(init)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"real": rng.integers(0, 256, (config.batch_size, *nets.sample_shape),
                                  dtype=np.uint8)}
    key = jax.random.PRNGKey(1)
    count = sum(int(np.prod(x.shape)) for name in ("critic", "generator")
                for x in jax.tree.leaves(state[name]["params"]))

    def iteration(state, batch, key):
        return step(state, batch, key)[0]

    full = report.time_jax(preset, "jax iteration", iteration, state, batch, key, params=count)
    if jax.default_backend() == "cpu":
        report.note_op_times(harness.op_time_by_kind(iteration, state, batch, key))
    return {"full": full.median_s, "params": count}


def torch_nets(preset: str, config):
    """(generator, critic) torch modules with the preset's layer lists (NCHW)."""
    import torch
    from torch import nn

    size, base = config.data.resolution, config.model.dcgan.base_channels
    z_dim = config.model.dcgan.z_dim
    layers = int(np.log2(size)) - 3
    widths = [base * 2 ** i for i in range(layers + 1)]

    class SelfModBN(nn.Module):
        def __init__(self, channels, hidden):
            super().__init__()
            self.bn = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01, affine=False)
            self.gamma = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(),
                                       nn.Linear(hidden, channels))
            self.beta = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(),
                                      nn.Linear(hidden, channels))

        def forward(self, x, z):
            return (self.bn(x) * (1 + self.gamma(z))[:, :, None, None]
                    + self.beta(z)[:, :, None, None])

    def norm2d(channels):
        if config.model.norm == "self_mod":
            return SelfModBN(channels, config.model.self_mod_hidden)
        return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)

    def apply_norm(module, x, z):
        return module(x, z) if isinstance(module, SelfModBN) else module(x)

    class DcganGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            self.kernel = 4 if config.model.dcgan.generator == "ogan" else 5
            self.dense = nn.Linear(z_dim, 16 * widths[-1])
            self.flat_norm = (nn.BatchNorm1d(16 * widths[-1], eps=1e-3, momentum=0.01)
                              if config.model.norm == "bn" else norm2d(widths[-1]))
            rev = widths[::-1]
            k, pad = self.kernel, (self.kernel - 1) // 2
            out_pad = 1 if k % 2 else 0
            self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, k, 2, pad, out_pad)
                                     for a, b in zip(rev, rev[1:] + [3]))
            self.norms = nn.ModuleList(norm2d(c) for c in rev[1:])

        def forward(self, z):
            h = self.dense(z)
            if isinstance(self.flat_norm, nn.BatchNorm1d):
                h = self.flat_norm(h).view(-1, widths[-1], 4, 4)
            else:
                h = apply_norm(self.flat_norm, h.view(-1, widths[-1], 4, 4), z)
            h = torch.relu(h)
            for up, norm in zip(self.ups[:-1], self.norms):
                h = torch.relu(apply_norm(norm, up(h), z))
            return torch.tanh(self.ups[-1](h))

    class DcganCritic(nn.Module):
        def __init__(self, flatten: bool, bias: bool):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 5, 2, 2, bias=bias)
                                       for a, b in zip([3] + widths[:-1], widths))
            self.norms = nn.ModuleList(nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)
                                       for c in widths[1:])
            self.flatten = flatten
            self.head = nn.Linear(widths[-1] * (16 if flatten else 1), 1, bias=flatten)

        def forward(self, x):
            h = x
            for i, conv in enumerate(self.convs):
                h = conv(h)
                h = self.norms[i - 1](h) if i else h
                h = torch.nn.functional.leaky_relu(h, 0.3 if self.flatten else 0.2)
            h = h.flatten(1) if self.flatten else h.mean((2, 3))
            return self.head(h)[:, 0]

    class ResGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            rev = widths[::-1]
            outs = rev[1:] + [rev[-1]]
            self.dense = nn.Linear(z_dim, 16 * rev[0])
            self.blocks = nn.ModuleList(nn.ModuleDict({
                "n1": norm2d(a), "c1": nn.Conv2d(a, b, 3, 1, 1), "n2": norm2d(b),
                "c2": nn.Conv2d(b, b, 3, 1, 1),
                "s": nn.Conv2d(a, b, 1) if a != b else nn.Identity()})
                for a, b in zip(rev, outs))
            self.final_norm, self.out = norm2d(outs[-1]), nn.Conv2d(outs[-1], 3, 3, 1, 1)

        def forward(self, z):
            up = torch.nn.Upsample(scale_factor=2, mode="nearest")
            h = self.dense(z).view(-1, widths[-1], 4, 4)
            for b in self.blocks:
                f = b["c1"](up(torch.relu(apply_norm(b["n1"], h, z))))
                f = b["c2"](torch.relu(apply_norm(b["n2"], f, z)))
                h = b["s"](up(h)) + config.model.residual_scale * f
            return torch.tanh(self.out(torch.relu(apply_norm(self.final_norm, h, z))))

    class ResCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.ModuleDict({
                "c1": nn.Conv2d(a, b, 3, 1, 1), "n": nn.BatchNorm2d(b, eps=1e-3, momentum=0.01),
                "c2": nn.Conv2d(b, b, 3, 1, 1),
                "s": nn.Conv2d(a, b, 1) if a != b else nn.Identity()})
                for a, b in zip([3] + widths[:-1], widths))
            self.head = nn.Linear(widths[-1], 1)

        def forward(self, x):
            act, pool = torch.nn.functional.leaky_relu, torch.nn.functional.avg_pool2d
            h = x
            for i, b in enumerate(self.blocks):
                f = b["c1"](act(h, 0.2) if i else h)
                f = b["c2"](act(b["n"](f), 0.2))
                h = pool(b["s"](h), 2) + config.model.residual_scale * pool(f, 2)
            return self.head(act(h, 0.2).mean((2, 3)))[:, 0]

    if config.model.trunk == "resnet":
        return ResGenerator(), ResCritic()
    return DcganGenerator(), DcganCritic(flatten=config.model.dcgan.critic == "dcgan",
                                         bias=config.model.dcgan.critic == "dcgan")


def _torch_rows(report: harness.Report, preset: str, config) -> dict[str, float]:
    import torch

    generator, critic = torch_nets(preset, config)
    batch, z_dim = config.batch_size, config.model.dcgan.z_dim
    size = config.data.resolution
    adam = dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-7)
    g_opt = torch.optim.Adam(generator.parameters(), **adam)
    d_opt = torch.optim.Adam(critic.parameters(), **adam)
    real = torch.rand(batch, 3, size, size) * 2 - 1
    penalised = config.penalty.kind == "wgan_div"

    def critic_update():
        fake = generator(torch.randn(batch, z_dim)).detach()
        x_real, x_fake = real.requires_grad_(penalised), fake.requires_grad_(penalised)
        s_real, s_fake = critic(x_real), critic(x_fake)
        if config.loss == "wasserstein":
            loss = s_fake.mean() - s_real.mean()
        else:
            loss = (torch.nn.functional.softplus(-s_real).mean()
                    + torch.nn.functional.softplus(s_fake).mean())
        if penalised:
            grads = torch.autograd.grad([s_real.sum(), s_fake.sum()], [x_real, x_fake],
                                        create_graph=True)
            p = config.penalty.p
            loss = loss + config.penalty.k * 0.5 * sum(
                (g.flatten(1).pow(2).sum(1) ** (p / 2)).mean() for g in grads)
        d_opt.zero_grad()
        loss.backward()
        d_opt.step()

    def generator_update():
        scores = critic(generator(torch.randn(batch, z_dim)))
        loss = (-scores.mean() if config.loss == "wasserstein"
                else torch.nn.functional.softplus(-scores).mean())
        g_opt.zero_grad()
        loss.backward()
        g_opt.step()

    def iteration():
        critic_update()
        generator_update()

    count = sum(p.numel() for m in (generator, critic) for p in m.parameters())
    shapes = f"{batch}×{size}²×3"
    full = report.time_call(preset, "torch iteration", iteration, shapes=shapes, params=count)
    report.note_op_times(harness.torch_op_time_by_kind(iteration))
    critic_row = report.time_call(preset, "torch critic update", critic_update, shapes=shapes)
    generator_row = report.time_call(preset, "torch generator update", generator_update,
                                     shapes=shapes)
    return {"full": full.median_s, "critic": critic_row.median_s,
            "generator": generator_row.median_s, "params": count}


def _jax_halves(report: harness.Report, preset: str, config) -> dict[str, float]:
    """JAX's critic and generator updates apart: an iteration with two critic updates
    minus one with one is a critic update; the rest of the 1:1 iteration is the generator's."""
    nets = gan_train.build_nets(config)
    init, step = gan_train.make_state_and_step(config, nets)
    state = jax.jit(init)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"real": rng.integers(0, 256, (config.batch_size, *nets.sample_shape),
                                  dtype=np.uint8)}
    # Two critic steps per iteration cost one more critic update: the difference is its time.
    two = config.copy_and_resolve_references()
    configs.apply_overrides(two, ["steps.critic=2"])
    _, step_two = gan_train.make_state_and_step(two, gan_train.build_nets(two))
    batch_two = {"real": np.concatenate([batch["real"]] * 2)}
    key = jax.random.PRNGKey(1)
    one_row = report.time_jax(preset, "jax iteration (again, for the split)",
                              lambda s, b, k: step(s, b, k)[0], state, batch, key)
    two_row = report.time_jax(preset, "jax iteration with 2 critic updates",
                              lambda s, b, k: step_two(s, b, k)[0], state, batch_two, key)
    critic_s = max(two_row.median_s - one_row.median_s, 0.0)
    return {"critic": critic_s, "generator": max(one_row.median_s - critic_s, 0.0)}


def run(report: harness.Report, quick: bool) -> None:
    """Times every preset in both frameworks; findings: PyTorch time / JAX time."""
    for preset in PRESETS:
        config = _config(preset, quick)
        jax_times = _jax_rows(report, preset, config)
        try:
            torch_times = _torch_rows(report, preset, config)
        except ImportError:
            report.note("PyTorch is not installed: JAX rows only (pip install torch)")
            continue
        if torch_times["params"] != jax_times["params"]:
            report.note(f"{preset}: parameter counts differ (jax {jax_times['params']:,}, "
                        f"torch {torch_times['params']:,}); the nets are not the same")
        ratio = torch_times["full"] / jax_times["full"]
        report.finding(f"{preset}: PyTorch iteration time / JAX's", ratio, target=1.0,
                       speed=True)
        if ratio < 1.0:
            halves = _jax_halves(report, preset, config)
            report.note(
                f"{preset}: JAX is slower; the critic update takes "
                f"{halves['critic'] * 1e3:.1f} ms in JAX vs {torch_times['critic'] * 1e3:.1f} "
                f"ms in PyTorch, the generator update {halves['generator'] * 1e3:.1f} ms vs "
                f"{torch_times['generator'] * 1e3:.1f} ms: the time goes to the "
                + ("critic (its double backward through the penalty)"
                   if halves["critic"] - torch_times["critic"]
                   > halves["generator"] - torch_times["generator"] else "generator")
                + " update")
