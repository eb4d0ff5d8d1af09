"""Shared fixtures: the bundled digits as PNGs, generated images and class-folder trees."""

import base64
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# What a tree spec maps a file name to: bytes are written as-is, a Path becomes a symlink to it.
TreeSpec = dict[str, dict[str, bytes | Path]]


def noise_image(seed: int, size: tuple[int, int] = (20, 16), mode: str = "RGB") -> Image.Image:
    """Random pixels of (width, height) = size; every seed gives distinct bytes.

    L, RGB and RGBA are generated directly; any other Pillow mode ("P", "1", "CMYK", "I;16")
    is converted from the RGB noise.
    """
    base_mode = mode if mode in ("L", "RGB", "RGBA") else "RGB"
    channels = len(base_mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, base_mode)
    return image.convert(mode) if mode != base_mode else image


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def write_tree(root: Path, spec: TreeSpec) -> Path:
    """Writes root/<class>/<file> for every entry of `spec` and returns root."""
    for class_name, files in spec.items():
        class_dir = root / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            if isinstance(content, Path):
                (class_dir / name).symlink_to(content)
            else:
                (class_dir / name).write_bytes(content)
    return root


def tiny_run_overrides(source: Path, root: Path) -> list[str]:
    """A dataset and run small enough to train in seconds (8x8 images, one 2-filter conv, one
    epoch), every output under `root`."""
    return [
        f"data.source={source}",
        f"data.output_dir={root / 'data'}",
        "data.beam_direct_mode=in_memory",
        "data.split={train: 0.5, val: 0.25, test: 0.25}",
        "data.image_size=[8, 8]",
        "data.batch_size=2",
        "model.cnn=[{conv: {filters: 2}}]",
        "train.epochs=1",
        f"train.runs_dir={root / 'runs'}",
    ]


def tiny_class_tree(root: Path, make_image, make_tree) -> Path:
    """root/tree/{cat,dog}/ with four 16x16 noise PNGs each."""
    spec = {
        name: {f"{i}.png": make_image(10 * c + i, size=(16, 16)) for i in range(4)}
        for c, name in enumerate(["cat", "dog"])
    }
    return make_tree(root / "tree", spec)


def export_dense_model(
    base: Path, side: int, channels: int, class_names: list[str], version: int = 1
) -> Path:
    """Exports Input (side, side, channels) -> Flatten -> Dense(softmax), seeded, as
    `base/<version>/` with the project's signatures: a real SavedModel in about a second."""
    import keras  # here: most test sessions never need Keras at collection time

    from artifacts import export

    keras.utils.set_random_seed(0)
    inputs = keras.Input((side, side, channels))
    outputs = keras.layers.Dense(len(class_names), activation="softmax")(
        keras.layers.Flatten()(inputs)
    )
    return export.export_saved_model(
        keras.Model(inputs, outputs), base, version, (side, side), channels, class_names, {}
    )


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's 1,797 digits as <dir>/<digit>/<n>.png, written once per session."""
    # Imported here: scikit-learn takes about a second to import and most sessions never need it.
    from transforms import digits

    out = tmp_path_factory.mktemp("digits")
    digits.write_digits(out)
    return out


@pytest.fixture(scope="session")
def make_image() -> Callable[..., bytes]:
    """make_image(seed, format="PNG", size=(20, 16), mode="RGB", **save_options) -> bytes."""

    def make(seed: int, image_format: str = "PNG", size=(20, 16), mode="RGB", **options) -> bytes:
        return encode(noise_image(seed, size, mode), image_format, **options)

    return make


@pytest.fixture(scope="session")
def make_tree() -> Callable[[Path, TreeSpec], Path]:
    """make_tree(root, {class: {file name: bytes or symlink target}}) -> root."""
    return write_tree


def digits_subset(digits_dir: Path, out: Path, per_class: int) -> Path:
    """out/<digit>/ with symlinks to the first `per_class` PNGs of each digit."""
    for class_dir in sorted(p for p in digits_dir.iterdir() if p.is_dir()):
        (out / class_dir.name).mkdir(parents=True)
        for png in sorted(class_dir.glob("*.png"))[:per_class]:
            (out / class_dir.name / png.name).symlink_to(png)
    return out


DIGITS_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"


@pytest.fixture(scope="session")
def ingested_digits(tmp_path_factory, digits_dir):
    """configs/digits.yaml's dataset made from the bundled digits, once per session.

    Training only reads it, so tests share it and pass `data.output_dir=<result.path.parent>`.
    """
    from configs import loader
    from transforms.beam import ingest

    out = tmp_path_factory.mktemp("digits_tfrecords")
    cfg = loader.load(
        DIGITS_CONFIG,
        [f"data.source={digits_dir}", f"data.output_dir={out}", "data.beam_direct_mode=in_memory"],
    )
    return ingest.run(cfg.data)


@pytest.fixture(scope="session")
def trained_digits_run(tmp_path_factory, ingested_digits, digits_dir):
    """A real digits run (4 epochs of configs/digits.yaml, test accuracy about 0.9), trained
    once per session through the whole flow: its run folder, SavedModel export, history and
    evaluation. Read-only."""
    from configs import loader
    from tfx_pipeline import flow

    runs_dir = tmp_path_factory.mktemp("digits_runs")
    cfg = loader.load(
        DIGITS_CONFIG,
        [
            f"data.source={digits_dir}",
            f"data.output_dir={ingested_digits.path.parent}",
            f"train.runs_dir={runs_dir}",
            "train.epochs=4",
        ],
    )
    return flow.run(cfg)


# A tiny exported model and images of other sizes and modes than its input: the artifact and
# serving tests' fixtures.
MODEL_NAME = "digits"
CLASS_NAMES = ["a", "b", "c"]


def b64(data: bytes) -> dict:
    """Encoded image bytes as TF Serving's JSON carries them."""
    return {"b64": base64.b64encode(data).decode("ascii")}


def image_request(images: list[bytes], name: str = MODEL_NAME):
    """A gRPC `serving_default` PredictRequest for encoded images."""
    import tensorflow as tf  # here: collecting the tests never needs TensorFlow
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images))
    return request


def encode_png(seed: int, size: tuple[int, int], mode: str) -> bytes:
    """Random noise as a PNG, so that different images get different scores."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def png_images() -> list[bytes]:
    """Three PNGs of other sizes and modes than the model's 32x32 grayscale input."""
    return [
        encode_png(0, (32, 32), "L"),
        encode_png(1, (48, 20), "RGB"),
        encode_png(2, (7, 9), "RGBA"),
    ]


@pytest.fixture(scope="module")
def export_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<base>/1/`: Input (32, 32, 1) -> Flatten -> Dense(3, softmax), exported for serving."""
    base = tmp_path_factory.mktemp("export")
    export_dense_model(base, 32, 1, CLASS_NAMES)
    return base


@pytest.fixture(scope="module")
def served_model(export_base: Path):
    from artifacts import models  # here, as in export_dense_model: TensorFlow loads on first use

    return models.ServedModel.latest(MODEL_NAME, export_base)
