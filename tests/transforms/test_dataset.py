"""tf.data input pipelines, the shared decode/resize step and training-only augmentation."""

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from configs import loader, schema
from transforms import augment, dataset, dataset_info, images, preprocess
from transforms.beam import ingest

IMAGE_SIZE = (24, 20)  # (height, width): not square, so a swapped axis shows
BATCH_SIZE = 5
NUM_IMAGES = 12


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def shaded_image(seed: int, dark: bool, size: tuple[int, int], mode: str) -> Image.Image:
    """Noise in 0..60 (dark) or 195..255 (light), so a label can be checked from the pixels."""
    low = 0 if dark else 195
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(low, low + 61, (size[1], size[0], channels))
    pixels = pixels.astype(np.uint8)
    if mode == "RGBA":
        pixels[..., 3] = 255
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


def data_config(source, output_dir, channels: int) -> schema.DataConfig:
    return loader.load(
        None,
        [
            f"data.source={source}",
            f"data.output_dir={output_dir}",
            "data.beam_direct_mode=in_memory",
            f"data.channels={channels}",
            f"data.image_size=[{IMAGE_SIZE[0]}, {IMAGE_SIZE[1]}]",
            f"data.batch_size={BATCH_SIZE}",
            "data.examples_per_shard=3",
            "data.split={train: 1.0, val: 0.0, test: 0.0}",
        ],
    ).data


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory, make_tree):
    """12 images in classes dark/light: PNG (L, RGB, RGBA) and JPEG, of several sizes."""
    kinds = [
        ("PNG", "L", (20, 24)),
        ("PNG", "RGB", (64, 48)),
        ("PNG", "RGBA", (9, 7)),
        ("JPEG", "RGB", (30, 30)),
        ("JPEG", "L", (16, 40)),
        ("PNG", "RGB", (24, 20)),
    ]
    spec = {}
    for class_index, class_name in enumerate(["dark", "light"]):
        spec[class_name] = {
            f"{i}.{image_format.lower()}": encode(
                shaded_image(10 * class_index + i, class_name == "dark", size, mode), image_format
            )
            for i, (image_format, mode, size) in enumerate(kinds)
        }
    root = tmp_path_factory.mktemp("dataset")
    source = make_tree(root / "source", spec)
    result = ingest.run(data_config(source, root / "out", 3))
    assert result.dataset["written"] == NUM_IMAGES
    return result.path


def collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


@pytest.fixture(params=[1, 3], ids=["channels1", "channels3"])
def cfg(request, version_dir) -> schema.DataConfig:
    return data_config("unused", version_dir.parent, request.param)


