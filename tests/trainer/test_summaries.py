"""HParams and image-grid summaries, read back with TensorBoard's own event reader."""

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from tracking import hparams
from trainer import summaries

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CONFIG = {
    "name": "digits",
    "model": {"backbone": "cnn", "weights": None, "head": {"dropout": 0.2}},
    "optimizer": {"learning_rate": 0.001, "nesterov": False},
    "data": {"image_size": [32, 32], "storage_options": {}},
    "train": {"epochs": 3},
}


def read(log_dir) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def hparams_data(log_dir, tag: str) -> plugin_data_pb2.HParamsPluginData:
    content = read(log_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    data = plugin_data_pb2.HParamsPluginData.FromString(content[tag])
    assert data.version == metadata.PLUGIN_DATA_VERSION
    return data


def read_grid(log_dir, tag: str) -> tuple[np.ndarray, list[str]]:
    """The one image of the summary, decoded, and the class names listed in its description."""
    accumulator = read(log_dir)
    (event,) = accumulator.Tensors(tag)
    # An image summary is a string tensor: width, height, then one PNG per image.
    width, height, png = tf.make_ndarray(event.tensor_proto)
    grid = tf.io.decode_png(png).numpy()
    assert (int(width), int(height)) == (grid.shape[1], grid.shape[0])
    description = accumulator.SummaryMetadata(tag).summary_description
    rows = [line.partition(": ")[2] for line in description.splitlines() if line.startswith("- ")]
    return grid, [name for row in rows for name in row.split(", ")]


def tile(grid: np.ndarray, index: int, cols: int, size: int) -> np.ndarray:
    """Tile `index` (row-major) without its border."""
    row, col = divmod(index, cols)
    step = size + 2 * summaries.BORDER_PX
    top, left = row * step + summaries.BORDER_PX, col * step + summaries.BORDER_PX
    return grid[top : top + size, left : left + size]


def upscale(pixels: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def random_pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


def test_write_hparams_records_the_session_values(tmp_path):
    summaries.write_hparams(tmp_path, hparams.flatten_hparams(CONFIG), summaries.METRIC_TAGS)
    values = hparams_data(tmp_path, metadata.SESSION_START_INFO_TAG).session_start_info.hparams
    assert values["optimizer.learning_rate"].number_value == 0.001
    assert values["model.backbone"].string_value == "cnn"
    assert values["model.weights"].string_value == "null"
    assert values["optimizer.nesterov"].WhichOneof("kind") == "bool_value"
    assert values["train.epochs"].number_value == 3
    assert values["data.image_size"].string_value == "[32, 32]"
    assert len(values) == len(hparams.flatten_hparams(CONFIG))


def test_write_hparams_lists_metrics_per_split_folder(tmp_path):
    flat = hparams.flatten_hparams(CONFIG)
    summaries.write_hparams(tmp_path, flat, ["epoch_loss", "epoch_accuracy"])
    experiment = hparams_data(tmp_path, metadata.EXPERIMENT_TAG).experiment
    assert {(m.name.group, m.name.tag): m.display_name for m in experiment.metric_infos} == {
        ("train", "epoch_loss"): "train loss",
        ("train", "epoch_accuracy"): "train accuracy",
        ("validation", "epoch_loss"): "validation loss",
        ("validation", "epoch_accuracy"): "validation accuracy",
    }
    assert sorted(info.name for info in experiment.hparam_infos) == sorted(flat)


def test_write_hparams_rejects_values_the_plugin_cannot_store(tmp_path):
    with pytest.raises(TypeError, match=r"hparams\['data.image_size'\].*received list"):
        summaries.write_hparams(tmp_path, {"data.image_size": [32, 32]}, summaries.METRIC_TAGS)


def test_gray_grid_tiles_are_the_inputs_in_row_major_order(tmp_path):
    pixels = random_pixels((10, 8, 8, 1))
    labels = np.array([7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    summaries.write_image_grid(
        tmp_path, "examples", pixels.astype(np.float32) / 255.0, labels, CLASS_NAMES, step=3
    )
    grid, names = read_grid(tmp_path, "examples")
    # 10 tiles -> 4 columns x 3 rows; 8 px images upscaled 8x to 64 px, plus a 2 px border.
    size, step = 64, 64 + 2 * summaries.BORDER_PX
    assert grid.shape == (3 * step, 4 * step, 3)
    for index in range(10):
        expected = np.broadcast_to(upscale(pixels[index], 8), (size, size, 3))
        np.testing.assert_array_equal(
            tile(grid, index, cols=4, size=size), expected, f"tile {index}"
        )
    np.testing.assert_array_equal(grid[:, : summaries.BORDER_PX], 255)  # border
    np.testing.assert_array_equal(grid[2 * step :, 2 * step :], 255)  # the two empty tiles
    assert names == [CLASS_NAMES[label] for label in labels]
    assert read(tmp_path).Tensors("examples")[0].step == 3


def test_rgb_tensor_grid_keeps_colours_and_stops_at_max_images(tmp_path):
    pixels = random_pixels((9, 32, 32, 3), seed=1)
    images = tf.constant(pixels, tf.float32) / 255.0
    labels = tf.constant([3, 1, 4, 1, 5, 9, 2, 6, 5])
    summaries.write_image_grid(tmp_path, "rgb", images, labels, CLASS_NAMES, max_images=5)
    grid, names = read_grid(tmp_path, "rgb")
    # 5 tiles -> 3 columns x 2 rows; 32 px upscaled 2x.
    assert grid.shape == (2 * 68, 3 * 68, 3)
    for index in range(5):
        np.testing.assert_array_equal(tile(grid, index, cols=3, size=64), upscale(pixels[index], 2))
    assert names == ["three", "one", "four", "one", "five"]


@pytest.mark.parametrize(("width", "tile_px"), [(8, 64), (28, 84), (64, 64), (100, 100)])
def test_tiles_are_upscaled_by_a_whole_factor_to_at_least_64_px(width, tile_px):
    images = np.zeros((1, width, width, 1), np.float32)
    grid, _ = summaries.build_image_grid(images, [0], CLASS_NAMES)
    assert grid.shape == (tile_px + 2 * summaries.BORDER_PX,) * 2 + (3,)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 8, 8, 1), np.uint8), [0, 1], "floats in \\[0, 1\\].*uint8"),
        (np.full((2, 8, 8, 1), 255.0), [0, 1], "divide by 255"),
        (np.zeros((2, 8, 8, 2)), [0, 1], "C = 1 or 3.*\\[2, 8, 8, 2\\]"),
        (np.zeros((2, 8, 8, 1)), [0], "labels must be \\[N\\]"),
        (np.zeros((2, 8, 8, 1)), [0, 10], "class ids in \\[0, 10\\).*\\[0, 10\\]"),
    ],
)
def test_bad_image_batches_are_rejected_with_what_was_received(tmp_path, images, labels, message):
    with pytest.raises(ValueError, match=message):
        summaries.write_image_grid(tmp_path, "bad", images, np.array(labels), CLASS_NAMES)
