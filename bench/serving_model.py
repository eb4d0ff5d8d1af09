"""The model the serving and formats benchmarks measure: MobileNetV2 at 224x224x3 with random
weights and a 10-class softmax head, exported as `imgclf export` does, with its ONNX conversion
attached, and the time each step of its serving path takes in-process, without HTTP."""

import io
import time
from pathlib import Path

import keras
import numpy as np
from harness import timing
from PIL import Image

from artifacts import convert, export, formats, models, parity, runtimes

MODEL_NAME = "mobilenet"
CLASS_NAMES = [f"class_{index}" for index in range(10)]
IMAGE_SHAPE = (224, 224, 3)
BATCH = 32  # the batch of the in-process batch timings


def build_model() -> keras.Model:
    """MobileNetV2 (random init) on float RGB in [0, 1], as the exported signatures feed it."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE_SHAPE)
    scaled = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)  # [-1, 1], as MobileNetV2 expects
    backbone = keras.applications.MobileNetV2(
        input_shape=IMAGE_SHAPE, include_top=False, weights=None, pooling="avg"
    )
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")(backbone(scaled))
    return keras.Model(inputs, outputs, name="mobilenet_v2_bench")


def export_model(model: keras.Model, work: Path) -> Path:
    """`model` exported as version 1 under `work/export`; the version folder."""
    version_dir = export.export_saved_model(
        model, work / "export", 1, IMAGE_SHAPE[:2], IMAGE_SHAPE[2], CLASS_NAMES, {}
    )
    print(f"bench: exported MobileNetV2 ({model.count_params():,} parameters) to {version_dir}")
    return version_dir


def attach_onnx(version_dir: Path, work: Path) -> None:
    """As `imgclf export --format onnx` does: convert, check parity, attach to assets.extra."""
    started = time.perf_counter()
    onnx_path = convert.to_onnx(version_dir, work / "formats" / runtimes.ONNX_FILE)
    images = parity.build_parity_images(version_dir, count=8)
    verdict = parity.check_parity(version_dir, onnx_path, images)
    parity.write_parity(verdict, onnx_path)
    if not verdict["passed"]:
        raise RuntimeError(f"the ONNX conversion failed its parity check: {verdict}")
    formats.attach_onnx(version_dir, onnx_path)
    seconds = time.perf_counter() - started
    print(
        f"bench: ONNX conversion attached in {seconds:.0f}s (parity {verdict['max_abs_diff']:.1e})"
    )


def measure_in_process(
    model: keras.Model, version_dir: Path, images: list[bytes], repeats: int
) -> dict:
    """Median ms of each step of the model paths (the server's and the baseline's), in this
    process, no HTTP: where the time of a request goes."""
    served = models.ServedModel(MODEL_NAME, 1, version_dir, runtimes.SAVEDMODEL)
    on_onnx = models.ServedModel(MODEL_NAME, 1, version_dir, runtimes.ONNX)
    pixels = np.random.default_rng(0).random((1, *IMAGE_SHAPE), np.float32)
    batch = [images[index % len(images)] for index in range(BATCH)]
    batch_repeats = max(repeats // 8, 2)

    def pil_decode_resize():
        image = Image.open(io.BytesIO(images[0])).convert("RGB").resize(IMAGE_SHAPE[:2])
        return np.asarray(image, np.float32) / 255.0

    batch_ms = timing.median_ms(lambda: served.predict(batch), batch_repeats)
    figures = {
        "pil_decode_resize_ms": timing.median_ms(pil_decode_resize, repeats),
        "keras_model_predict_ms": timing.median_ms(
            lambda: model.predict(pixels, verbose=0), repeats
        ),
        "signature_pixels_batch1_ms": timing.median_ms(
            lambda: served.run("predict_images", {"images": pixels}), repeats
        ),
        "signature_jpeg_batch1_ms": timing.median_ms(lambda: served.predict(images[:1]), repeats),
        "signature_jpeg_batch32_ms": batch_ms,
        "signature_jpeg_batch32_images_per_s": round(BATCH / batch_ms * 1000, 1),
        "onnx_pixels_batch1_ms": timing.median_ms(
            lambda: on_onnx.run("predict_images", {"images": pixels}), repeats
        ),
        "onnx_jpeg_batch1_ms": timing.median_ms(lambda: on_onnx.predict(images[:1]), repeats),
        "onnx_jpeg_batch32_ms": timing.median_ms(lambda: on_onnx.predict(batch), batch_repeats),
    }
    figures["onnx_jpeg_batch32_images_per_s"] = round(
        BATCH / figures["onnx_jpeg_batch32_ms"] * 1000, 1
    )
    figures["preprocess_jpeg_batch1_ms"] = timing.median_ms(
        lambda: served.run("preprocess_images", {"image_bytes": served.image_array(images[:1])}),
        repeats,
    )
    return figures