def test_eval_batches_have_configured_shape_dtype_and_range(version_dir, cfg):
    ds = dataset.build_dataset(version_dir, "train", cfg, training=False)
    batches = list(ds.as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [5, 5, 2]
    for pixels, labels in batches:
        assert pixels.dtype == np.float32
        assert pixels.shape[1:] == (*IMAGE_SIZE, cfg.channels)
        assert pixels.min() >= 0.0 and pixels.max() <= 1.0
        assert labels.dtype == np.int64


def test_eval_labels_match_label_map(version_dir, cfg):
    label_map = dataset_info.load(version_dir)["label_map"]
    pixels, labels = collect(dataset.build_dataset(version_dir, "train", cfg, training=False))
    assert len(labels) == NUM_IMAGES
    for image, label in zip(pixels, labels, strict=True):
        assert label_map[label] == ("dark" if image.mean() < 0.5 else "light")


def test_eval_label_counts_match_dataset_json(version_dir, cfg):
    info = dataset_info.load(version_dir)
    _, labels = collect(dataset.build_dataset(version_dir, "train", cfg, training=False))
    counts = {
        info["label_map"][i]: int(n)
        for i, n in zip(*np.unique(labels, return_counts=True), strict=True)
    }
    assert counts == info["splits"]["train"]["per_class"]


def test_eval_order_is_deterministic(version_dir, cfg):
    assert len(dataset.shard_files(version_dir, "train")) > 1  # so interleaving could reorder
    ds = dataset.build_dataset(version_dir, "train", cfg, training=False)
    first_images, first_labels = collect(ds)
    second_images, second_labels = collect(ds)
    rebuilt_images, rebuilt_labels = collect(
        dataset.build_dataset(version_dir, "train", cfg, training=False)
    )
    np.testing.assert_array_equal(first_labels, second_labels)
    np.testing.assert_array_equal(first_images, second_images)
    np.testing.assert_array_equal(first_labels, rebuilt_labels)
    np.testing.assert_array_equal(first_images, rebuilt_images)


def test_num_examples_gives_known_length(version_dir, cfg):
    ds = dataset.build_dataset(version_dir, "train", cfg, training=False, num_examples=NUM_IMAGES)
    assert ds.cardinality().numpy() == 3


# --- augment.random_resized_crop in the training stream ---

CROP = schema.RandomResizedCropConfig(scale=(0.2, 0.6))


def cropped_training_batches(version_dir, cfg, seed: int, batches: int, skip: int = 0, crop=CROP):
    ds = dataset.build_training_dataset(
        version_dir, cfg, seed, BATCH_SIZE, skip_batches=skip, random_resized_crop=crop
    )
    return ds.take(batches)


def test_random_resized_crops_repeat_per_seed_and_a_skip_resumes_them(version_dir, cfg):
    first, again, resumed, other_seed = (
        list(cropped_training_batches(version_dir, cfg, seed, batches, skip).as_numpy_iterator())
        for seed, batches, skip in [(7, 4, 0), (7, 4, 0), (7, 2, 2), (8, 4, 0)]
    )
    for expected, actual in zip(first, again, strict=True):
        np.testing.assert_array_equal(expected[0], actual[0])
    for expected, actual in zip(first[2:], resumed, strict=True):
        np.testing.assert_array_equal(expected[0], actual[0])
        np.testing.assert_array_equal(expected[1], actual[1])
    assert not any(np.array_equal(a[0], b[0]) for a, b in zip(first, other_seed, strict=True))


def test_each_pass_crops_an_example_anew(version_dir, cfg):
    """Unshuffled, the stream repeats the 12 records in one order: positions p and p + 12 hold
    the same record, which gets another box (and the same pixels without the crop)."""
    unshuffled = cfg.model_copy(update={"shuffle_buffer": 0})
    for crop in (CROP, None):
        images, labels = collect(
            cropped_training_batches(version_dir, unshuffled, seed=3, batches=5, crop=crop)
        )
        np.testing.assert_array_equal(labels[:NUM_IMAGES], labels[NUM_IMAGES : 2 * NUM_IMAGES])
        same = [np.array_equal(images[p], images[p + NUM_IMAGES]) for p in range(NUM_IMAGES)]
        assert not any(same) if crop else all(same)


def test_random_resized_crops_keep_shape_range_and_labels(version_dir, cfg):
    label_map = dataset_info.load(version_dir)["label_map"]
    images, labels = collect(cropped_training_batches(version_dir, cfg, seed=0, batches=5))
    assert images.shape == (5 * BATCH_SIZE, *IMAGE_SIZE, cfg.channels)
    assert images.dtype == np.float32 and images.min() >= 0.0 and images.max() <= 1.0
    for image, label in zip(images, labels, strict=True):
        assert label_map[label] == ("dark" if image.mean() < 0.5 else "light")


def test_training_batches_are_augmented_in_range(version_dir, cfg):
    layers = [{"random_rotation": {"factor": 0.2}}, {"random_contrast": {"factor": 0.5}}]
    augmenter = augment.build_augmenter(schema.AugmentConfig(layers=layers), seed=0)
    ds = dataset.build_dataset(version_dir, "train", cfg, training=True, augmenter=augmenter)
    pixels, labels = collect(ds)
    assert pixels.shape == (NUM_IMAGES, *IMAGE_SIZE, cfg.channels)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert sorted(labels) == [0] * 6 + [1] * 6


def augmented_training_batches(version_dir, cfg, seed: int, batches: int, skip: int = 0):
    layers = [{"random_rotation": {"factor": 0.2}}, {"random_contrast": {"factor": 0.5}}]
    augmenter = augment.build_augmenter(schema.AugmentConfig(layers=layers), seed=0)
    ds = dataset.build_training_dataset(
        version_dir, cfg, seed, BATCH_SIZE, augmenter=augmenter, skip_batches=skip
    )
    return [images for images, _ in ds.take(batches).as_numpy_iterator()]


def test_training_stream_repeats_its_augmentation_and_a_skip_resumes_it(version_dir, cfg):
    first = augmented_training_batches(version_dir, cfg, seed=7, batches=6)
    again = augmented_training_batches(version_dir, cfg, seed=7, batches=6)
    resumed = augmented_training_batches(version_dir, cfg, seed=7, batches=4, skip=2)
    other_seed = augmented_training_batches(version_dir, cfg, seed=8, batches=6)
    for expected, actual in zip(first, again, strict=True):
        np.testing.assert_array_equal(expected, actual)
    for expected, actual in zip(first[2:], resumed, strict=True):
        np.testing.assert_array_equal(expected, actual)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_seed, strict=True))


