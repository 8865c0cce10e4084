"""PNG outputs of the GAN experiment: sample grids and training curves.

matplotlib is used through its Agg canvas directly (no pyplot, no global backend switch);
grids are assembled in numpy and written with PIL.
"""

import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np

# Panels of the training-curve figure: (title, metric names drawn in it).
CURVE_PANELS = (
    ("losses", ("critic_loss", "generator_loss")),
    ("W-distance estimate E[T(real)] − E[T(fake)]", ("w_distance",)),
    ("gradient penalty", ("penalty",)),
    ("O-GAN correlation ρ(z, E(G(z)))", ("correlation",)),
)


def image_grid(images, side: int) -> np.ndarray:
    """Tiles the first side² images into one (side·H, side·W, C) uint8 image.

    Args:
      images: (n, H, W, C) float in [−1, 1] or uint8, n ≥ side²; C is 1 or 3.
      side: images per row and per column.

    Returns:
      (side·H, side·W, C) uint8; values outside [−1, 1] are clipped.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < side * side:
        raise ValueError(f"images must be (n >= {side * side}, H, W, C), got {images.shape}")
    if images.dtype != np.uint8:
        images = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    _, height, width, channels = images.shape
    tiles = images[:side * side].reshape(side, side, height, width, channels)
    return tiles.transpose(0, 2, 1, 3, 4).reshape(side * height, side * width, channels)


def save_image_grid(images, path, side: int = 8) -> pathlib.Path:
    """Writes `image_grid(images, side)` as a PNG (folder created); returns the path."""
    import PIL.Image

    grid = image_grid(images, side)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def save_image_strip(images, path) -> pathlib.Path:
    """Writes the images (n, H, W, C) side by side as one (H, n·W, C) PNG; returns the path."""
    import PIL.Image

    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    strip = np.concatenate(list(images), axis=1)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(strip[..., 0] if strip.shape[-1] == 1 else strip).save(path)
    return path


def read_metrics(path) -> tuple[list[dict], list[dict]]:
    """The train and eval rows of a metrics.jsonl, one per step (a resumed run's later row
    for a step wins), sorted by step."""
    rows = {"train": {}, "eval": {}}
    for line in pathlib.Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("split") in rows:
                rows[row["split"]][row["step"]] = row
    return tuple([table[step] for step in sorted(table)] for table in
                 (rows["train"], rows["eval"]))


def plot_training_curves(metrics_path, path, *, title: str = "",
                         eval_metrics: Sequence[str] = ()) -> pathlib.Path:
    """Plots losses, the W-distance estimate, the penalty and evaluation metrics vs step.

    Args:
      metrics_path: the run's metrics.jsonl (trainer's format).
      path: the PNG to write (folder created).
      title: the figure's title.
      eval_metrics: evaluation metrics to draw in a last panel (e.g. "modes_covered").

    Returns:
      The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train_rows, eval_rows = read_metrics(metrics_path)
    # Panels whose metrics the run does not log (O-GAN's correlation elsewhere) are left out.
    panels = [(name, keys, train_rows) for name, keys in CURVE_PANELS
              if any(key in row for row in train_rows for key in keys)]
    panels += [(f"eval: {key}", (key,), eval_rows) for key in eval_metrics]
    columns = 2
    figure = Figure(figsize=(10, 3.2 * math.ceil(len(panels) / columns)), dpi=80)
    FigureCanvasAgg(figure)
    for index, (name, keys, rows) in enumerate(panels):
        axes = figure.add_subplot(math.ceil(len(panels) / columns), columns, index + 1)
        for key in keys:
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, label=key, marker="." if len(points) < 30 else None)
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        if len(keys) > 1:
            axes.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
