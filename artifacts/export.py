"""Exports a trained Keras model as a TF Serving SavedModel: encoded bytes in, scores out."""

import json
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from artifacts import warmup
from configs import loader, schema
from core import run_layout, signatures
from transforms import preprocess


def build_serving_functions(
    model: keras.Model,
    image_size: tuple[int, int],
    channels: int,
    class_names: list[str],
    background: tuple[int, int, int] = preprocess.DEFAULT_BACKGROUND,
    resize: str = preprocess.DEFAULT_RESIZE,
    crop_fraction: float = preprocess.DEFAULT_CROP_FRACTION,
) -> dict[str, tf.types.experimental.PolymorphicFunction]:
    """The signatures of the contract in core/signatures.py, as tf.functions; bytes are
    decoded and fitted as data.background, data.resize and data.crop_fraction say."""
    height, width = image_size
    names = tf.constant(class_names, dtype=tf.string)

    def decode(image_bytes):
        return preprocess.decode_batch(
            image_bytes, image_size, channels, background, resize, crop_fraction
        )

    def outputs(images):
        scores = tf.cast(model(images, training=False), tf.float32)
        classes = tf.tile(names[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {signatures.SCORES: scores, signatures.CLASSES: classes}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=signatures.IMAGE_BYTES)])
    def serve_bytes(image_bytes):
        return outputs(decode(image_bytes))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, height, width, channels], tf.float32, name=signatures.IMAGES)
        ]
    )
    def serve_images(images):
        return outputs(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=signatures.IMAGE_BYTES)])
    def preprocess_images(image_bytes):
        return {signatures.IMAGES: decode(image_bytes)}

    return {
        signatures.SERVING_DEFAULT: serve_bytes,
        signatures.PREDICT_IMAGES: serve_images,
        signatures.PREPROCESS: preprocess_images,
    }


def export_saved_model(
    model: keras.Model,
    export_base: str | Path,
    version: int,
    image_size: tuple[int, int],
    channels: int,
    class_names: list[str],
    metadata: dict,
    background: tuple[int, int, int] = preprocess.DEFAULT_BACKGROUND,
    model_name: str = "model",
    resize: str = preprocess.DEFAULT_RESIZE,
    crop_fraction: float = preprocess.DEFAULT_CROP_FRACTION,
) -> Path:
    """Writes `export_base/<version>/` (TF Serving layout) and returns that folder.

    The version folder appears atomically (written beside it, then renamed), so a server
    watching `export_base` never loads a half-written model. It carries TF Serving warm-up
    requests (artifacts/warmup.py); `model_name` only labels them, since TF Serving replays them
    against the version it is loading whatever name they carry.
    """
    export_base = Path(export_base)
    final = export_base / str(version)
    if final.exists():
        raise FileExistsError(f"export version {final} already exists; pick another version")
    staging = export_base / f".tmp-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    archive = keras.export.ExportArchive()
    archive.track(model)
    functions = build_serving_functions(
        model, image_size, channels, class_names, background, resize, crop_fraction
    )
    for name, function in functions.items():
        archive.add_endpoint(name=name, fn=function)
    archive.write_out(str(staging), verbose=False)
    metadata_dir = staging / signatures.METADATA_DIR
    metadata_dir.mkdir(exist_ok=True)
    (metadata_dir / signatures.METADATA_FILE).write_text(
        json.dumps({"class_names": class_names, **metadata}, indent=2, default=str) + "\n"
    )
    warmup.write_warmup_requests(staging, model_name, image_size, channels)
    staging.rename(final)
    return final


def read_metadata(version_dir: str | Path) -> dict:
    path = Path(version_dir) / signatures.METADATA_DIR / signatures.METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def export_trained_model(
    cfg: schema.Config,
    model: keras.Model,
    run_dir: Path,
    class_names: list[str],
    dataset_version: str,
) -> Path:
    """A trained run's model as its next SavedModel version, `<run>/export/<n>/`, with the
    resolved config and the dataset version in its metadata. Its test metrics are the
    evaluator's, in the run's metrics.json (written after the export, which is what it scores)."""
    return export_saved_model(
        model,
        run_dir / run_layout.EXPORT,
        version=run_layout.next_export_version(run_dir),
        image_size=tuple(cfg.data.image_size),
        channels=cfg.data.channels,
        class_names=class_names,
        background=tuple(cfg.data.background),
        resize=cfg.data.resize,
        crop_fraction=cfg.data.crop_fraction,
        metadata={
            "run_id": run_dir.name,
            "dataset_version": dataset_version,
            "config": loader.to_dict(cfg),
        },
    )