def variable_ops(ds: tf.data.Dataset) -> set[str]:
    # The serialized pipeline holds its functions' bodies; tf.data's op-determinism rewrite
    # looks for exactly these ops there.
    graph = ds._as_serialized_graph().numpy()
    return {op for op in ("ReadVariableOp", "AssignVariableOp") if op.encode() in graph}


def test_augmented_pipelines_hold_no_variable_ops(version_dir, cfg):
    """A seed variable in the pipeline makes tf.data run all of it sequentially, without
    prefetch, when op determinism is on (train.deterministic)."""
    layers = [
        {name: kwargs}
        for name, kwargs in AUGMENT_EXAMPLES.items()
        if cfg.channels == 3 or name not in COLOUR_LAYERS
    ]
    augmenter = augment.build_augmenter(schema.AugmentConfig(layers=layers), 0, CLASSES)
    training = dataset.build_training_dataset(version_dir, cfg, 0, BATCH_SIZE, augmenter=augmenter)
    shuffled = dataset.build_dataset(version_dir, "train", cfg, True, augmenter=augmenter)
    assert variable_ops(training) == variable_ops(shuffled) == set()
    # The check can fail: calling the layers themselves draws from their seed variables.
    stateful = dataset.build_dataset(version_dir, "train", cfg, False).map(
        lambda images, labels: (augmenter(images, training=True), labels)
    )
    assert variable_ops(stateful)


def test_split_without_shards_raises(version_dir, cfg):
    with pytest.raises(FileNotFoundError, match="no val shards"):
        dataset.build_dataset(version_dir, "val", cfg, training=False)


# --- preprocess.decode_and_resize ---


def decode(data: bytes, size=IMAGE_SIZE, channels: int = 3, resize: str = "crop") -> np.ndarray:
    return preprocess.decode_and_resize(tf.constant(data), size, channels, resize=resize).numpy()


def test_stretch_antialiases_only_a_downscale_of_more_than_2x():
    """A 1-pixel checkerboard: averaged to grey by the area filter at 4x, while a 1.5x
    downscale gets plain bilinear (5x cheaper), the same as tf.image.resize without antialias."""
    board = (np.indices((96, 96)).sum(axis=0) % 2 * 255).astype(np.uint8)
    png = tf.io.encode_png(np.repeat(board[..., None], 3, axis=-1)).numpy()
    quarter = decode(png, (24, 24), resize="stretch")
    assert np.abs(quarter - 0.5).max() < 0.02  # aliasing would leave black and white pixels

    pixels = tf.image.convert_image_dtype(tf.io.decode_png(png, channels=3), tf.float32)
    plain = tf.clip_by_value(tf.image.resize(pixels, (64, 64), method="bilinear"), 0.0, 1.0)
    np.testing.assert_array_equal(decode(png, (64, 64), resize="stretch"), plain.numpy())
    no_resize = decode(png, (96, 96), resize="stretch")
    np.testing.assert_array_equal(no_resize, pixels.numpy())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("image_format", "options"), [("BMP", {}), ("WEBP", {"lossless": True})], ids=["bmp", "webp"]
)
def test_lossless_formats_give_same_pixels_as_png(make_image, image_format, options, channels):
    png = decode(make_image(3, "PNG", size=(64, 48)), channels=channels)
    other = decode(make_image(3, image_format, size=(64, 48), **options), channels=channels)
    np.testing.assert_array_equal(png, other)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("image_format", "mode"),
    [
        ("PNG", "L"),
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "LA"),
        ("PNG", "P"),
        ("PNG", "1"),
        ("PNG", "I;16"),
        ("JPEG", "L"),
        ("JPEG", "RGB"),
        ("JPEG", "CMYK"),
        ("GIF", "L"),
        ("GIF", "P"),
        ("BMP", "L"),
        ("BMP", "RGB"),
        ("BMP", "RGBA"),
        ("BMP", "P"),
        ("WEBP", "RGB"),
        ("WEBP", "RGBA"),
        ("WEBP", "LA"),
    ],
)
def test_every_image_ingest_stores_decodes(make_image, image_format, mode, channels):
    data = make_image(4, image_format, mode=mode)
    stored = images.Preparer(loader.load(None).data).prepare(data).data
    image = decode(stored, channels=channels)
    assert image.shape == (*IMAGE_SIZE, channels)
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_one_bit_bmp_is_converted_because_tensorflow_cannot_decode_it(make_image):
    data = make_image(4, "BMP", mode="1")
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode(data)
    prepared = images.Preparer(loader.load(None).data).prepare(data)
    assert prepared.rewritten and prepared.format == "png"
    assert decode(prepared.data).shape == (*IMAGE_SIZE, 3)


