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

import numpy as np
import tensorflow as tf

from configs import errors, loader
from serving import convert, export, signatures
from serving.server import runtimes
from trainer import runs
from transforms import dataset, dataset_info

FORMATS = ("savedmodel", "keras", "onnx", "tflite")
FORMATS_DIR = "formats"
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
    versions = runs.saved_model_versions(run_dir / runs.EXPORT)
    if not versions:
        raise ExportError(
            f"{run_dir} has no SavedModel under {runs.EXPORT}/<n>/; train it first (`imgclf train`)"
        )
    return versions[max(versions)]


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
    expected = convert.saved_model_outputs(saved_model, images)
    results = []
    for name in formats:
        started = time.time()
        if name == "savedmodel":
            print(f"export: savedmodel is {saved_model}")
            continue
        for path, result in convert_one(name, run_dir, saved_model, out, images, expected):
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
    if "onnx" in formats:
        attached = attach_onnx(saved_model, out / runtimes.ONNX_FILE)
        print(f"export: {attached} lets `imgclf serve` run the model with onnxruntime")
    return out, results


def attach_onnx(saved_model: Path, onnx_path: Path) -> Path:
    """Copies the checked ONNX model and its parity verdict into the SavedModel's assets.extra/,
    where TF Serving ignores them and a registry push carries them to the server."""
    target = saved_model / signatures.METADATA_DIR / runtimes.ONNX_FILE
    parity = onnx_path.with_name(onnx_path.name + runtimes.PARITY_SUFFIX)
    # The verdict lands last: a server never sees a model without it, nor one half-copied.
    for source, destination in (
        (onnx_path, target),
        (parity, target.with_name(target.name + runtimes.PARITY_SUFFIX)),
    ):
        partial = destination.with_name(destination.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(destination)
    return target


def parity_images(saved_model: Path, count: int = PARITY_IMAGES) -> tuple[np.ndarray, str]:
    """The first `count` test-split images of the model's dataset when it is still on disk (real
    images: on noise a classifier has near ties that quantisation flips), else seeded noise."""
    metadata = export.read_metadata(saved_model)
    try:
        cfg = loader.validate(metadata["config"])
        version_dir = dataset_info.resolve_version_dir(
            cfg.data.output_dir, metadata["dataset_version"]
        )
        test_split = dataset.build_dataset(version_dir, "test", cfg.data, False)
        images, _ = next(iter(test_split.unbatch().batch(count)))
        return images.numpy(), f"test split of dataset {metadata['dataset_version']}"
    except (KeyError, errors.UserError, OSError, tf.errors.OpError):
        return convert.build_parity_images(saved_model, count), "seeded noise"


def convert_one(
    name: str, run_dir: Path, saved_model: Path, out: Path, images: np.ndarray, expected
) -> list[tuple[Path, dict]]:
    """(file, parity result) for each file format `name` produces (TFLite: float, quantised)."""
    if name == "keras":
        source = run_dir / runs.KERAS_MODEL
        if not source.is_file():
            raise ExportError(f"{run_dir} has no {runs.KERAS_MODEL}")
        paths = [Path(shutil.copyfile(source, out / runs.KERAS_MODEL))]
    elif name == "onnx":
        paths = [convert.to_onnx(saved_model, out / "model.onnx")]
    else:
        paths = [
            convert.to_tflite(saved_model, out / "model.tflite", "none"),
            convert.to_tflite(saved_model, out / "model.dynamic_range.tflite", "dynamic_range"),
        ]
    return [
        (path, convert.check_parity(saved_model, path, images, None, expected)) for path in paths
    ]
