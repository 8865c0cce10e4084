"""Image-quality metrics that work offline (docs/wgan_div.md §5.2).

* Multi-scale sliced Wasserstein distance (SWD; Karras et al., "Progressive Growing of GANs",
  ICLR 2018, Appendix D): needs no pretrained weights.
* Fréchet distance (FID when the features are Inception's pool3) and the kernel distance
  (KID; Bińkowski et al., "Demystifying MMD GANs", ICLR 2018) over a pluggable
  `FeatureExtractor`: `experiments.gan.inception.InceptionFeatures` when the user supplies
  the weights file, `RandomConvFeatures` (weight-free, for relative comparisons) otherwise.

Images are NHWC, either float in [−1, 1] (the generator's tanh range) or uint8 in [0, 255],
which is mapped to [−1, 1] by x / 127.5 − 1. SWD normalises its descriptors per channel, so
its value does not depend on which of the two is passed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------
# Images


def as_float_images(images, name: str = "images") -> np.ndarray:
    """Validates an NHWC batch and returns it as float32 in [−1, 1].

    Args:
      images: (n, h, w, c) uint8 in [0, 255] or floating point in [−1, 1].
      name: the argument's name, for error messages.

    Returns:
      (n, h, w, c) float32.
    """
    array = np.asarray(images)
    if array.ndim != 4:
        raise ValueError(f"{name} must be NHWC (n, h, w, c), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 127.5 - 1.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or floating point, got dtype {array.dtype}")
    low, high = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} must be finite")
    if low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
        raise ValueError(
            f"{name} must lie in [-1, 1] when floating point (got min {low:.4g}, max "
            f"{high:.4g}); pass uint8 for [0, 255] images")
    return array.astype(np.float32)


def _key(key) -> jax.Array:
    return jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key


# ---------------------------------------------------------------------------------------
# Multi-scale sliced Wasserstein distance (PGGAN, Appendix D)
#
# Per image, a Laplacian pyramid from the full resolution down to 16×16; from each level, 128
# random 7×7 neighbourhoods (descriptors of 7·7·c numbers); each level's descriptors
# normalised per colour channel; then the sliced Wasserstein distance between the real and
# the generated descriptor sets with the paper's 512 random unit directions (drawn as 4
# repeats × 128 in PGGAN's released metric code), reported × 10³ per level and averaged.

SWD_MIN_RESOLUTION = 16
SWD_PATCH_SIZE = 7
SWD_DESCRIPTORS_PER_IMAGE = 128
SWD_NUM_REPEATS = 4
SWD_DIRECTIONS_PER_REPEAT = 128

# The 5-tap binomial filter: its outer product is the 5×5 Gaussian of cv2.pyrDown/pyrUp that
# the PGGAN metric uses ([1 4 6 4 1]ᵀ[1 4 6 4 1] / 256).
_BINOMIAL_TAPS = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def _separable_blur(images: jax.Array, gain: float) -> jax.Array:
    """The 5×5 binomial blur of an [N, H, W, C] batch, times `gain`.

    Borders are mirrored without repeating the edge pixel (scipy's "mirror", numpy's
    "reflect"), as in the PGGAN metric.
    """
    height, width = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    rows = sum(tap * padded[:, i:i + height] for i, tap in enumerate(_BINOMIAL_TAPS))
    blurred = sum(tap * rows[:, :, j:j + width] for j, tap in enumerate(_BINOMIAL_TAPS))
    return gain * blurred


def pyramid_down(images: jax.Array) -> jax.Array:
    """Blur then keep every other pixel: [N, H, W, C] -> [N, H/2, W/2, C]."""
    return _separable_blur(jnp.asarray(images), 1.0)[:, ::2, ::2]


def pyramid_up(images: jax.Array) -> jax.Array:
    """Zero-insertion upsampling then blur ×4: [N, H, W, C] -> [N, 2H, 2W, C]."""
    images = jnp.asarray(images)
    n, height, width, channels = images.shape
    upsampled = jnp.zeros((n, 2 * height, 2 * width, channels), images.dtype)
    upsampled = upsampled.at[:, ::2, ::2].set(images)
    return _separable_blur(upsampled, 4.0)


def laplacian_pyramid(images, num_levels: int) -> list[jax.Array]:
    """The Laplacian pyramid, finest level first.

    Level l < L−1 holds G_l − up(G_{l+1}) where G_0 is the image and G_{l+1} = down(G_l);
    the last level is the Gaussian G_{L−1}, so `reconstruct_laplacian_pyramid` is exact.

    Args:
      images: [N, H, W, C] floating point; H and W divisible by 2^(num_levels−1).
      num_levels: L ≥ 1.

    Returns:
      L arrays, level l of shape [N, H/2^l, W/2^l, C].
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    factor = 2 ** (num_levels - 1)
    if images.shape[1] % factor or images.shape[2] % factor:
        raise ValueError(f"images of shape {images.shape} cannot be halved "
                         f"{num_levels - 1} times")
    levels, current = [], images
    for _ in range(num_levels - 1):
        coarser = pyramid_down(current)
        levels.append(current - pyramid_up(coarser))
        current = coarser
    levels.append(current)
    return levels