@pytest.mark.parametrize("size", [(32, 32), IMAGE_SIZE])
@pytest.mark.parametrize("channels", [1, 3])
def test_resizes_64x48_image_to_configured_size(make_image, size, channels):
    data = make_image(5, "PNG", size=(64, 48))
    image = decode(data, size=size, channels=channels)
    assert image.shape == (*size, channels)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_solid_color_survives_resize_scaled_to_unit_range():
    data = encode(Image.new("RGB", (64, 48), (255, 0, 51)), "PNG")
    np.testing.assert_allclose(
        decode(data), np.broadcast_to([1.0, 0.0, 0.2], (*IMAGE_SIZE, 3)), atol=1e-6
    )


def test_grayscale_file_decoded_as_rgb_has_equal_channels(make_image):
    image = decode(make_image(6, "PNG", mode="L"), channels=3)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_decode_batch_matches_single_decodes(make_image):
    blobs = [make_image(i, "PNG", size=(10 + i, 12)) for i in range(3)]
    batch = preprocess.decode_batch(tf.constant(blobs), IMAGE_SIZE, 3).numpy()
    assert batch.shape == (3, *IMAGE_SIZE, 3)
    for blob, image in zip(blobs, batch, strict=True):
        np.testing.assert_array_equal(decode(blob), image)


# --- augment.build_augmenter ---

AUGMENT_EXAMPLES = {
    "random_flip": {"mode": "horizontal_and_vertical"},
    "random_rotation": {"factor": 0.25},
    "random_zoom": {"height_factor": 0.4},
    "random_translation": {"height_factor": 0.3, "width_factor": 0.3},
    "random_shear": {"x_factor": 0.3, "y_factor": 0.3},
    "random_contrast": {"factor": 0.8},
    "random_brightness": {"factor": 0.5},
    "random_color_jitter": {"brightness_factor": 0.3, "hue_factor": 0.3},
    "random_hue": {"factor": 0.5},
    "random_saturation": {"factor": 0.9},
    "random_sharpness": {"factor": 0.9},
    "random_grayscale": {"factor": 0.5},
    "random_gaussian_blur": {"factor": 1.0, "sigma": 1.0},
    "random_erasing": {"factor": 1.0, "scale": [0.2, 0.4]},
    "rand_augment": {"num_ops": 3, "factor": 0.5},
    "mix_up": {"alpha": 0.4},
    "cut_mix": {"factor": 1.0},
}
CLASSES = 10  # what label-mixing layers one-hot encode labels to
# Layers that need RGB (the config refuses them with data.channels: 1).
COLOUR_LAYERS = ("random_color_jitter", "random_hue", "random_saturation", "rand_augment")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).random((8, *IMAGE_SIZE, 3), dtype=np.float32)


def test_no_layers_means_no_augmenter():
    assert augment.build_augmenter(schema.AugmentConfig(), seed=0) is None


def test_label_mixing_layers_need_the_number_of_classes():
    cfg = schema.AugmentConfig(layers=[{"mix_up": {}}])
    with pytest.raises(ValueError, match="MixUp and CutMix mix labels"):
        augment.build_augmenter(cfg, seed=0)
    assert augment.mixes_labels(augment.build_augmenter(cfg, seed=0, num_classes=3))
    flips = schema.AugmentConfig(layers=[{"random_flip": {}}])
    assert not augment.mixes_labels(augment.build_augmenter(flips, seed=0))


def test_every_augment_layer_has_an_example():
    assert set(AUGMENT_EXAMPLES) == set(augment.AUGMENT_LAYERS)


