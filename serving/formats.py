"""`imgclf export`: a run's SavedModel in every requested format, each checked against it.

Output: `<run>/formats/<export version>/` holding `model.keras`, `model.onnx`, `model.tflite`
(float) and `model.dynamic_range.tflite`, each with a `<file>.parity.json`, plus `imgclf.json`
(the export's metadata: label map, resolved config, dataset version, metrics), so every file
travels with what it needs. The SavedModel stays where training wrote it (`<run>/export/<n>/`),
in TF Serving's layout.
"""

import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from configs import errors
from serving import convert, export, signatures

FORMATS = ("savedmodel", "keras", "onnx", "tflite")
FORMATS_DIR = "formats"
KERAS_MODEL = "model.keras"  # the run's own file name (trainer/runs.py)
PARITY_IMAGES = 64


class ExportError(errors.UserError):
    """A run cannot be exported as asked; the message says why."""


def parse_formats(text: str) -> list[str]:
    formats = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ExportError(
            f"--format: unknown {', '.join(unknown) or 'nothing given'}; "
            f"choose from {','.join(FORMATS)}"
        )
    return formats


def latest_saved_model(run_dir: Path) -> Path:
    versions = sorted(
        (p for p in (run_dir / "export").glob("*") if p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions or not (versions[-1] / "saved_model.pb").is_file():
        raise ExportError(
            f"{run_dir} has no SavedModel under export/<n>/; train it first (`imgclf train`)"
        )
    return versions[-1]


def export_run(run_dir: str | Path, formats: list[str]) -> tuple[Path, list[dict]]:
    """Writes the requested formats of the run's newest SavedModel; returns (folder, parities).

    Raises ExportError when a conversion fails or does not match the SavedModel.
    """
    run_dir = Path(run_dir)
    saved_model = latest_saved_model(run_dir)
    out = run_dir / FORMATS_DIR / saved_model.name
    out.mkdir(parents=True, exist_ok=True)
    (out / signatures.METADATA_FILE).write_text(
        json.dumps(export.read_metadata(saved_model), indent=2, default=str) + "\n"
    )
    images, source = parity_images(saved_model)
    results = []
    for name in formats:
        started = time.time()
        if name == "savedmodel":
            print(f"export: savedmodel is {saved_model}")
            continue
        for path, result in convert_one(name, run_dir, saved_model, out, images):
            result["images"] = source
            convert.write_parity(result, path)
            results.append(result)
        print(f"export: {name} done in {time.time() - started:.1f}s")
    failed = [r for r in results if not r["passed"]]
    if failed:
        names = ", ".join(Path(r["converted"]).name for r in failed)
        raise ExportError(
            f"{names} did not match the SavedModel (see the .parity.json files in {out}); "
            "do not deploy them"
        )
    return out, results


def parity_images(saved_model: Path, count: int = PARITY_IMAGES) -> tuple[np.ndarray, str]:
    """The first `count` test-split images of the model's dataset when it is still on disk (real
    images: on noise a classifier has near ties that quantisation flips), else seeded noise."""
    metadata = export.read_metadata(saved_model)
    try:
        from configs import loader
        from transforms import dataset, dataset_info

        cfg = loader.validate(metadata["config"])
        version_dir = dataset_info.resolve_version_dir(
            cfg.data.output_dir, metadata["dataset_version"]
        )
        batches = dataset.build_dataset(version_dir, "test", cfg.data, False)
        images = np.concatenate([b.numpy() for b, _ in batches.take(count)])[:count]
        return images.astype(np.float32), f"test split of dataset {metadata['dataset_version']}"
    except (KeyError, errors.UserError, OSError, tf.errors.OpError):
        return convert.build_parity_images(saved_model, count), "seeded noise"


def convert_one(
    name: str, run_dir: Path, saved_model: Path, out: Path, images: np.ndarray
) -> list[tuple[Path, dict]]:
    """(file, parity result) for each file format `name` produces (TFLite: float, quantised)."""
    if name == "keras":
        return [(out / KERAS_MODEL, keras_parity(run_dir, saved_model, out / KERAS_MODEL, images))]
    if name == "onnx":
        paths = [convert.to_onnx(saved_model, out / "model.onnx")]
    else:
        paths = [
            convert.to_tflite(saved_model, out / "model.tflite", "none"),
            convert.to_tflite(saved_model, out / "model.dynamic_range.tflite", "dynamic_range"),
        ]
    return [(path, convert.check_parity(saved_model, path, images, None)) for path in paths]


def keras_parity(run_dir: Path, saved_model: Path, target: Path, images: np.ndarray) -> dict:
    """Copies the run's .keras model and compares its probabilities with the SavedModel's."""
    source = run_dir / KERAS_MODEL
    if not source.is_file():
        raise ExportError(f"{run_dir} has no {KERAS_MODEL}")
    shutil.copyfile(source, target)
    from trainer import models, optim  # noqa: F401  (registers the custom layers and schedules)

    model = keras.saving.load_model(target, compile=False)
    theirs = np.asarray(model(images, training=False), np.float32)
    signature = tf.saved_model.load(str(saved_model)).signatures[signatures.PREDICT_IMAGES]
    ours = signature(images=tf.constant(images))[signatures.SCORES].numpy()
    diff = float(np.abs(theirs - ours).max())
    agreement = float(np.mean(theirs.argmax(1) == ours.argmax(1)))
    return {
        "format": "keras",
        "quantize": "none",
        "converted": target.name,
        "size_bytes": target.stat().st_size,
        "num_images": len(images),
        "max_abs_diff": diff,
        "top1_agreement": agreement,
        "tolerance": convert.FLOAT_TOLERANCE,
        "passed": diff <= convert.FLOAT_TOLERANCE,
    }
