"""2-D mixtures of Gaussians: the standard mode-collapse benchmark (docs/wgan_div.md §5.1).

Two mixtures, equally weighted, isotropic components:

* ``ring``: 8 Gaussians on a circle of radius 2 with standard deviation 0.02, as in Unrolled
  GAN (Metz et al., ICLR 2017, Appendix A) and VEEGAN's 2D-ring (Srivastava et al.,
  NeurIPS 2017). PacGAN's code uses the same ring scaled by ½ (radius 1, std 0.01): the same
  task, since only the ratio std/radius matters to the score.
* ``grid``: 25 Gaussians at {−4, −2, 0, 2, 4}² with standard deviation 0.05, as in PacGAN
  (Lin et al., NeurIPS 2018, §5.1; ``synthetic_data_experiments/2DGrid_GAN&PacGAN/config.py``
  of fjxmlzn/PacGAN: variance 0.05² per axis).

Scoring follows PacGAN's ``MetricLogger`` (``pacgan/extensions.py``), which implements
VEEGAN's metric: each sample is assigned to its nearest mode; it is *high quality* when it
lies within 3 standard deviations of that mode's mean (Euclidean distance < 3σ, i.e. the
Mahalanobis distance of an isotropic component); a mode is *covered* when at least one
high-quality sample is assigned to it. Those papers draw 2,500 samples
(``NUM_EVAL_SAMPLES``). ``min_samples_per_mode`` makes the coverage rule stricter where a
single stray sample should not count.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

RING_NUM_MODES = 8
RING_RADIUS = 2.0
RING_STD = 0.02
GRID_SIDE = 5
GRID_SPACING = 2.0  # means at {-4, -2, 0, 2, 4}
GRID_STD = 0.05
HIGH_QUALITY_STDS = 3.0
MIN_SAMPLES_PER_MODE = 1
NUM_EVAL_SAMPLES = 2500


@dataclasses.dataclass(frozen=True)
class Mixture:
    """An equally weighted mixture of isotropic 2-D Gaussians.

    Attributes:
      name: a label for plots and logs.
      means: (K, 2) float64, the component means.
      std: the per-axis standard deviation shared by every component.
    """

    name: str
    means: np.ndarray
    std: float

    @property
    def num_modes(self) -> int:
        return int(self.means.shape[0])


def ring(num_modes: int = RING_NUM_MODES, radius: float = RING_RADIUS,
         std: float = RING_STD) -> Mixture:
    """Modes at radius·(cos 2πk/K, sin 2πk/K), k = 0..K−1.

    Args:
      num_modes: K ≥ 1.
      radius: the circle's radius, > 0.
      std: each component's standard deviation, > 0.

    Returns:
      A `Mixture` with (K, 2) means.
    """
    _check_positive("radius", radius)
    _check_positive("std", std)
    if num_modes < 1:
        raise ValueError(f"num_modes must be >= 1, got {num_modes}")
    angles = 2.0 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return Mixture(f"ring{num_modes}", means, float(std))


def grid(side: int = GRID_SIDE, spacing: float = GRID_SPACING, std: float = GRID_STD) -> Mixture:
    """Modes on a side × side grid centred on the origin, `spacing` apart.

    Args:
      side: modes per axis, ≥ 1 (5 gives {−4, −2, 0, 2, 4}² with spacing 2).
      spacing: distance between neighbouring modes, > 0.
      std: each component's standard deviation, > 0.

    Returns:
      A `Mixture` with (side², 2) means, row-major over (x, y).
    """
    _check_positive("spacing", spacing)
    _check_positive("std", std)
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    axis = spacing * (np.arange(side) - (side - 1) / 2.0)
    xs, ys = np.meshgrid(axis, axis, indexing="ij")
    means = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return Mixture(f"grid{side * side}", means, float(std))


_NAMED = {"ring": ring, "grid": grid}


def mixture(name: str) -> Mixture:
    """The benchmark mixture called `name`: "ring" (8 modes) or "grid" (25 modes)."""
    if name not in _NAMED:
        raise ValueError(f"unknown mixture {name!r}; expected one of {sorted(_NAMED)}")
    return _NAMED[name]()


def sample(mix: Mixture, rng, n: int) -> np.ndarray:
    """Draws `n` points: a uniformly chosen mode plus isotropic Gaussian noise.

    Args:
      mix: the mixture.
      rng: a `jax.random` key, a `numpy.random.Generator` or an int seed.
      n: the number of samples, ≥ 0.

    Returns:
      (n, 2) float32.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if isinstance(rng, jax.Array):
        mode_key, noise_key = jax.random.split(rng)
        modes = np.asarray(jax.random.randint(mode_key, (n,), 0, mix.num_modes))
        noise = np.asarray(jax.random.normal(noise_key, (n, 2)), dtype=np.float64)
    else:
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        modes = generator.integers(0, mix.num_modes, size=n)
        noise = generator.standard_normal((n, 2))
    return (mix.means[modes] + mix.std * noise).astype(np.float32)