@pytest.mark.parametrize("name", sorted(AUGMENT_EXAMPLES))
def test_augment_layer_changes_pixels_keeping_shape_and_range(name, batch):
    layers = schema.AugmentConfig(layers=[{name: AUGMENT_EXAMPLES[name]}])
    augmenter = augment.build_augmenter(layers, seed=1, num_classes=CLASSES)
    out = np.asarray(augmenter(batch, training=True))
    assert out.shape == batch.shape
    assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
    assert not np.allclose(out, batch)


def test_augmenter_is_identity_outside_training(batch):
    layers = [{name: kwargs} for name, kwargs in AUGMENT_EXAMPLES.items()]
    augmenter = augment.build_augmenter(schema.AugmentConfig(layers=layers), 1, CLASSES)
    np.testing.assert_allclose(np.asarray(augmenter(batch, training=False)), batch, atol=1e-6)


def test_augmenter_repeats_with_same_seed(batch):
    cfg = schema.AugmentConfig(layers=[{"random_rotation": {"factor": 0.25}}])
    first = np.asarray(augment.build_augmenter(cfg, seed=3)(batch, training=True))
    second = np.asarray(augment.build_augmenter(cfg, seed=3)(batch, training=True))
    np.testing.assert_array_equal(first, second)


def test_digits_yaml_augmenter_has_its_two_layers():
    cfg = loader.load(Path(__file__).resolve().parents[2] / "configs" / "digits.yaml")
    augmenter = augment.build_augmenter(cfg.augment, seed=cfg.seed)
    assert [type(layer).__name__ for layer in augmenter.layers] == [
        "RandomRotation",
        "RandomTranslation",
    ]


@pytest.mark.parametrize("name", sorted(AUGMENT_EXAMPLES))
def test_seeded_augment_batch_changes_pixels_and_repeats_per_seed(name, batch):
    layers = schema.AugmentConfig(layers=[{name: AUGMENT_EXAMPLES[name]}])
    augmenter = augment.build_augmenter(layers, seed=1, num_classes=CLASSES)

    def run(seed):
        return augment.augment_batch(augmenter, tf.constant(batch), tf.constant(seed, tf.int64))

    out = run([4, 2]).numpy()
    assert out.shape == batch.shape
    assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
    assert not np.allclose(out, batch)
    np.testing.assert_array_equal(run([4, 2]).numpy(), out)
    assert not np.array_equal(run([4, 3]).numpy(), out)


def layer_by_layer(augmenter, images, seed):
    """What augment_batch computed before fusing: each layer resamples its input in turn."""
    for index, layer in enumerate(augmenter.layers):
        transformation = layer.get_random_transformation(
            images, training=True, seed=augment._SeedsFrom(seed, index)
        )
        images = layer.transform_images(images, transformation, training=True)
    return images.numpy()


def test_fused_spatial_layers_match_applying_them_in_turn():
    """Rotation, zoom and translation run as one composed transform. On linear ramps bilinear
    resampling is exact, so away from the filled edges it matches resampling three times, in
    config order (the reversed order is far off)."""
    rows, cols = np.mgrid[0:64, 0:48].astype(np.float32)
    smooth = np.stack([rows / 63, cols / 47, (rows + cols) / 110], axis=-1)
    images = tf.constant(np.stack([smooth, smooth[::-1], smooth[:, ::-1], smooth]))
    seed = tf.constant([5, 1], tf.int64)
    spatial = [
        {"random_rotation": {"factor": 0.05}},
        {"random_zoom": {"height_factor": 0.15}},
        {"random_translation": {"height_factor": 0.1, "width_factor": 0.1}},
    ]
    layers = [
        {"random_flip": {"mode": "horizontal"}},
        *spatial,
        # Not contrast: it scales around the image mean, which the filled edges move.
        {"random_brightness": {"factor": 0.2}},
    ]
    augmenter = augment.build_augmenter(schema.AugmentConfig(layers=layers), seed=2)
    fused = augment.augment_batch(augmenter, images, seed).numpy()
    expected = layer_by_layer(augmenter, images, seed)
    # Edges differ where a fill ("nearest") was resampled again; compare the middle.
    middle = (slice(None), slice(16, 48), slice(12, 36))
    assert np.abs(fused[middle] - expected[middle]).max() < 1e-4
    reordered = augment.build_augmenter(
        schema.AugmentConfig(layers=[layers[0], *spatial[::-1], layers[-1]]), seed=2
    )
    reordered.layers[1:4] = augmenter.layers[3:0:-1]
    assert np.abs(fused[middle] - layer_by_layer(reordered, images, seed)[middle]).max() > 0.01


