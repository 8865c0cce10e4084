"""Input pipelines of the GAN experiment: an image folder, the embedded 2-D mixtures, or
generated shapes.

Images (docs/wgan_div.md §5.2): each file is centre-cropped to a square, resized to the
resolution with PIL's antialiasing Lanczos filter and kept as uint8 (n, R, R, 3); batches
stay uint8 on the way to the device and are scaled to [−1, 1] inside the train step
(`to_model_range`), which keeps 10k CelebA faces at 64² at 123 MB instead of 490 MB of
float32. The decoded array is cached as a .npy keyed by the folder's file list and the
resolution, so a second run (or the other presets of a sweep) skips decoding.

Generated shapes (docs/gan_architectures.md §4): `generate_shapes` draws labelled images
of one filled circle, square or triangle each, for `make demo` and tests on a machine with
no image data.

Mixtures (docs/wgan_div.md §5.1): every batch is drawn fresh from the mixture with a numpy
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
    """uint8 [0, 255] → float32 [−1, 1] as x/127.5 − 1 (the reference's x/255·2 − 1,
    docs/wgan_div.md §5.2).

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


# ----------------------------------------------------------------------------------------
# Labelled images (class-conditional training).

OLIVETTI_GRID = (20, 20)          # rows × columns of tiles in olivettifaces.gif
OLIVETTI_TILE = (57, 47)          # tile height × width in pixels
OLIVETTI_PER_PERSON = 10          # 40 people × 10 images, row-major, consecutive tiles


def load_olivetti(path, resolution: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The 400 Olivetti faces of `olivettifaces.gif` with their 40 identities.

    The file is one grayscale sheet of 20 × 20 tiles of 47×57 pixels (a 2-pixel white
    margin on the right); person p owns the 10 consecutive tiles 10p … 10p + 9 in row-major
    order. Each tile is centre-cropped, resized (`center_crop_resize`) and made RGB.

    Args:
      path: the GIF.
      resolution: output side R.

    Returns:
      (images (400, R, R, 3) uint8, labels (400,) int32 in [0, 40), names "person_00" …).

    Raises:
      experiments.data.RecordError: a missing or undecodable file, or a sheet too small for
        the grid (naming the file).
    """
    import PIL.Image

    path = pathlib.Path(path)
    try:
        with PIL.Image.open(path) as image:
            sheet = image.convert("L")
            sheet.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise data.RecordError(path, None, None, f"cannot read the Olivetti sheet: {error}"
                               ) from None
    (rows, columns), (height, width) = OLIVETTI_GRID, OLIVETTI_TILE
    if sheet.size[0] < columns * width or sheet.size[1] < rows * height:
        raise data.RecordError(path, None, None,
                               f"{sheet.size[0]}×{sheet.size[1]} pixels is smaller than "
                               f"{columns}×{rows} tiles of {width}×{height}")
    images = [center_crop_resize(sheet.crop((c * width, r * height, (c + 1) * width,
                                             (r + 1) * height)), resolution)
              for r in range(rows) for c in range(columns)]
    count = len(images) // OLIVETTI_PER_PERSON
    labels = np.repeat(np.arange(count, dtype=np.int32), OLIVETTI_PER_PERSON)
    return np.stack(images), labels, [f"person_{p:02d}" for p in range(count)]


def class_folders(folder, classes: str = "") -> list[pathlib.Path]:
    """The class sub-folders of `folder`: the named ones (comma-separated), or all.

    Raises:
      experiments.data.RecordError: a missing folder or named class, or no sub-folders.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise data.RecordError(folder, None, None, "no such directory")
    if classes:
        chosen = [folder / name.strip() for name in classes.split(",") if name.strip()]
        for path in chosen:
            if not path.is_dir():
                raise data.RecordError(path, None, None, "no such class sub-folder")
        return chosen
    chosen = sorted(path for path in folder.iterdir() if path.is_dir())
    if not chosen:
        raise data.RecordError(folder, None, None,
                               "no sub-folders: data.labels=subfolders needs one per class")
    return chosen


def load_labelled_images(folder, resolution: int, *, classes: str = "",
                         skip_bad: bool = False, cache_dir=None
                         ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Every image of each class sub-folder (`load_images` per folder, cached likewise).

    Args:
      folder: a directory whose sub-folders are the classes (e.g. ../shared/data/gan_faces
        with classes "celeba_align_10k,anime_faces_96px_5k").
      resolution, skip_bad, cache_dir: as `load_images`.
      classes: comma-separated sub-folder names ("": every sub-folder, sorted).

    Returns:
      (images (n, R, R, 3) uint8, labels (n,) int32, class names, skipped messages).

    Raises:
      experiments.data.RecordError: see `class_folders` and `load_images` (naming the file).
    """
    images, labels, names, skipped = [], [], [], []
    for label, path in enumerate(class_folders(folder, classes)):
        class_images, class_skipped = load_images(path, resolution, skip_bad=skip_bad,
                                                  cache_dir=cache_dir)
        images.append(class_images)
        labels.append(np.full(len(class_images), label, np.int32))
        names.append(path.name)
        skipped += class_skipped
    return np.concatenate(images), np.concatenate(labels), names, skipped


# Generated shapes (labelled images that need no data files).

SHAPES = ("circle", "square", "triangle")


def generate_shapes(count: int, resolution: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``count`` images of one filled shape each on a plain background, labelled by shape.

    Image i shows shape i mod 3 (`SHAPES`) in a random colour, size (a third to two thirds
    of the side) and position, fully inside the frame, on a darker random background. Drawn
    with PIL at 4× and downsampled (antialiased edges); the same (count, resolution, seed)
    always gives the same images.

    Returns:
      (images (count, R, R, 3) uint8, labels (count,) int32 in [0, 3), `SHAPES` as a list).
    """
    import PIL.Image
    import PIL.ImageDraw

    rng = np.random.default_rng(seed)
    scale = 4
    side = resolution * scale
    images = np.empty((count, resolution, resolution, 3), np.uint8)
    labels = (np.arange(count) % len(SHAPES)).astype(np.int32)
    for index, label in enumerate(labels):
        background = tuple(int(c) for c in rng.integers(0, 96, 3))
        colour = tuple(int(c) for c in rng.integers(128, 256, 3))
        size = rng.uniform(side / 3, 2 * side / 3)
        left, top = rng.uniform(0, side - size, 2)
        canvas = PIL.Image.new("RGB", (side, side), background)
        draw = PIL.ImageDraw.Draw(canvas)
        box = (left, top, left + size, top + size)
        if SHAPES[label] == "circle":
            draw.ellipse(box, fill=colour)
        elif SHAPES[label] == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(left + size / 2, top), (left, top + size), (left + size, top + size)],
                         fill=colour)
        images[index] = np.asarray(canvas.resize((resolution, resolution),
                                                 PIL.Image.Resampling.LANCZOS))
    return images, labels, list(SHAPES)