def nearest_modes(mix: Mixture, samples) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's nearest mode and its Euclidean distance to that mode's mean.

    Args:
      mix: the mixture.
      samples: (n, 2) floating point.

    Returns:
      (modes, distances): (n,) int64 indices into ``mix.means`` and (n,) float64 distances.
    """
    points = _as_points(samples)
    squared = np.sum((points[:, None, :] - mix.means[None, :, :]) ** 2, axis=-1)  # [n, K]
    modes = np.argmin(squared, axis=1)
    return modes, np.sqrt(squared[np.arange(points.shape[0]), modes])


def score_samples(mix: Mixture, samples, *, num_stds: float = HIGH_QUALITY_STDS,
                  min_samples_per_mode: int = MIN_SAMPLES_PER_MODE) -> dict:
    """Modes covered and the share of high-quality samples (VEEGAN / PacGAN metric).

    A sample is high quality when its distance to the nearest mode's mean is below
    ``num_stds · std``; a mode is covered when at least ``min_samples_per_mode``
    high-quality samples have it as their nearest mode.

    Args:
      mix: the mixture.
      samples: (n, 2) floating point, n ≥ 1, finite.
      num_stds: the high-quality radius in standard deviations (3 in the papers).
      min_samples_per_mode: high-quality samples a mode needs to count as covered (1 in
        PacGAN's code).

    Returns:
      {"modes_covered": int, "high_quality": float in [0, 1], "num_modes": int,
       "mode_counts": list of K ints (high-quality samples per mode)}.
    """
    _check_positive("num_stds", num_stds)
    if min_samples_per_mode < 1:
        raise ValueError(f"min_samples_per_mode must be >= 1, got {min_samples_per_mode}")
    points = _as_points(samples)
    if points.shape[0] == 0:
        raise ValueError("samples must not be empty, got shape (0, 2)")
    modes, distances = nearest_modes(mix, points)
    good = distances < num_stds * mix.std
    counts = np.bincount(modes[good], minlength=mix.num_modes)
    return {
        "modes_covered": int(np.sum(counts >= min_samples_per_mode)),
        "high_quality": float(np.mean(good)),
        "num_modes": mix.num_modes,
        "mode_counts": [int(c) for c in counts],
    }


def plot_samples(mix: Mixture, samples, path, *, title: str | None = None) -> pathlib.Path:
    """Writes a PNG of the samples over the modes and their high-quality discs.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch).

    Args:
      mix: the mixture.
      samples: (n, 2) floating point.
      path: the PNG file to write; its folder is created.
      title: the plot title; defaults to the mixture's name and its score.

    Returns:
      The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    points = _as_points(samples)
    if title is None:
        score = score_samples(mix, points) if len(points) else None
        title = mix.name if score is None else (
            f"{mix.name}: {score['modes_covered']}/{mix.num_modes} modes, "
            f"{100 * score['high_quality']:.1f}% high quality")
    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for mean in mix.means:
        axes.add_patch(Circle(tuple(mean), HIGH_QUALITY_STDS * mix.std, color="tab:red",
                              alpha=0.25, linewidth=0))
    axes.scatter(points[:, 0], points[:, 1], s=2, c="black", alpha=0.4, linewidths=0)
    axes.scatter(mix.means[:, 0], mix.means[:, 1], s=30, marker="x", c="tab:red")
    extent = np.max(np.abs(mix.means)) + 1.0
    axes.set_xlim(-extent, extent)
    axes.set_ylim(-extent, extent)
    axes.set_aspect("equal")
    axes.set_title(title, fontsize=9)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _as_points(samples) -> np.ndarray:
    points = np.asarray(samples, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"samples must have shape (n, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("samples must be finite")
    return points


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