def test_fused_spatial_layers_match_keras_own_sequential_call():
    """The composed transform against Keras itself: one augmenter called as a plain Keras
    Sequential, its twin (same seeds) through augment_batch drawing from the layers' own
    generators. Same draws, so on linear ramps the middle pixels agree."""
    rows, cols = np.mgrid[0:64, 0:48].astype(np.float32)
    smooth = np.stack([rows / 63, cols / 47, (rows + cols) / 110], axis=-1)
    images = tf.constant(np.stack([smooth, smooth[::-1], smooth[:, ::-1], smooth]))
    layers = [
        {"random_rotation": {"factor": 0.05, "fill_mode": "nearest"}},
        {"random_zoom": {"height_factor": 0.15, "fill_mode": "nearest"}},
        {"random_translation": {"height_factor": 0.1, "width_factor": 0.1, "fill_mode": "nearest"}},
    ]
    cfg = schema.AugmentConfig(layers=layers)
    by_keras = augment.build_augmenter(cfg, seed=11)(images, training=True).numpy()
    fused = augment.augment_batch(augment.build_augmenter(cfg, seed=11), images, None).numpy()
    middle = (slice(None), slice(16, 48), slice(12, 36))
    assert np.abs(fused[middle] - by_keras[middle]).max() < 1e-4
    assert np.abs(fused[middle] - images.numpy()[middle]).max() > 0.05  # it did move pixels
    other_seed = augment.build_augmenter(cfg, seed=12)(images, training=True).numpy()
    assert np.abs(fused[middle] - other_seed[middle]).max() > 0.01


# CutMix weighs labels by its box's real-valued area but cuts whole pixels: on 64x64 images
# the two differ by up to about 1.5% of the image.
@pytest.mark.parametrize(("name", "tolerance"), [("mix_up", 1e-5), ("cut_mix", 0.02)])
def test_label_mixing_mixes_targets_as_it_mixes_images(name, tolerance):
    """Three flat images, one per class: each output image's mean is the mix of the inputs'
    values that its one-hot-mixed target says."""
    values = np.array([0.1, 0.5, 0.9], np.float32)
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (3, 64, 64, 3)).copy())
    labels = tf.constant([0, 1, 2], tf.int64)
    layers = schema.AugmentConfig(layers=[{name: {}}])
    augmenter = augment.build_augmenter(layers, seed=1, num_classes=3)
    mixed, targets = augment.augment_batch(augmenter, images, tf.constant([3, 2], tf.int64), labels)
    targets = targets.numpy()
    assert targets.shape == (3, 3) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    assert (targets.max(axis=1) < 0.9).sum() >= 2  # images were mixed, with their targets
    means = mixed.numpy().mean(axis=(1, 2, 3))
    np.testing.assert_allclose(means, targets @ values, atol=tolerance)


def test_layers_that_ignore_the_seed_argument_still_draw_from_the_batch_seed(batch):
    """RandAugment and RandomColorJitter ask their own generator, not the seed they are given;
    augment_batch stands the batch's seed in for it, so a batch repeats and the layers' seed
    variables are never touched."""
    for name in ("rand_augment", "random_color_jitter"):
        layers = schema.AugmentConfig(layers=[{name: AUGMENT_EXAMPLES[name]}])
        augmenter = augment.build_augmenter(layers, seed=1)
        states = [v.numpy().copy() for v in augmenter.variables]
        seed = tf.constant([9, 9], tf.int64)
        first = augment.augment_batch(augmenter, tf.constant(batch), seed).numpy()
        np.testing.assert_array_equal(
            augment.augment_batch(augmenter, tf.constant(batch), seed).numpy(), first
        )
        for before, variable in zip(states, augmenter.variables, strict=True):
            np.testing.assert_array_equal(before, variable.numpy())


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_the_fast_flip_equals_keras_random_flip(mode, batch):
    """augment_batch flips by gathering each image's columns or rows (Keras' where() over the
    batch and its mirror costs twice as much): same draws, same pixels."""
    cfg = schema.AugmentConfig(layers=[{"random_flip": {"mode": mode}}])
    by_keras = augment.build_augmenter(cfg, seed=4)(batch, training=True).numpy()
    ours = augment.augment_batch(augment.build_augmenter(cfg, seed=4), tf.constant(batch), None)
    np.testing.assert_array_equal(ours.numpy(), by_keras)
    assert not np.array_equal(by_keras, batch)
