"""TensorBoard data beyond the per-epoch scalars: a run's hyperparameters and image grids."""

import math
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from tracking.hparams import HParamValue

# The scalar tags and sub-folders of `tensorboard/` that trainer/history.py writes each epoch.
METRIC_TAGS = ["epoch_loss", "epoch_accuracy"]
METRIC_GROUPS = {"train": hp.Metric.TRAINING, "validation": hp.Metric.VALIDATION}

MIN_TILE_PX = 64  # small images (8x8 digits) are upscaled by a whole factor to at least this
BORDER_PX = 2  # around every tile, so neighbouring images stay apart
BORDER_VALUE = 1.0  # white


def write_hparams(log_dir: Path, hparams: dict[str, HParamValue], metrics: list[str]) -> None:
    """Records one session's hyperparameters and the experiment (its hparam and metric columns).

    log_dir is the run's `tensorboard/` folder: each tag in `metrics` is listed once per sub-folder
    in METRIC_GROUPS, where the training loop writes it.
    """
    for key, value in hparams.items():
        if not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"hparams[{key!r}] must be bool, int, float or str "
                f"(received {type(value).__name__} {value!r}); use flatten_hparams on a config"
            )
    if not metrics:
        raise ValueError("metrics must name at least one scalar tag (received [])")
    experiment_metrics = [
        hp.Metric(
            tag,
            group=group,
            display_name=f"{group} {tag.removeprefix('epoch_')}",
            dataset_type=dataset_type,
        )
        for group, dataset_type in METRIC_GROUPS.items()
        for tag in metrics
    ]
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        # TensorBoard uses the first experiment it finds among all runs under its logdir; every
        # run writes the same columns (one config schema), so whichever it picks fits them all.
        hp.hparams_config(
            hparams=[hp.HParam(name) for name in sorted(hparams)], metrics=experiment_metrics
        )
        hp.hparams(hparams)
    writer.close()


def write_image_grid(
    log_dir: Path,
    tag: str,
    images,
    labels,
    class_names: list[str],
    max_images: int = 16,
    step: int = 0,
) -> None:
    """Writes one image summary: the first max_images images as a near-square grid of tiles.

    images: [N, H, W, C] floats in [0, 1], C = 1 or 3 (numpy or tensor); labels: [N] class ids.
    The description lists the tiles' class names, row by row.
    """
    grid, names = build_image_grid(images, labels, class_names, max_images)
    cols = grid_columns(len(names))
    rows = [names[start : start + cols] for start in range(0, len(names), cols)]
    description = "Class of each tile, left to right, top to bottom:\n\n" + "\n".join(
        f"- row {number}: {', '.join(row)}" for number, row in enumerate(rows, start=1)
    )
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.image(tag, grid[np.newaxis], step=step, description=description)
    writer.close()


def build_image_grid(
    images, labels, class_names: list[str], max_images: int = 16
) -> tuple[np.ndarray, list[str]]:
    """The grid as a [rows * tile, cols * tile, 3] uint8 array, and the class name of each tile."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty [N, H, W, C] batch with C = 1 or 3 "
            f"(received shape {list(images.shape)})"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be floats in [0, 1] (received dtype {images.dtype})")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"labels must be [N] class ids, N = {len(images)} (received shape {list(labels.shape)})"
        )
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1 (received {max_images})")
    count = min(len(images), max_images)
    ids = [int(label) for label in labels[:count]]
    if any(not 0 <= i < len(class_names) for i in ids):
        raise ValueError(f"labels must be class ids in [0, {len(class_names)}) (received {ids})")
    peak = float(images[:count].max())
    # Augmentation may step a little outside [0, 1]; far above means a 0-255 scale.
    if peak > 1.5:
        raise ValueError(f"images must be in [0, 1] (received max {peak}); divide by 255")

    width = images.shape[2]
    scale = max(1, math.ceil(MIN_TILE_PX / width))
    tiles = np.clip(images[:count].astype(np.float32), 0.0, 1.0)
    tiles = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)  # nearest neighbour
    tiles = np.broadcast_to(tiles, tiles.shape[:3] + (3,))  # grayscale -> RGB
    pad = ((0, 0), (BORDER_PX, BORDER_PX), (BORDER_PX, BORDER_PX), (0, 0))
    tiles = np.pad(tiles, pad, constant_values=BORDER_VALUE)

    cols = grid_columns(count)
    rows = math.ceil(count / cols)
    tile_h, tile_w = tiles.shape[1:3]
    grid = np.full((rows * tile_h, cols * tile_w, 3), BORDER_VALUE, np.float32)
    for index, tile in enumerate(tiles):
        row, col = divmod(index, cols)
        grid[row * tile_h : (row + 1) * tile_h, col * tile_w : (col + 1) * tile_w] = tile
    # Quantize here rather than in tf.summary.image, which rounds with floor(x * 255.5).
    return np.round(grid * 255.0).astype(np.uint8), [class_names[i] for i in ids]


def grid_columns(count: int) -> int:
    """Columns of a near-square grid of count tiles: 16 -> 4, 10 -> 4 (3 rows), 3 -> 2."""
    return math.ceil(math.sqrt(count))
