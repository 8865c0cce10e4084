"""Training and evaluation of the GAN experiment (docs/wgan_div.md): one jitted step, two
optimisers.

One training step (the trainer's unit) is one GAN iteration:

1. `steps.critic` critic updates, each on its own real batch and a fresh z. The trainer
   feeds one batch per step, so the batch holds all of them: "real" is
   (steps.critic · batch_size, ...) and is reshaped here to (steps.critic, batch_size, ...);
   the trainer's sharding of axis 0 over the data mesh stays valid. The critic sees real and
   fake samples in separate calls, so batch norm normalises each with its own statistics
   (docs/index.md §2, docs/wgan_div.md §4.2); its `batch_stats` (BN moving averages,
   spectral-norm vectors) are threaded from the real call to the fake call and kept.
2. `steps.generator` generator updates, each with a fresh z (docs/wgan_div.md §4.2: the G
   step draws its own z batch; §4.1: DCGAN's 1 D : 2 G).

The trainer keeps the EMA copy of the generator's parameters (`trainer.ema_decay`, decay
min(ema_decay, (1 + t)/(10 + t)) at iteration t) and evaluates and checkpoints with it; the
live generator is evaluated too on 2-D mixtures ("live_" metrics).

With `trainer.compute_dtype = "bfloat16"` both networks run forward and backward in
bfloat16 (parameters and inputs cast in `_apply`); scores, losses, penalties and the
batch-norm moving averages stay float32.

Where a network runs without being trained (the generator inside a critic update, the
critic inside a generator update, the critic inside the penalty), it runs in training mode
(batch statistics, as Keras's `fit` does in the seed; a fresh power iteration for spectral
norm) and the state updates it produces are dropped. The penalty's critic closure in
particular normalises with the batch statistics of the points it is given but contributes
nothing to the moving averages: a penalty term must not move the critic's state by being
evaluated.

Randomness: `key` (the trainer's fold_in(seed, step)) is split into one key per update;
nothing else is random.

Class-conditional runs (labelled images, docs/gan_architectures.md): the batch also holds
"labels" (n_D·B,); each critic update generates its fakes with its real batch's labels (so
real and fake batches have the same class mix), the generator updates use the first critic
batch's labels, and the critic scores with its projection term. O-GAN (loss "ogan") has its
own joint step in `experiments.gan.ogan`.

Glossary of shapes: B batch size, n_D critic steps per iteration, Z latent size,
X one sample ((2,) for mixtures, (R, R, 3) for images).
"""

import dataclasses
import functools
import json
import pathlib
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import data as data_lib
from experiments import evaluation, trainer
from experiments.configs import ConfigError
from experiments.gan import config as config_lib
from experiments.gan import input_pipeline, mixture, ogan, plots
from kernels import conv, gan_losses, gradient_penalty
from models import gan_norms, gan_trunks, mlp_gan