def reconstruct_laplacian_pyramid(levels: Sequence[jax.Array]) -> jax.Array:
    """Inverts `laplacian_pyramid`: G_l = L_l + up(G_{l+1}), returns G_0 [N, H, W, C]."""
    current = levels[-1]
    for level in reversed(levels[:-1]):
        current = level + pyramid_up(current)
    return current


def swd_resolutions(resolution: int, min_resolution: int = SWD_MIN_RESOLUTION) -> list[int]:
    """The pyramid's resolutions, finest first: [R, R/2, ..., min_resolution].

    There are log2(R / min_resolution) + 1 of them. R must be a power of two ≥ min_resolution.
    """
    if resolution < min_resolution or resolution & (resolution - 1):
        raise ValueError(f"image resolution must be a power of two >= {min_resolution}, "
                         f"got {resolution}")
    resolutions = []
    while resolution >= min_resolution:
        resolutions.append(resolution)
        resolution //= 2
    return resolutions


@functools.partial(jax.jit, static_argnames=("num_levels", "per_image", "patch_size"))
def _pyramid_descriptors(images, key, *, num_levels, per_image, patch_size):
    """Random patch_size² neighbourhoods of every pyramid level: a tuple of
    [N·per_image, patch, patch, C] arrays, one per level, finest first."""
    descriptors = []
    for level_index, level in enumerate(laplacian_pyramid(images, num_levels)):
        n, height, width, channels = level.shape
        key_y, key_x = jax.random.split(jax.random.fold_in(key, level_index))
        ys = jax.random.randint(key_y, (n, per_image), 0, height - patch_size + 1)
        xs = jax.random.randint(key_x, (n, per_image), 0, width - patch_size + 1)

        def crop(image, y, x, channels=channels):
            return jax.lax.dynamic_slice(image, (y, x, 0), (patch_size, patch_size, channels))

        patches = jax.vmap(jax.vmap(crop, in_axes=(None, 0, 0)))(level, ys, xs)
        descriptors.append(patches.reshape(n * per_image, patch_size, patch_size, channels))
    return tuple(descriptors)


def swd_descriptors(images, key, *, min_resolution: int = SWD_MIN_RESOLUTION,
                    per_image: int = SWD_DESCRIPTORS_PER_IMAGE,
                    patch_size: int = SWD_PATCH_SIZE, batch_size: int = 64) -> list[np.ndarray]:
    """Raw (unnormalised) descriptors of every pyramid level.

    Args:
      images: (n, R, R, c) uint8 or float in [−1, 1], R a power of two ≥ min_resolution.
      key: a jax PRNG key or an int seed (the random positions).
      min_resolution: the coarsest level's resolution (16 in the paper).
      per_image: descriptors per image per level (128).
      patch_size: the neighbourhood's side (7).
      batch_size: images per jitted call.

    Returns:
      One (n · per_image, patch_size, patch_size, c) float32 array per level, finest first.
    """
    images = as_float_images(images)
    n, height, width, _ = images.shape
    if height != width:
        raise ValueError(f"images must be square, got shape {images.shape}")
    if patch_size > min_resolution:
        raise ValueError(f"patch_size {patch_size} exceeds min_resolution {min_resolution}")
    if per_image < 1 or batch_size < 1:
        raise ValueError(f"per_image and batch_size must be >= 1, got {per_image}, "
                         f"{batch_size}")
    num_levels = len(swd_resolutions(height, min_resolution))
    key = _key(key)
    batch_size = min(batch_size, n)
    per_level = [[] for _ in range(num_levels)]
    for batch_index, start in enumerate(range(0, n, batch_size)):
        batch = images[start:start + batch_size]
        real_count = batch.shape[0]
        if real_count < batch_size:  # pad to the compiled shape, drop the padding's output
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real_count, 0)])
        levels = _pyramid_descriptors(
            batch, jax.random.fold_in(key, batch_index), num_levels=num_levels,
            per_image=per_image, patch_size=patch_size)
        for store, level in zip(per_level, levels):
            store.append(np.asarray(level[:real_count * per_image]))
    return [np.concatenate(store) for store in per_level]


