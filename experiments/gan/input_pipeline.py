"""Input pipelines of the GAN experiment: an image folder, or the embedded 2-D mixtures.

Images (SPEC §2.3): each file is centre-cropped to a square, resized to the resolution with
PIL's antialiasing Lanczos filter and kept as uint8 (n, R, R, 3); batches stay uint8 on the
way to the device and are scaled to [−1, 1] inside the train step (`to_model_range`), which
keeps 10k CelebA faces at 64² at 123 MB instead of 490 MB of float32. The decoded array is
cached as a .npy keyed by the folder's file list and the resolution, so a second run (or the
other presets of a sweep) skips decoding.

Mixtures (issue 6, item 5): every batch is drawn fresh from the mixture with a numpy
generator seeded by (seed, batch index), so the stream is infinite and a resumed run sees
exactly the batches an uninterrupted one would.
"""

import hashlib
import json
import pathlib
from collections.abc import Mapping

import numpy as np

from experiments import data
from experiments.gan import mixture


def center_crop_resize(image, resolution: int) -> np.ndarray:
    """A PIL image → its central square, resized to resolution², RGB uint8.

    Args:
      image: a PIL image of any mode and size.
      resolution: the output side R ≥ 1.

    Returns:
      (R, R, 3) uint8.
    """
    import PIL.Image

    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    resized = square.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def to_model_range(images):
    """uint8 [0, 255] → float32 [−1, 1] as x/127.5 − 1 (SPEC §2.3: x/255·2 − 1).

    Works on numpy and jax arrays alike; floating inputs are returned as float32 unchanged.
    """
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    return images.astype(np.float32)


def _folder_fingerprint(folder: pathlib.Path, resolution: int) -> str:
    """A digest of the image files' relative paths, sizes and mtimes, and the resolution."""
    digest = hashlib.sha256(f"{folder.resolve()}|{resolution}".encode())
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in data.IMAGE_SUFFIXES and path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n"
                          .encode())
    return digest.hexdigest()[:16]


def load_images(folder, resolution: int, *, skip_bad: bool = False, cache_dir=None
                ) -> tuple[np.ndarray, list[str]]:
    """Decodes every image under `folder` to (n, R, R, 3) uint8, through a .npy cache.

    Args:
      folder: a directory of image files (sub-directories allowed).
      resolution: the side R of the square output.
      skip_bad: skip (and report) files that cannot be decoded instead of raising.
      cache_dir: where `images_{R}px_{digest}.npy` (and a .json beside it) are kept; None
        disables the cache.

    Returns:
      (images, skipped): the uint8 array in file order, and one message per skipped file.

    Raises:
      experiments.data.RecordError: an empty or missing folder, or naming the first file that
        cannot be decoded (without `skip_bad`).
    """
    folder = pathlib.Path(folder)
    cache = None
    if cache_dir is not None and folder.is_dir():
        name = f"images_{resolution}px_{_folder_fingerprint(folder, resolution)}"
        cache = pathlib.Path(cache_dir) / name
        if cache.with_suffix(".npy").exists() and cache.with_suffix(".json").exists():
            meta = json.loads(cache.with_suffix(".json").read_text())
            # A cache with skipped files serves only runs that also skip them.
            if skip_bad or not meta["skipped"]:
                return np.load(cache.with_suffix(".npy")), meta["skipped"]
    images, _, skipped = data.read_image_folder(
        folder, lambda image: center_crop_resize(image, resolution), skip_bad=skip_bad)
    messages = [str(error) for error in skipped.errors]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache.with_suffix(".npy"), images)
        cache.with_suffix(".json").write_text(json.dumps(
            {"folder": str(folder.resolve()), "resolution": resolution,
             "count": len(images), "skip_bad": skip_bad, "skipped": messages}) + "\n")
    return images, messages


def split_held_out(images: np.ndarray, num_held_out: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split into (train, held-out) with `num_held_out` held-out images.

    Raises:
      ValueError: when fewer than `num_held_out` + 1 images are available.
    """
    if not 0 < num_held_out < len(images):
        raise ValueError(f"cannot hold out {num_held_out} of {len(images)} images for "
                         "evaluation: lower --config.data.num_eval_images")
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(images))
    return images[order[num_held_out:]], images[order[:num_held_out]]


class MixtureBatches:
    """An endless stream of real batches from a 2-D mixture, resumable to the exact batch.

    Batch b is `mixture.sample(mix, np.random.default_rng([seed, b]), batch_size)`.

    Args:
      mix: the mixture (`experiments.gan.mixture.mixture("ring")`, ...).
      batch_size: points per batch.
      seed: the stream's seed.
    """

    def __init__(self, mix: mixture.Mixture, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.mix, self.batch_size, self.seed = mix, batch_size, seed
        self.batch = 0

    def state(self) -> dict[str, int]:
        """The index of the next batch: {"batch": b}."""
        return {"batch": self.batch}

    def restore(self, state: Mapping[str, int]) -> None:
        """Moves to a position returned by `state()`."""
        self.batch = int(state["batch"])

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.batch])
        self.batch += 1
        return {"real": mixture.sample(self.mix, rng, self.batch_size)}
