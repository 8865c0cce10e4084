"""O-GAN: the discriminator as an encoder (https://kexue.fm/archives/6409; arXiv 1903.01931).

The critic is an encoder E: images → R^Z, and its score is the mean of E(x) over the Z
dimensions, avg(E(x)). The seed (`bojone/o-gan`, o_gan_celeba_sm_4x4.py; the seed's sign:
real samples score LOW) trains

    E: minimise avg E(x_r) − avg E(G(z)) + λ₁·R − λ₂·ρ(z, E(G(z)))
    G: minimise avg E(G(z)) − λ₂·ρ(z, E(G(z)))

with ρ the Pearson correlation across the Z dimensions (the cosine of the standardised
vectors) and R the gradient-ratio penalty of GAN-QP, per pair (real i, fake i):

    R = (avg E(x_r) − avg E(x_f))² / mean_pixels((x_r − x_f)²).

Both losses go into one RMSprop step through stop-gradients (`joint_loss`): with
x̃ = stop_gradient(G(z)),

    t1 = avg E(x_r) − avg E(x̃)        (E's GAN term; no gradient reaches G)
    t2 = avg E(G(z)) − avg E(x̃)       (E's gradients of the two terms cancel: it drives G)
    loss = mean(t1 + t2 − λ₂·ρ(z, E(G(z)))) + λ₁·mean(R(x_r, x̃)),

and E runs three times (real, fake, x̃), each with its own batch statistics. Its gradient
with respect to E is that of E's loss and with respect to G that of G's (tests hold it to
the two-loss form). Reconstruction: x̂ = G(𝒩(E(x))), 𝒩 standardising across dimensions.

Glossary: B batch, Z latent size, X = (R, R, 3).
"""

import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import evaluation, trainer
from experiments.gan import input_pipeline, plots
from experiments.gan import train as gan_train

_EPSILON = 1e-8   # the seed's K.epsilon()-style floor in the standardisations