def _channel_moments(descriptors: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, sum and sum of squares per channel (the last axis), in float64."""
    flat = descriptors.reshape(-1, descriptors.shape[-1]).astype(np.float64)
    return flat.shape[0], flat.sum(0), np.square(flat).sum(0)


def _normalise(descriptors: np.ndarray, moments) -> np.ndarray:
    """(x − mean) / std per channel, flattened to [N, patch·patch·C] float32."""
    count, total, squares = moments
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    std = np.where(std > 0, std, 1.0)  # a constant channel carries no information
    normalised = (descriptors - mean.astype(np.float32)) / std.astype(np.float32)
    return normalised.reshape(descriptors.shape[0], -1)


def _sorted_projection_gap_sum(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    """Σ over samples and directions of |sort(a·θ) − sort(b·θ)|.

    numpy, not jax: XLA's CPU sort is about 4× slower than numpy's here (8192 × 128).
    """
    projected_a = np.sort(a @ directions, axis=0)
    projected_b = np.sort(b @ directions, axis=0)
    return float(np.sum(np.abs(projected_a - projected_b), dtype=np.float64))


def sliced_wasserstein(a, b, key, *, num_repeats: int = SWD_NUM_REPEATS,
                       num_directions: int = SWD_DIRECTIONS_PER_REPEAT,
                       max_elements: int = 1 << 24) -> float:
    """Sliced 1-Wasserstein distance between two equal-size point sets.

    For a unit direction θ, the 1-D W1 between the projections is the mean absolute gap
    between their sorted values; this averages it over num_repeats × num_directions
    directions drawn uniformly on the sphere.

    Args:
      a: (N, d) floating point.
      b: (N, d) floating point.
      key: a jax PRNG key or an int seed (the directions).
      num_repeats: independent draws of directions (4 in PGGAN).
      num_directions: directions per draw (128 in PGGAN).
      max_elements: bound on N × directions projected at once (memory).

    Returns:
      The distance as a Python float.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"a and b must be non-empty (N, d) arrays of one shape, got "
                         f"{a.shape} and {b.shape}")
    if num_repeats < 1 or num_directions < 1:
        raise ValueError(f"num_repeats and num_directions must be >= 1, got {num_repeats}, "
                         f"{num_directions}")
    key = _key(key)
    chunk = max(1, min(num_directions, max_elements // a.shape[0]))
    total = 0.0
    for repeat in range(num_repeats):
        directions = np.array(jax.random.normal(jax.random.fold_in(key, repeat),
                                                (a.shape[1], num_directions)))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        for start in range(0, num_directions, chunk):
            total += _sorted_projection_gap_sum(a, b, directions[:, start:start + chunk])
    return total / (num_repeats * num_directions * a.shape[0])


def sliced_wasserstein_distance(real_images, fake_images, key=0, *,
                                min_resolution: int = SWD_MIN_RESOLUTION,
                                per_image: int = SWD_DESCRIPTORS_PER_IMAGE,
                                patch_size: int = SWD_PATCH_SIZE,
                                num_repeats: int = SWD_NUM_REPEATS,
                                num_directions: int = SWD_DIRECTIONS_PER_REPEAT,
                                normalisation: str = "per_set",
                                batch_size: int = 64) -> dict[str, float]:
    """The multi-scale sliced Wasserstein distance of PGGAN (Appendix D), ×10³.

    Descriptor normalisation: ``"per_set"`` standardises each set's descriptors with its own
    per-channel mean and std, as PGGAN's released metric code does (`finalize_descriptors`
    is applied to the real and the generated descriptors separately), so numbers compare
    with published ones; it is blind to a global per-channel shift or scaling of the
    colours. ``"union"`` uses the statistics of both sets together, which keeps such a shift
    visible. When the sets differ in size, the larger set's descriptors are subsampled to
    the smaller count (the 1-D distance of sorted projections needs equal sizes).

    Args:
      real_images: (n, R, R, c) uint8 or float in [−1, 1]; R a power of two ≥ 16.
      fake_images: (m, R, R, c), same R and c.
      key: a jax PRNG key or an int seed (positions, subsampling and directions).
      min_resolution: the coarsest pyramid level (16).
      per_image: descriptors per image per level (128).
      patch_size: the neighbourhood's side (7).
      num_repeats: direction draws (4).
      num_directions: directions per draw (128; 512 directions in all).
      normalisation: "per_set" (PGGAN's code) or "union".
      batch_size: images per jitted pyramid call.

    Returns:
      {"swd_R": ..., "swd_R/2": ..., ..., "swd_16": ..., "swd_avg": ...}: each level's
      distance × 10³ (keys named by resolution, finest first) and their mean.
    """
    if normalisation not in ("per_set", "union"):
        raise ValueError(f"normalisation must be 'per_set' or 'union', got {normalisation!r}")
    real = as_float_images(real_images, "real_images")
    fake = as_float_images(fake_images, "fake_images")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real_images and fake_images must share (h, w, c), got "
                         f"{real.shape} and {fake.shape}")
    key = _key(key)
    real_key, fake_key, subsample_key, direction_key = jax.random.split(key, 4)
    options = dict(min_resolution=min_resolution, per_image=per_image, patch_size=patch_size,
                   batch_size=batch_size)
    real_levels = swd_descriptors(real, real_key, **options)
    fake_levels = swd_descriptors(fake, fake_key, **options)
    resolutions = swd_resolutions(real.shape[1], min_resolution)
    result = {}
    for index, (resolution, real_desc, fake_desc) in enumerate(
            zip(resolutions, real_levels, fake_levels)):
        count = min(len(real_desc), len(fake_desc))
        level_key = jax.random.fold_in(subsample_key, index)
        real_desc = _subsample(real_desc, count, jax.random.fold_in(level_key, 0))
        fake_desc = _subsample(fake_desc, count, jax.random.fold_in(level_key, 1))
        real_moments, fake_moments = _channel_moments(real_desc), _channel_moments(fake_desc)
        if normalisation == "union":
            union = tuple(r + f for r, f in zip(real_moments, fake_moments))
            real_moments = fake_moments = union
        distance = sliced_wasserstein(
            _normalise(real_desc, real_moments), _normalise(fake_desc, fake_moments),
            jax.random.fold_in(direction_key, index), num_repeats=num_repeats,
            num_directions=num_directions)
        result[f"swd_{resolution}"] = 1e3 * distance
    result["swd_avg"] = float(np.mean(list(result.values())))
    return result


def _subsample(descriptors: np.ndarray, count: int, key) -> np.ndarray:
    if len(descriptors) == count:
        return descriptors
    keep = np.asarray(jax.random.permutation(key, len(descriptors)))[:count]
    return descriptors[np.sort(keep)]


# ---------------------------------------------------------------------------------------
# Diversity and class agreement in a downsampled pixel space
#
# Both compare images after average pooling to 16 × 16: coarse enough that a pixel shift
# or texture noise does not dominate, fine enough to tell faces apart. Distances are RMS per
# value, so they read in the [−1, 1] units of the images.

PIXEL_SPACE_RESOLUTION = 16


def pooled_pixels(images, resolution: int = PIXEL_SPACE_RESOLUTION) -> np.ndarray:
    """(n, R, R, c) images → (n, r·r·c) float64 vectors of their average-pooled r × r
    version (r = `resolution`, which must divide R)."""
    array = as_float_images(images).astype(np.float64)
    n, height, width, channels = array.shape
    if height % resolution or width % resolution:
        raise ValueError(f"resolution {resolution} must divide the image size {height}×{width}")
    pooled = array.reshape(n, resolution, height // resolution, resolution,
                           width // resolution, channels).mean(axis=(2, 4))
    return pooled.reshape(n, -1)


def _rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, d), (m, d) → (n, m) Euclidean distances divided by √d."""
    squared = (np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :]
               - 2.0 * a @ b.T)
    return np.sqrt(np.maximum(squared, 0.0) / a.shape[1])


def mean_pairwise_distance(images, resolution: int = PIXEL_SPACE_RESOLUTION) -> float:
    """Mean RMS distance over the n (n − 1) / 2 distinct pairs of `images` (n ≥ 2, NHWC)
    pooled to `resolution`²: a set that has collapsed onto few images scores near 0."""
    vectors = pooled_pixels(images, resolution)
    if len(vectors) < 2:
        raise ValueError(f"need at least 2 images for pairwise distances, got {len(vectors)}")
    distances = _rms_distances(vectors, vectors)
    return float(distances[np.triu_indices(len(vectors), k=1)].mean())


def diversity_ratio(real_images, fake_images,
                    resolution: int = PIXEL_SPACE_RESOLUTION) -> float:
    """`mean_pairwise_distance` of the fakes over that of the real images: 1 when the
    samples spread as much as the data, well below 1 under mode collapse."""
    return (mean_pairwise_distance(fake_images, resolution)
            / mean_pairwise_distance(real_images, resolution))


def nearest_label_agreement(query_images, query_labels, reference_images, reference_labels,
                            resolution: int = PIXEL_SPACE_RESOLUTION) -> dict[str, float]:
    """A classifier-free check of a class-conditional generator: how often the nearest
    reference image (RMS distance at `resolution`²) of a query carries the query's label.

    When `query_images` is `reference_images` (the same object), each image's own entry is
    excluded (leave-one-out): the score of real images, the ceiling of the check.

    Args:
      query_images: (n, R, R, c) images, e.g. samples generated for `query_labels`.
      query_labels: (n,) int labels.
      reference_images: (m, R, R, c) labelled real images.
      reference_labels: (m,) int labels.

    Returns:
      {"agreement": share of queries whose nearest reference has their label,
       "chance": the share expected from labels alone, i.e. the mean over queries of the
       reference frequency of the query's label}.
    """
    query_labels, reference_labels = np.asarray(query_labels), np.asarray(reference_labels)
    if len(query_labels) != len(query_images) or len(reference_labels) != len(reference_images):
        raise ValueError("each image needs one label: got "
                         f"{len(query_images)} queries / {len(query_labels)} labels and "
                         f"{len(reference_images)} references / {len(reference_labels)} labels")
    leave_one_out = query_images is reference_images
    queries = pooled_pixels(query_images, resolution)
    references = queries if leave_one_out else pooled_pixels(reference_images, resolution)
    distances = _rms_distances(queries, references)
    if leave_one_out:
        np.fill_diagonal(distances, np.inf)
    nearest = reference_labels[np.argmin(distances, axis=1)]
    classes, counts = np.unique(reference_labels, return_counts=True)
    frequency = dict(zip(classes.tolist(), (counts / counts.sum()).tolist()))
    chance = float(np.mean([frequency.get(label, 0.0) for label in query_labels.tolist()]))
    return {"agreement": float(np.mean(nearest == query_labels)), "chance": chance}


# ---------------------------------------------------------------------------------------
# Fréchet distance and KID over features


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set.

    Args:
      features: (n, d) floating point, n ≥ 2.

    Returns:
      (mu (d,), sigma (d, d)), float64.
    """
    features = _as_features(features, "features")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
        features.shape[1], features.shape[1])


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root through eigh; tiny negative eigenvalues are rounding
    error of a PSD matrix and are clipped to 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}). Σ₁Σ₂ is not symmetric, but it is similar
    to the PSD matrix M = Σ₁^{1/2} Σ₂ Σ₁^{1/2}, so Tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(M): two symmetric
    eigendecompositions in float64, real by construction, no complex `sqrtm` output and no
    ε added to the diagonal when Σ is singular (n < d).

    Args:
      mu1: (d,) mean.
      sigma1: (d, d) symmetric PSD covariance.
      mu2: (d,) mean.
      sigma2: (d, d) symmetric PSD covariance.

    Returns:
      The distance as a Python float (≥ 0; rounding below 0 is clipped).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if (mu1.ndim != 1 or mu2.shape != mu1.shape or sigma1.shape != (d, d)
            or sigma2.shape != (d, d)):
        raise ValueError(f"expected mu (d,) and sigma (d, d) for both, got mu1 {mu1.shape}, "
                         f"sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be finite")
    root1 = _sqrtm_psd((sigma1 + sigma1.T) / 2)
    middle = root1 @ ((sigma2 + sigma2.T) / 2) @ root1
    trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)))
    value = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(value, 0.0))