PyTree = dict
# penalty(critic_fn, x_real, x_fake, key) -> scalar, critic_fn: (B, X) -> (B,)
PenaltyFn = Callable[[Callable, jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Nets:
    """The two networks and the shapes they exchange.

    Attributes:
      critic: (B, X) → (B,) scores; called with `train=` keyword.
      generator: (B, Z) → (B, X); called with `train=` keyword.
      z_dim: Z.
      sample_shape: X.
      num_classes: K > 0 when both nets take (B,) labels after their input; 0: none.
    """

    critic: nn.Module
    generator: nn.Module
    z_dim: int
    sample_shape: tuple[int, ...]
    num_classes: int = 0


def trunk_spec(config: ml_collections.ConfigDict, num_classes: int = 0
               ) -> gan_trunks.TrunkSpec:
    """The `models.gan_trunks.TrunkSpec` of an image run's config."""
    model = config.model
    attention = None
    if model.attention.resolution:
        attention = functools.partial(gan_norms.SelfAttention,
                                      pattern=config_lib.attention_pattern(config))
    forward = conv.conv_for_backend(model.dcgan.conv)
    transpose = conv.conv_for_backend(model.dcgan.conv, transpose=True)
    fuse = model.fuse_resampling_convs
    return gan_trunks.TrunkSpec(
        resolution=config.data.resolution, z_dim=model.dcgan.z_dim,
        base_channels=model.dcgan.base_channels,
        norm=gan_norms.norm_factory(model.norm, num_classes=num_classes,
                                    self_mod_hidden=model.self_mod_hidden),
        conv=forward, conv_transpose=transpose,
        attention=attention, attention_resolution=model.attention.resolution,
        num_classes=num_classes,
        critic_outputs=model.dcgan.z_dim if config.loss == config_lib.OGAN else 1,
        residual_scale=model.residual_scale,
        upsample_conv=conv.nearest_upsample_conv(transpose) if fuse else None,
        pooled_conv=conv.average_pooled_conv(forward) if fuse else None,
        mapping_layers=model.mapping_layers,
        dcgan_generator=model.dcgan.generator, dcgan_critic=model.dcgan.critic,
        sn_power_iterations=model.sn_power_iterations)


def build_nets(config: ml_collections.ConfigDict, num_classes: int = 0) -> Nets:
    """The MLP nets for mixtures; for images the configured trunk of `models.gan_trunks`
    (`model.trunk`) with the generator norm, attention and `num_classes` classes."""
    if config.data.kind == "mixture":
        mlp = config.model.mlp
        return Nets(
            critic=mlp_gan.MLPCritic(width=mlp.width, num_hidden=mlp.num_hidden,
                                     spectral_norm=mlp.spectral_norm,
                                     sn_power_iterations=config.model.sn_power_iterations),
            generator=mlp_gan.MLPGenerator(z_dim=mlp.z_dim, width=mlp.width,
                                           num_hidden=mlp.num_hidden),
            z_dim=mlp.z_dim, sample_shape=(2,))
    resolution = config.data.resolution
    nets = gan_trunks.build(config.model.trunk, trunk_spec(config, num_classes))
    return Nets(critic=nets.critic, generator=nets.generator, z_dim=config.model.dcgan.z_dim,
                sample_shape=(resolution, resolution, 3), num_classes=num_classes)


def make_optimizers(config: ml_collections.ConfigDict
                    ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(critic, generator) Adam optimisers, one per network (docs/wgan_div.md §4.1)."""
    def adam(settings):
        return optax.adam(settings.learning_rate, b1=settings.b1, b2=settings.b2,
                          eps=settings.eps)
    return adam(config.optimizer.critic), adam(config.optimizer.generator)


def make_penalty(penalty: ml_collections.ConfigDict) -> gradient_penalty.Penalty:
    """The configured gradient penalty (docs/wgan_div.md §2.2) with its static values bound.

    A `kernels.gradient_penalty.Penalty`: `make_train_step` hands it to
    `critic_scores_and_penalty`, and it is also a `PenaltyFn`,
    `(critic_fn, x_real, x_fake, key) -> scalar` with `critic_fn` mapping (B, *X) to (B,).

    Raises:
      ConfigError: an unknown `penalty.kind`.
    """
    if penalty.kind not in gradient_penalty.PENALTY_KINDS:
        raise ConfigError(f"unknown penalty.kind {penalty.kind!r}; valid: "
                          f"{config_lib.PENALTIES}")
    return gradient_penalty.Penalty(kind=penalty.kind, k=penalty.k, p=penalty.p,
                                    weight=penalty.weight, center=penalty.center,
                                    strategy=penalty.strategy)


def _apply(module: nn.Module, params, collections, x, train: bool = True, dtype=None,
           labels=None):
    """module(x[, labels]) with `collections` (e.g. batch_stats); returns (output, new
    collections).

    With `dtype` (e.g. bfloat16) the parameters and x are cast to it for the computation
    and the output comes back as float32; the collections keep their own dtype. `labels`
    (B,) ints go to class-conditional nets (None: the call has no labels argument).
    """
    if dtype is not None:
        params, x = trainer.cast_to_compute((params, x), dtype)
    inputs = (x,) if labels is None else (x, labels)
    out, updates = module.apply({"params": params, **collections}, *inputs, train=train,
                                mutable=["batch_stats"])
    return out.astype(jnp.float32), {**collections, **updates}


def make_init_state(nets: Nets, optimizers, batch_size: int) -> Callable:
    """key → the initial state {"step", "critic": {...}, "generator": {...}}."""
    critic_optimizer, generator_optimizer = optimizers

    def init_state(key):
        critic_key, generator_key = jax.random.split(key)
        x = jnp.zeros((batch_size, *nets.sample_shape), jnp.float32)
        z = jnp.zeros((batch_size, nets.z_dim), jnp.float32)
        labels = (jnp.zeros((batch_size,), jnp.int32),) if nets.num_classes else ()
        critic_vars = dict(nets.critic.init(critic_key, x, *labels, train=False))
        generator_vars = dict(nets.generator.init(generator_key, z, *labels, train=False))
        critic_params = critic_vars.pop("params")
        generator_params = generator_vars.pop("params")
        return {
            "step": jnp.zeros((), jnp.int32),
            "critic": {"params": critic_params, "collections": critic_vars,
                       "opt_state": critic_optimizer.init(critic_params)},
            "generator": {"params": generator_params, "collections": generator_vars,
                          "opt_state": generator_optimizer.init(generator_params)},
        }

    return init_state


def make_train_step(nets: Nets, optimizers, gan_loss: gan_losses.GanLoss, penalty_fn: PenaltyFn,
                    *, critic_steps: int, generator_steps: int, compute_dtype=None) -> Callable:
    """The pure `(state, batch, key) -> (state, metrics)` GAN iteration the trainer jits.

    Args:
      nets: critic and generator.
      optimizers: (critic, generator) optax transformations.
      gan_loss: the critic and generator losses (`kernels.gan_losses`).
      penalty_fn: added to the critic loss (see `make_penalty`).
      critic_steps: critic updates per iteration, n_D ≥ 1.
      generator_steps: generator updates per iteration, ≥ 1.
      compute_dtype: the dtype both nets compute in (None: float32; see `_apply`).

    Returns:
      train_step(state, {"real": (n_D·B, *X) uint8 or float[, "labels": (n_D·B,) int]},
      key); metrics: critic_loss
      (= "loss", the GAN loss plus the penalty), penalty, w_distance (mean real score − mean
      fake score), generator_loss and both nets' grad and param norms, each averaged over
      the iteration's updates.
    """
    critic_optimizer, generator_optimizer = optimizers
    conditional = nets.num_classes > 0

    def generate(generator, z, labels):
        fake, _ = _apply(nets.generator, generator["params"], generator["collections"], z,
                         dtype=compute_dtype, labels=labels)
        return fake

    def critic_objective(params, collections, x_real, x_fake, labels, key):
        def critic_fn(x, collections):  # train mode: batch statistics (module docstring)
            return _apply(nets.critic, params, collections, x, dtype=compute_dtype,
                          labels=labels)

        # The penalty's ∇ₓ on the real and fake batches reuses the passes that scored them
        # wherever that is the same function: a spectrally normalised critic's scores depend
        # on the stored power-iteration vector, so its penalty keeps calls of its own.
        real_scores, fake_scores, penalty, collections = (
            gradient_penalty.critic_scores_and_penalty(
                critic_fn, collections, x_real, x_fake, penalty_fn, key,
                share_forward=not getattr(nets.critic, "spectral_norm", False)))
        loss = gan_loss.critic(real_scores, fake_scores) + penalty
        w_distance = jnp.mean(real_scores) - jnp.mean(fake_scores)
        return loss, (collections, {"critic_loss": loss, "penalty": penalty,
                                    "w_distance": w_distance})

    def critic_update(generator, critic, inputs):
        x_real, labels, key = inputs                           # [B, *X], [B]
        labels = labels if conditional else None
        z_key, penalty_key = jax.random.split(key)
        z = jax.random.normal(z_key, (x_real.shape[0], nets.z_dim))
        x_fake = jax.lax.stop_gradient(generate(generator, z, labels))
        grads, (collections, metrics) = jax.grad(critic_objective, has_aux=True)(
            critic["params"], critic["collections"], x_real, x_fake, labels, penalty_key)
        params, opt_state, norms = trainer.apply_updates(
            critic["params"], grads, critic["opt_state"], critic_optimizer)
        critic = {"params": params, "collections": collections, "opt_state": opt_state}
        return critic, {**metrics, "critic_grad_norm": norms["grad_norm"],
                                     "critic_param_norm": norms["param_norm"]}

    def generator_objective(params, collections, critic, z, labels):
        fake, collections = _apply(nets.generator, params, collections, z, dtype=compute_dtype,
                                   labels=labels)
        scores, _ = _apply(nets.critic, critic["params"], critic["collections"], fake,
                           dtype=compute_dtype, labels=labels)
        loss = gan_loss.generator(scores)
        return loss, (collections, loss)

    def generator_update(labels, carry, key):
        critic, generator = carry
        z = jax.random.normal(key, (labels.shape[0], nets.z_dim))
        grads, (collections, loss) = jax.grad(generator_objective, has_aux=True)(
            generator["params"], generator["collections"], critic, z,
            labels if conditional else None)
        params, opt_state, norms = trainer.apply_updates(
            generator["params"], grads, generator["opt_state"], generator_optimizer)
        generator = {**generator, "params": params, "collections": collections,
                     "opt_state": opt_state}
        return (critic, generator), {
            "generator_loss": loss, "generator_grad_norm": norms["grad_norm"],
            "generator_param_norm": norms["param_norm"]}

    def train_step(state, batch, key):
        real = input_pipeline.to_model_range(batch["real"])
        if real.shape[0] % critic_steps:
            raise ValueError(f"batch['real'] has {real.shape[0]} samples, not a multiple of "
                             f"the {critic_steps} critic steps")
        batch_size = real.shape[0] // critic_steps
        real = real.reshape(critic_steps, batch_size, *real.shape[1:])  # [n_D, B, *X]
        labels = batch["labels"] if conditional else jnp.zeros(real.shape[:2], jnp.int32)
        labels = labels.reshape(critic_steps, batch_size)                # [n_D, B]
        critic_key, generator_key = jax.random.split(key)
        critic, critic_metrics = jax.lax.scan(
            functools.partial(critic_update, state["generator"]), state["critic"],
            (real, labels, jax.random.split(critic_key, critic_steps)))
        (critic, generator), generator_metrics = jax.lax.scan(
            functools.partial(generator_update, labels[0]), (critic, state["generator"]),
            jax.random.split(generator_key, generator_steps))
        metrics = {name: jnp.mean(values) for name, values in
                   {**critic_metrics, **generator_metrics}.items()}
        metrics["loss"] = metrics["critic_loss"]
        return {"step": state["step"] + 1, "critic": critic, "generator": generator}, metrics

    return train_step


# ----------------------------------------------------------------------------------------
# Sampling and evaluation.

# Folded into the run's seed for the fixed latent batches, so they never coincide with a
# training step's keys (those are fold_in(·, step) of a split of the same seed).
_FIXED_LATENTS_SALT = 0x6A4


def fixed_latents(seed: int, count: int, z_dim: int) -> np.ndarray:
    """The fixed latent batch of the sample grids and evaluations: (count, Z) float32, the
    same for every evaluation of a run (and after a resume), so the grids form a
    progression."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _FIXED_LATENTS_SALT)
    return np.asarray(jax.random.normal(key, (count, z_dim), jnp.float32))


def make_sampler(nets: Nets) -> Callable:
    """Jitted (params, collections, z (B, Z)[, labels (B,)]) → (B, *X) in the model's range.

    The generator runs with batch statistics and its state updates are dropped: the EMA
    parameters have no moving averages of their own, and the live generator's would not
    match them (sampling with batch statistics is what "standing statistics" re-estimation
    would converge to for one batch).
    """
    return jax.jit(lambda params, collections, z, labels=None: _apply(
        nets.generator, params, collections, z, labels=labels)[0])


def generate(sampler, params, collections, latents: np.ndarray, batch_size: int,
             labels: np.ndarray | None = None) -> np.ndarray:
    """Runs `sampler` over `latents` (n, Z) (and `labels` (n,) for a conditional generator)
    in batches of `batch_size` (the last one padded, its padding dropped); returns (n, *X)
    float32 numpy."""
    inputs = {"z": latents} if labels is None else {"z": latents, "labels": labels}
    return evaluation.predict_in_batches(
        lambda variables, batch: sampler(*variables, batch["z"], batch.get("labels")),
        (params, collections), inputs, batch_size)


class MixtureEvaluator:
    """Scores the generator in the state (the EMA one when the trainer keeps an EMA, the
    live one for "live_" metrics) on `samples.num_points` fixed latents (modes covered,
    high-quality share: `mixture.score_samples`); with `plot`, writes a scatter plot of the
    samples over the modes to samples/step_XXXXXXX.png."""

    def __init__(self, nets: Nets, mix: mixture.Mixture, config, workdir: pathlib.Path,
                 plot: bool = True):
        self.mix, self.workdir, self.batch_size = mix, workdir, config.batch_size
        self.plot = plot
        self.sampler = make_sampler(nets)
        self.latents = fixed_latents(config.trainer.seed, config.samples.num_points,
                                     nets.z_dim)
        self.latest: tuple[int, dict[str, float]] | None = None

    def __call__(self, state) -> dict[str, float]:
        step = int(state["step"])
        generator = state["generator"]
        samples = generate(self.sampler, generator["params"], generator["collections"],
                           self.latents, self.batch_size)
        if not np.all(np.isfinite(samples)):
            raise trainer.NonFiniteError(
                f"the generator produced non-finite samples at step {step}")
        score = mixture.score_samples(self.mix, samples)
        if self.plot:
            mixture.plot_samples(
                self.mix, samples, self.workdir / "samples" / f"step_{step:07d}.png",
                title=f"{self.mix.name}, step {step}: {score['modes_covered']}/"
                      f"{self.mix.num_modes} modes, {100 * score['high_quality']:.1f}% "
                      "high quality")
        metrics = {"modes_covered": float(score["modes_covered"]),
                   "high_quality": score["high_quality"]}
        self.latest = (step, metrics)
        return metrics


class ImageEvaluator:
    """Writes an 8×8 grid of the state's generator (the EMA one when the trainer keeps an
    EMA) on fixed latents to samples/step_XXXXXXX.png
    and returns the multi-scale sliced Wasserstein distance (×10³, PGGAN) between the
    held-out real images and as many EMA samples (`metrics.sliced_wasserstein_distance`).

    "diversity" is `metrics.diversity_ratio` of the held-out images and the samples (1: as
    spread out as the data; near 0: mode collapse).

    Class-conditional (`held_out_labels` given): the samples take the held-out labels, and
    per class c a grid samples/step_XXXXXXX_class_NAME.png and "swd_class_NAME" (the SWD
    between that class's held-out images and as many samples of it; only with at most
    `MAX_CLASSES_LISTED` classes) and their mean "swd_class_mean" are added, with the
    classifier-free check `metrics.nearest_label_agreement`: "class_agreement" (share of
    samples whose nearest held-out image has their class), "class_agreement_chance" (what
    labels alone give) and "class_agreement_real" (held-out images leave-one-out: the
    ceiling).
    `extra` evaluators (e.g. O-GAN's reconstructions) add their metrics.
    """

    MAX_CLASSES_LISTED = 8

    def __init__(self, nets: Nets, held_out: np.ndarray, config, workdir: pathlib.Path,
                 held_out_labels: np.ndarray | None = None, class_names=(), extra=()):
        self.held_out, self.workdir = held_out, workdir
        self.labels, self.class_names, self.extra = held_out_labels, list(class_names), extra
        self.batch_size, self.grid_side = config.batch_size, config.samples.grid_side
        self.sampler = make_sampler(nets)
        latents = fixed_latents(config.trainer.seed, len(held_out) + self.grid_side ** 2,
                                nets.z_dim)
        self.grid_latents, self.eval_latents = np.split(latents, [self.grid_side ** 2])
        self.latest: tuple[int, dict[str, float]] | None = None
        self.real_agreement = None  # the held-out images' own score: the same every step
        if held_out_labels is not None:
            from experiments.gan import metrics as gan_metrics

            self.real_agreement = gan_metrics.nearest_label_agreement(
                held_out, held_out_labels, held_out, held_out_labels)["agreement"]

    def _class_metrics(self, step, params, collections, fakes) -> dict[str, float]:
        from experiments.gan import metrics as gan_metrics

        per_class = {}
        for label, name in enumerate(self.class_names):
            grid = generate(self.sampler, params, collections, self.grid_latents,
                            self.batch_size, np.full(len(self.grid_latents), label, np.int32))
            plots.save_image_grid(grid, self.workdir / "samples" /
                                  f"step_{step:07d}_class_{name}.png", side=self.grid_side)
            chosen = self.labels == label
            if chosen.any():
                per_class[name] = gan_metrics.sliced_wasserstein_distance(
                    self.held_out[chosen], fakes[chosen], key=0)["swd_avg"]
        metrics = {"swd_class_mean": float(np.mean(list(per_class.values())))}
        if len(self.class_names) <= self.MAX_CLASSES_LISTED:
            metrics.update({f"swd_class_{name}": value for name, value in per_class.items()})
        agreement = gan_metrics.nearest_label_agreement(fakes, self.labels, self.held_out,
                                                        self.labels)
        metrics.update(class_agreement=agreement["agreement"],
                       class_agreement_chance=agreement["chance"],
                       class_agreement_real=self.real_agreement)
        return metrics

    def __call__(self, state) -> dict[str, float]:
        from experiments.gan import metrics as gan_metrics

        step = int(state["step"])
        generator = state["generator"]
        params, collections = generator["params"], generator["collections"]
        grid_labels = None if self.labels is None else np.resize(self.labels,
                                                                 len(self.grid_latents))
        grid = generate(self.sampler, params, collections, self.grid_latents, self.batch_size,
                        grid_labels)
        plots.save_image_grid(grid, self.workdir / "samples" / f"step_{step:07d}.png",
                              side=self.grid_side)
        fakes = generate(self.sampler, params, collections, self.eval_latents,
                         self.batch_size, self.labels)
        if not np.all(np.isfinite(fakes)):
            raise trainer.NonFiniteError(
                f"the generator produced non-finite images at step {step}")
        swd = gan_metrics.sliced_wasserstein_distance(self.held_out, fakes, key=0)
        metrics = {"swd_avg": swd.pop("swd_avg"), **swd,
                   "diversity": gan_metrics.diversity_ratio(self.held_out, fakes)}
        if self.labels is not None:
            metrics.update(self._class_metrics(step, params, collections, fakes))
        for evaluate in self.extra:
            metrics.update(evaluate(state, step))
        self.latest = (step, metrics)
        return metrics


# ----------------------------------------------------------------------------------------
# The run.


def describe(config) -> str:
    """A one-line label of the configured method, e.g. "wasserstein + wgan_div(k=2, p=6,
    real_and_fake), D:G 1:1"."""
    penalty = config.penalty
    if penalty.kind == "wgan_div":
        detail = f"wgan_div(k={penalty.k:g}, p={penalty.p:g}, {penalty.strategy})"
    elif penalty.kind == "wgan_gp":
        detail = f"wgan_gp(λ={penalty.weight:g}, centre {penalty.center:g}, {penalty.strategy})"
    elif penalty.kind in ("r1", "r2"):
        detail = f"{penalty.kind}(γ={penalty.weight:g})"
    else:
        detail = "no penalty"
    spectral = config.model.mlp.spectral_norm if config.data.kind == "mixture" else (
        config.model.dcgan.critic == "wgan_sn")
    if config.loss == config_lib.OGAN:
        method = (f"O-GAN (λ₁={config.ogan.penalty_weight:g}, "
                  f"λ₂={config.ogan.correlation_weight:g}), one joint RMSprop step")
    else:
        method = (f"{config.loss} + {detail}{', SN critic' if spectral else ''}, "
                  f"D:G {config.steps.critic}:{config.steps.generator}")
    if config.data.kind == "mixture":
        return method
    model = config.model
    attention = (f", attention {model.attention.pattern} at {model.attention.resolution}²"
                 if model.attention.resolution else "")
    return f"{model.trunk} G/D, G norm {model.norm}{attention}; {method}"


@dataclasses.dataclass(frozen=True)
class TaskParts:
    """What differs between mixtures and images: batches, evaluators, curves to plot."""

    batches: trainer.BatchIterator
    evaluate: Callable
    evaluate_live: Callable | None
    curves: tuple[str, ...]
    data_digest: str


def _mixture_task_parts(config, nets, workdir):
    mix = mixture.mixture(config.data.mixture)
    batches = input_pipeline.MixtureBatches(
        mix, config.steps.critic * config.batch_size, seed=config.trainer.seed)
    print(f"data: {mix.name} mixture ({mix.num_modes} modes, std {mix.std:g}), "
          f"{config.steps.critic} × {config.batch_size} fresh real points per step", flush=True)
    parts = TaskParts(
        batches=batches, evaluate=MixtureEvaluator(nets, mix, config, workdir),
        evaluate_live=MixtureEvaluator(nets, mix, config, workdir, plot=False),
        curves=("modes_covered", "high_quality"), data_digest="")
    return parts


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Decoded images, with labels (n,) and class names for labelled data (else None, ())."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]


def load_image_data(config, workdir: pathlib.Path) -> ImageData:
    """The configured images: a folder, its sub-folders as classes, or the Olivetti sheet.

    Raises:
      experiments.data.RecordError: naming the folder or file that cannot be read.
    """
    cache_dir = pathlib.Path(config.data.cache_dir) if config.data.cache_dir else workdir
    data_config, skipped = config.data, []
    if data_config.kind == "shapes":
        images, labels, names = input_pipeline.generate_shapes(
            data_config.num_shapes, data_config.resolution, config.trainer.seed)
    elif data_config.kind == "olivetti":
        images, labels, names = input_pipeline.load_olivetti(data_config.path,
                                                             data_config.resolution)
    elif data_config.labels == "subfolders":
        images, labels, names, skipped = input_pipeline.load_labelled_images(
            data_config.path, data_config.resolution, classes=data_config.classes,
            skip_bad=data_config.skip_bad, cache_dir=cache_dir)
    else:
        (images, skipped), labels, names = input_pipeline.load_images(
            data_config.path, data_config.resolution, skip_bad=data_config.skip_bad,
            cache_dir=cache_dir), None, ()
    if skipped:
        print(f"skipped {len(skipped)} undecodable image(s):\n  " + "\n  ".join(skipped[:20]),
              flush=True)
    return ImageData(images, labels, tuple(names))


def _data_source(config) -> str:
    """What the images are, for messages: their file or folder, or "generated shapes"."""
    if config.data.kind == "shapes":
        return f"{config.data.num_shapes} generated shapes"
    return config.data.path


def _image_task_parts(config, nets, workdir, image_data: ImageData):
    images, labels = image_data.images, image_data.labels
    try:
        train_index, held_out_index = input_pipeline.split_held_out(
            np.arange(len(images)), config.data.num_eval_images, config.trainer.seed)
    except ValueError as error:
        raise ConfigError(f"{_data_source(config)}: {error}") from None
    train_images, held_out = images[train_index], images[held_out_index]
    per_step = config.steps.critic * config.batch_size
    if len(train_images) < per_step:
        raise ConfigError(
            f"{_data_source(config)}: {len(train_images)} training images (after holding out "
            f"{len(held_out)}) are fewer than one step's {per_step} (steps.critic × batch_size)")
    classes = f", {len(image_data.class_names)} classes" if labels is not None else ""
    print(f"data: {_data_source(config)}: {len(images)} images at {config.data.resolution}² "
          f"({len(train_images)} train, {len(held_out)} held out for the SWD{classes})",
          flush=True)
    arrays = {"real": train_images}
    held_out_labels = None
    if labels is not None:
        arrays["labels"] = labels[train_index]
        held_out_labels = labels[held_out_index]
    batches = data_lib.EpochBatches(arrays, batch_size=per_step, seed=config.trainer.seed)
    extra = ((ogan.ReconstructionEvaluator(nets, held_out, config, workdir),)
             if config.loss == config_lib.OGAN else ())
    evaluate = ImageEvaluator(nets, held_out, config, workdir, held_out_labels=held_out_labels,
                              class_names=image_data.class_names, extra=extra)
    curves = ("swd_avg",) + (("reconstruction_mse",) if extra else ()) + (
        ("swd_class_mean",) if labels is not None else ())
    digest = [train_images, held_out] + ([labels] if labels is not None else [])
    return TaskParts(batches=batches, evaluate=evaluate, evaluate_live=None, curves=curves,
                     data_digest=trainer.array_digest(*digest))


def peak_memory() -> dict[str, float]:
    """This process's peak resident host memory in MiB ("peak_host_memory_mb"; one run per
    process, e.g. a sweep's `--subprocess` runs, makes it the run's) and the device's peak
    where the backend reports it ("peak_device_memory_mb")."""
    import resource

    peak = {"peak_host_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        peak["peak_device_memory_mb"] = stats["peak_bytes_in_use"] / 2**20
    return peak


def make_state_and_step(config: ml_collections.ConfigDict, nets: Nets
                        ) -> tuple[Callable, Callable]:
    """(init_state, train_step) of the configured objective: a GAN loss with its penalty
    and D:G ratio, or O-GAN's joint step (`experiments.gan.ogan`)."""
    compute_dtype = trainer.compute_dtype(config.trainer)
    if config.loss == config_lib.OGAN:
        optimizer = ogan.make_optimizer(config.ogan)
        return (ogan.make_init_state(nets, optimizer, config.batch_size),
                ogan.make_train_step(nets, optimizer,
                                     correlation_weight=config.ogan.correlation_weight,
                                     penalty_weight=config.ogan.penalty_weight,
                                     compute_dtype=compute_dtype))
    optimizers = make_optimizers(config)
    return (make_init_state(nets, optimizers, config.batch_size),
            make_train_step(nets, optimizers, gan_losses.get_gan_loss(config.loss),
                            make_penalty(config.penalty), critic_steps=config.steps.critic,
                            generator_steps=config.steps.generator,
                            compute_dtype=compute_dtype))


def run(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
    """Trains (or resumes) the configured GAN in `workdir` and evaluates it.

    Writes samples/step_*.png (grids or scatter plots, every `trainer.eval_every` steps and
    at the end), training_curves.png, the figures into summary.json's "results", and the
    trainer's files.

    Returns:
      The final evaluation, headline first: {"modes_covered", "high_quality",
      "live_modes_covered", "live_high_quality"} for mixtures (the live generator's with an
      EMA on), {"swd_avg", "swd_R", ...} for images; plus "step".

    Raises:
      ConfigError: an invalid config value, before anything is read or traced.
      experiments.data.RecordError: an empty folder or an undecodable image (by path).
      experiments.errors.Preempted: after SIGTERM/SIGINT, once the state is saved.
    """
    config_lib.validate(config)
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if config.data.kind == "mixture":
        nets = build_nets(config)
        parts = _mixture_task_parts(config, nets, workdir)
    else:
        image_data = load_image_data(config, workdir)
        nets = build_nets(config, num_classes=len(image_data.class_names))
        parts = _image_task_parts(config, nets, workdir, image_data)
    label = describe(config)
    print(f"method: {label}", flush=True)
    init_state, train_step = make_state_and_step(config, nets)
    task = trainer.Task(
        init_state=init_state, train_step=train_step,
        batches=parts.batches, evaluate=parts.evaluate, evaluate_live=parts.evaluate_live,
        params_path=("generator", "params"),
        fingerprint={"config": trainer.config_fingerprint(
                         config, ignore=("data.path", "data.cache_dir", "data.skip_bad",
                                         "samples")),
                     "images": parts.data_digest})
    result = trainer.train(task, config.trainer, workdir)
    final = dict(result.last_eval)
    if not final:  # a finished run rerun: nothing trained, nothing evaluated
        final = parts.evaluate(result.state)
    plots.plot_training_curves(workdir / "metrics.jsonl", workdir / "training_curves.png",
                               title=label, eval_metrics=parts.curves)
    summary = {**final, "step": float(result.step)}
    trainer.update_summary(workdir, results=summary, method=label, **peak_memory())
    print(json.dumps(summary, allow_nan=False), flush=True)
    return summary