def make_optimizer(settings: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """RMSprop as Keras computes it (ε added outside the square root), the seed's optimiser."""
    return optax.rmsprop(settings.learning_rate, decay=settings.decay, eps=settings.eps,
                         eps_in_sqrt=False)


def standardize(x: jax.Array) -> jax.Array:
    """(B, Z) → each row minus its mean, divided by its standard deviation (𝒩 above)."""
    x = x - jnp.mean(x, axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + _EPSILON)


def pearson_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
    """(B, Z), (B, Z) → (B,): the correlation of each row pair across the Z dimensions."""
    return jnp.mean(standardize(a) * standardize(b), axis=-1)


def gradient_ratio_penalty(real_scores, fake_scores, x_real, x_fake) -> jax.Array:
    """(B,) per-pair (s_r − s_f)² / mean((x_r − x_f)²), the mean over every pixel and channel."""
    distance = jnp.mean(jnp.square(x_real - x_fake).reshape(x_real.shape[0], -1), axis=1)
    return jnp.square(real_scores - fake_scores) / (distance + _EPSILON)


def joint_loss(params, collections, nets, x_real, z, *, correlation_weight: float,
               penalty_weight: float, compute_dtype=None):
    """The seed's one-step loss (module docstring) and its parts.

    Args:
      params: {"critic": E's params, "generator": G's params}.
      collections: {"critic": ..., "generator": ...} batch statistics.
      nets: `experiments.gan.train.Nets` with the encoder as the critic (head Z wide).
      x_real: (B, *X) float in [−1, 1].
      z: (B, Z) latents.
      correlation_weight: λ₂.
      penalty_weight: λ₁.
      compute_dtype: both nets' compute dtype (None: float32).

    Returns:
      (loss, (new collections, metrics)).
    """
    def encode(x, state):
        return gan_train._apply(nets.critic, params["critic"], state, x, dtype=compute_dtype)

    x_fake, generator_state = gan_train._apply(nets.generator, params["generator"],
                                               collections["generator"], z,
                                               dtype=compute_dtype)
    x_fixed = jax.lax.stop_gradient(x_fake)
    e_real, critic_state = encode(x_real, collections["critic"])       # [B, Z]
    e_fake, critic_state = encode(x_fake, critic_state)
    e_fixed, critic_state = encode(x_fixed, critic_state)
    s_real, s_fake, s_fixed = (jnp.mean(e, axis=-1) for e in (e_real, e_fake, e_fixed))
    correlation = pearson_correlation(z, e_fake)
    penalty = penalty_weight * jnp.mean(gradient_ratio_penalty(s_real, s_fixed, x_real,
                                                               x_fixed))
    loss = jnp.mean((s_real - s_fixed) + (s_fake - s_fixed)
                    - correlation_weight * correlation) + penalty
    metrics = {
        "loss": loss, "penalty": penalty, "correlation": jnp.mean(correlation),
        # E's and G's own losses (the two-loss form's values), real LOW as in the seed.
        "critic_loss": jnp.mean(s_real - s_fixed - correlation_weight * correlation) + penalty,
        "generator_loss": jnp.mean(s_fake - correlation_weight * correlation),
        "w_distance": jnp.mean(s_fixed) - jnp.mean(s_real),
    }
    return loss, ({"critic": critic_state, "generator": generator_state}, metrics)


def make_init_state(nets, optimizer: optax.GradientTransformation, batch_size: int
                    ) -> Callable:
    """key → {"step", "critic": {params, collections}, "generator": {...}, "opt_state"}."""
    def init_state(key):
        critic_key, generator_key = jax.random.split(key)
        x = jnp.zeros((batch_size, *nets.sample_shape), jnp.float32)
        z = jnp.zeros((batch_size, nets.z_dim), jnp.float32)
        critic_vars = dict(nets.critic.init(critic_key, x, train=False))
        generator_vars = dict(nets.generator.init(generator_key, z, train=False))
        params = {"critic": critic_vars.pop("params"),
                  "generator": generator_vars.pop("params")}
        return {"step": jnp.zeros((), jnp.int32),
                "critic": {"params": params["critic"], "collections": critic_vars},
                "generator": {"params": params["generator"], "collections": generator_vars},
                "opt_state": optimizer.init(params)}

    return init_state


def make_train_step(nets, optimizer: optax.GradientTransformation, *,
                    correlation_weight: float, penalty_weight: float, compute_dtype=None
                    ) -> Callable:
    """The pure `(state, {"real": (B, *X)}, key) -> (state, metrics)` joint O-GAN step.

    Metrics: loss (the joint loss), critic_loss and generator_loss (the two-loss form's
    values), penalty (λ₁·mean R), correlation (mean ρ), w_distance (mean fake score − mean
    real score, the seed's sign), grad_norm and param_norm of both nets together.
    """
    def train_step(state, batch, key):
        x_real = input_pipeline.to_model_range(batch["real"])
        z = jax.random.normal(key, (x_real.shape[0], nets.z_dim))
        params = {"critic": state["critic"]["params"],
                  "generator": state["generator"]["params"]}
        collections = {"critic": state["critic"]["collections"],
                       "generator": state["generator"]["collections"]}
        grads, (collections, metrics) = jax.grad(joint_loss, has_aux=True)(
            params, collections, nets, x_real, z, correlation_weight=correlation_weight,
            penalty_weight=penalty_weight, compute_dtype=compute_dtype)
        params, opt_state, norms = trainer.apply_updates(params, grads, state["opt_state"],
                                                         optimizer)
        new_state = {"step": state["step"] + 1, "opt_state": opt_state,
                     **{name: {"params": params[name], "collections": collections[name]}
                        for name in ("critic", "generator")}}
        return new_state, {**metrics, **norms}

    return train_step


class ReconstructionEvaluator:
    """x̂ = G(𝒩(E(x))) on held-out images: "reconstruction_mse" (mean squared error per
    pixel in [−1, 1]) and "reconstruction_swd" (`metrics.sliced_wasserstein_distance`
    between the images and their reconstructions, ×10³) over the first `count` of them,
    an 8 × 8 grid of real/reconstructed
    pairs (samples/reconstruction_step_XXXXXXX.png) and a latent interpolation strip between
    two held-out images' codes (samples/interpolation_step_XXXXXXX.png)."""

    def __init__(self, nets, held_out: np.ndarray, config, workdir: pathlib.Path,
                 count: int = 256, strip_length: int = 8):
        self.images = input_pipeline.to_model_range(held_out[:count])
        self.workdir, self.batch_size = workdir, config.batch_size
        self.strip_length = strip_length
        self.sampler = gan_train.make_sampler(nets)
        self.encoder = jax.jit(lambda params, collections, x: standardize(
            gan_train._apply(nets.critic, params, collections, x)[0]))

    def _encode(self, critic) -> np.ndarray:
        return evaluation.predict_in_batches(
            lambda variables, batch: self.encoder(*variables, batch["x"]),
            (critic["params"], critic["collections"]), {"x": self.images}, self.batch_size)

    def __call__(self, state, step: int) -> dict[str, float]:
        """{"reconstruction_mse": float, "reconstruction_swd": float}; writes the two
        PNGs."""
        from experiments.gan import metrics as gan_metrics

        generator = state["generator"]
        codes = self._encode(state["critic"])                               # [n, Z]
        reconstructions = gan_train.generate(self.sampler, generator["params"],
                                             generator["collections"], codes, self.batch_size)
        error = float(np.mean(np.square(reconstructions - self.images)))
        pairs = min(32, len(self.images))
        interleaved = np.stack([self.images[:pairs], reconstructions[:pairs]], axis=1)
        side = int(np.floor(np.sqrt(2 * pairs)))
        plots.save_image_grid(interleaved.reshape(-1, *self.images.shape[1:]),
                              self.workdir / "samples" / f"reconstruction_step_{step:07d}.png",
                              side=side)
        weights = np.linspace(0.0, 1.0, self.strip_length)[:, None]
        path = codes[0] * (1 - weights) + codes[-1] * weights               # [L, Z]
        strip = gan_train.generate(self.sampler, generator["params"], generator["collections"],
                                   np.asarray(standardize(jnp.asarray(path))), self.batch_size)
        plots.save_image_strip(strip, self.workdir / "samples" /
                               f"interpolation_step_{step:07d}.png")
        swd = gan_metrics.sliced_wasserstein_distance(self.images, reconstructions, key=0)
        return {"reconstruction_mse": error, "reconstruction_swd": swd["swd_avg"]}