def frechet_distance_from_features(features1, features2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n₁, d) and (n₂, d)."""
    mu1, sigma1 = feature_statistics(features1)
    mu2, sigma2 = feature_statistics(features2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} and {mu2.shape[0]}")
    return frechet_distance(mu1, sigma1, mu2, sigma2)


KID_NUM_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def polynomial_kernel(x, y) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³ for all pairs: (n, d), (m, d) -> (n, m) float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018, eq. 3).

    (1 / n(n−1)) Σ_{i≠j} k(xᵢ, xⱼ) + (1 / m(m−1)) Σ_{i≠j} k(yᵢ, yⱼ) − (2 / nm) Σ_{i,j} k(xᵢ, yⱼ).

    Args:
      x: (n, d), n ≥ 2.
      y: (m, d), m ≥ 2.

    Returns:
      The estimate as a Python float (may be slightly negative: it is unbiased).
    """
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must share d, got {x.shape} and {y.shape}")
    n, m = x.shape[0], y.shape[0]
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * polynomial_kernel(x, y).mean())


def kernel_inception_distance(features1, features2, *, num_subsets: int = KID_NUM_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE,
                              seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased polynomial MMD² averaged over random subsets.

    Each subset draws min(subset_size, n₁, n₂) rows of each set without replacement,
    independently per subset (Bińkowski et al.'s protocol; 100 subsets of 1000 are the
    common defaults).

    Args:
      features1: (n₁, d) floating point.
      features2: (n₂, d) floating point.
      num_subsets: number of subsets.
      subset_size: rows per subset, capped at min(n₁, n₂).
      seed: seeds the subset draws.

    Returns:
      (mean, std) over the subsets' MMD² estimates.
    """
    features1 = _as_features(features1, "features1")
    features2 = _as_features(features2, "features2")
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(f"feature dimensions differ: {features1.shape} and "
                         f"{features2.shape}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, "
                         f"{subset_size}")
    size = min(subset_size, features1.shape[0], features2.shape[0])
    rng = np.random.default_rng(seed)
    estimates = [
        mmd2_unbiased(features1[rng.choice(features1.shape[0], size, replace=False)],
                      features2[rng.choice(features2.shape[0], size, replace=False)])
        for _ in range(num_subsets)]
    return float(np.mean(estimates)), float(np.std(estimates))


def _as_features(features, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, d) with n >= 2, got {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} must be finite")
    return features


# ---------------------------------------------------------------------------------------
# Feature extractors


class FeatureExtractor(Protocol):
    """Maps a batch of images to feature vectors.

    Called with (n, h, w, 3) float32 in [−1, 1]; returns (n, d) features (any array type
    numpy can read). `InceptionFeatures` and `RandomConvFeatures` implement it; so does any
    function of that signature.
    """

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


@functools.partial(jax.jit, static_argnames=("negative_slope",))
def _random_conv_forward(params, images, negative_slope):
    """[N, H, W, C] -> [N, Σ channels]: per layer, a stride-2 3×3 conv and leaky ReLU; the
    output concatenates every layer's global average."""
    pooled, x = [], images
    for kernel, bias in params:
        x = jax.lax.conv_general_dilated(
            x, kernel, window_strides=(2, 2), padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
        x = jax.nn.leaky_relu(x, negative_slope)
        pooled.append(jnp.mean(x, axis=(1, 2)))
    return jnp.concatenate(pooled, axis=-1)


class RandomConvFeatures:
    """A fixed, randomly initialised conv net as a weight-free feature space.

    Four stride-2 3×3 convolutions (32, 64, 128, 256 channels by default, He-normal
    weights drawn from `seed`, zero biases, leaky ReLU 0.2); the features are every
    layer's global average, concatenated (480-d by default). Random conv features see
    colour, texture and local structure but no semantics: distances in this space are
    meant for *relative* comparisons between models scored with the same seed, and are
    not comparable with FID/KID numbers computed with Inception.

    Args:
      seed: fixes the weights; the same seed gives the same features.
      channels: output channels of each layer.
      in_channels: the images' channel count.
      negative_slope: the leaky ReLU's slope.
    """

    def __init__(self, seed: int = 0, channels: Sequence[int] = (32, 64, 128, 256),
                 in_channels: int = 3, negative_slope: float = 0.2):
        if not channels or any(c < 1 for c in channels) or in_channels < 1:
            raise ValueError(f"channels and in_channels must be positive, got {channels}, "
                             f"{in_channels}")
        self.seed, self.channels, self.in_channels = seed, tuple(channels), in_channels
        rng = np.random.default_rng(seed)  # numpy: no per-shape compilation of random ops
        params, fan_in_channels = [], in_channels
        for out_channels in self.channels:
            std = np.sqrt(2.0 / (9 * fan_in_channels))  # He-normal for 3×3 kernels
            kernel = std * rng.standard_normal((3, 3, fan_in_channels, out_channels))
            params.append((jnp.asarray(kernel, jnp.float32), jnp.zeros((out_channels,))))
            fan_in_channels = out_channels
        self.params = tuple(params)
        self.negative_slope = float(negative_slope)

    @property
    def feature_dim(self) -> int:
        return sum(self.channels)

    def __call__(self, images) -> np.ndarray:
        """(n, h, w, in_channels) float in [−1, 1] or uint8 -> (n, feature_dim) float32."""
        images = as_float_images(images)
        if images.shape[-1] != self.in_channels:
            raise ValueError(f"images must have {self.in_channels} channels, got shape "
                             f"{images.shape}")
        return np.asarray(_random_conv_forward(self.params, images,
                                               negative_slope=self.negative_slope))


def extract_features(extractor: FeatureExtractor, images, batch_size: int = 50) -> np.ndarray:
    """Runs `extractor` over `images` in batches.

    Args:
      extractor: a `FeatureExtractor`.
      images: (n, h, w, c) uint8 or float in [−1, 1].
      batch_size: images per call; the last batch may be smaller.

    Returns:
      (n, d) float64.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = as_float_images(images)
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        features = np.asarray(extractor(batch), dtype=np.float64)
        if features.ndim != 2 or features.shape[0] != batch.shape[0]:
            raise ValueError(f"the extractor returned shape {features.shape} for a batch of "
                             f"{batch.shape[0]} images; expected ({batch.shape[0]}, d)")
        chunks.append(features)
    return np.concatenate(chunks)


def fid(extractor: FeatureExtractor, real_images, fake_images, batch_size: int = 50) -> float:
    """Fréchet distance between the two image sets' features (FID with Inception pool3).

    Args:
      extractor: a `FeatureExtractor`.
      real_images: (n, h, w, c) uint8 or float in [−1, 1], n ≥ 2.
      fake_images: (m, h', w', c), m ≥ 2.
      batch_size: images per extractor call.

    Returns:
      The distance as a Python float.
    """
    return frechet_distance_from_features(extract_features(extractor, real_images, batch_size),
                                          extract_features(extractor, fake_images, batch_size))


def kid(extractor: FeatureExtractor, real_images, fake_images, batch_size: int = 50, *,
        num_subsets: int = KID_NUM_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) between the two image sets' features; see
    `kernel_inception_distance` for the subset protocol."""
    return kernel_inception_distance(
        extract_features(extractor, real_images, batch_size),
        extract_features(extractor, fake_images, batch_size),
        num_subsets=num_subsets, subset_size=subset_size, seed=seed)
