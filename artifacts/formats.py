"""`imgclf export`: a run's SavedModel in every requested format, each checked against it.

Output: `<run>/formats/<export version>/` holding `model.keras`, `model.onnx`, `model.tflite`
(float) and one `model.<mode>.tflite` per quantisation mode asked for (dynamic_range by default;
float16, int8), each with a `<file>.parity.json`: the parity verdict, the file's size beside the
float TFLite's and the SavedModel's, and its accuracy on the test split beside the SavedModel's.
`imgclf.json` holds the export's metadata (label map, resolved config, dataset version, metrics),
so every file travels with what it needs. The SavedModel stays where training wrote it
(`<run>/export/<n>/`), in TF Serving's layout.
"""

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from artifacts import convert, export, parity, runtimes
from configs import loader, schema
from core import errors, run_layout, saved_models, signatures
from transforms import dataset, dataset_store

FORMATS = ("savedmodel", "keras", "onnx", "tflite")
FORMATS_DIR = "formats"
PARITY_IMAGES = 64
DEFAULT_QUANTIZE = ("none", "dynamic_range")
# Accuracy is measured on the first this-many test images, in the split's fixed order: enough to
# see a 0.5 % drop, while the arrays (600 MB at 224x224x3 for 1000) stay in memory.
ACCURACY_IMAGES = 500


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


def parse_quantize(text: str) -> list[str]:
    modes = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(modes) - set(convert.QUANTIZE_MODES))
    if unknown or not modes:
        raise ExportError(
            f"--quantize: unknown {', '.join(unknown) or 'nothing given'}; "
            f"choose from {','.join(convert.QUANTIZE_MODES)}"
        )
    return modes


def tflite_name(quantize: str) -> str:
    return "model.tflite" if quantize == "none" else f"model.{quantize}.tflite"


def export_run(
    run_dir: str | Path,
    formats: list[str],
    quantize: Sequence[str] = DEFAULT_QUANTIZE,
    representative_images: int = convert.REPRESENTATIVE_IMAGES,
    accuracy_images: int = ACCURACY_IMAGES,
) -> tuple[Path, list[dict]]:
    """Writes the requested formats of the run's newest SavedModel; returns (folder, reports).

    `quantize` lists the TFLite files written (convert.Quantize); int8 calibrates on
    `representative_images` training images. Each report is the parity verdict plus sizes and
    test-split accuracy (see `add_report`). Raises ExportError when a conversion fails or does
    not match the SavedModel.
    """
    for flag, value in (
        ("--representative-images", representative_images),
        ("--accuracy-images", accuracy_images),
    ):
        if value <= 0:
            raise ExportError(f"{flag} must be > 0 (received {value})")
    run_dir = Path(run_dir)
    saved_model = saved_models.locate(run_dir).path
    out = run_dir / FORMATS_DIR / saved_model.name
    out.mkdir(parents=True, exist_ok=True)
    (out / signatures.METADATA_FILE).write_text(
        json.dumps(export.read_metadata(saved_model), indent=2, default=str) + "\n"
    )
    test = test_split(saved_model, max(accuracy_images, PARITY_IMAGES))
    reference = None
    if test is None:
        images, source = parity.build_parity_images(saved_model, PARITY_IMAGES), "seeded noise"
    else:
        test_images, labels, version = test
        images, source = test_images[:PARITY_IMAGES], f"test split of dataset {version}"
        test_images, labels = test_images[:accuracy_images], labels[:accuracy_images]
        scores = parity.saved_model_outputs(saved_model, test_images)[0]
        reference = (test_images, labels, version, scores)
    expected = parity.saved_model_outputs(saved_model, images)
    representative = None
    if "tflite" in formats and "int8" in quantize:
        representative = calibration_images(saved_model, representative_images)
    results = []
    for name in formats:
        started = time.time()
        if name == "savedmodel":
            print(f"export: savedmodel is {saved_model}")
            continue
        converted = convert_one(
            name, run_dir, saved_model, out, images, expected, quantize, representative
        )
        for path, result in converted:
            result["images"] = source
            add_report(result, path, saved_model, reference)
            parity.write_parity(result, path)
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
    verdict = onnx_path.with_name(onnx_path.name + signatures.PARITY_SUFFIX)
    # The verdict lands last: a server never sees a model without it, nor one half-copied.
    for source, destination in (
        (onnx_path, target),
        (verdict, target.with_name(target.name + signatures.PARITY_SUFFIX)),
    ):
        partial = destination.with_name(destination.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(destination)
    return target


def test_split(saved_model: Path, count: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(images, labels, dataset version): the first `count` test-split images of the model's
    dataset in the split's fixed order, or None when it is no longer on disk. Real images matter:
    on noise a classifier has near ties that quantisation flips, and no labels."""
    metadata = export.read_metadata(saved_model)
    try:
        cfg, version_dir = _dataset(metadata)
        split = dataset.build_dataset(version_dir, "test", cfg.data, False)
        images, labels = next(iter(split.unbatch().batch(count)))
    except (KeyError, errors.UserError, OSError, tf.errors.OpError, StopIteration):
        return None
    return images.numpy(), labels.numpy(), metadata["dataset_version"]


def calibration_images(saved_model: Path, count: int) -> np.ndarray:
    """`count` training-split images, drawn by a seeded shuffle of the records so that every
    class and shard is represented, to calibrate int8 activation ranges."""
    metadata = export.read_metadata(saved_model)
    try:
        cfg, version_dir = _dataset(metadata)
        files = dataset.shard_files(version_dir, "train")
        if not files:
            raise FileNotFoundError(f"no train shards in {version_dir}")
        records = tf.data.TFRecordDataset(files).shuffle(20 * count, seed=0)
        decoded = records.take(count).map(dataset.build_decoder(cfg.data)).batch(count)
        images, _ = next(iter(decoded))
    except (KeyError, errors.UserError, OSError, tf.errors.OpError, StopIteration) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ExportError(
            "tflite int8 calibrates on the training split of the model's dataset "
            f"{metadata.get('dataset_version', '(unknown)')}, which could not be read "
            f"({reason}); re-ingest it or drop int8 from --quantize"
        ) from error
    return images.numpy()


def _dataset(metadata: dict) -> tuple[schema.Config, str]:
    cfg = loader.validate(metadata["config"])
    return cfg, dataset_store.local_version_dir(cfg.data, metadata["dataset_version"])


def add_report(result: dict, path: Path, saved_model: Path, reference: tuple | None) -> None:
    """Adds to a parity result the file's size ratios and its test-split accuracy beside the
    SavedModel's (`reference`: test images, labels, dataset version, SavedModel scores)."""
    float_tflite = path.with_name(tflite_name("none"))
    result["size_ratio_to_saved_model"] = result["size_bytes"] / parity.saved_model_size(
        saved_model
    )
    result["size_ratio_to_float_tflite"] = (
        result["size_bytes"] / float_tflite.stat().st_size
        if result["format"] == "tflite" and float_tflite.is_file()
        else None
    )
    result["accuracy"] = None
    if reference is not None:
        images, labels, version, scores = reference
        accuracy = parity.measure_accuracy(path, images, labels, scores)
        result["accuracy"] = {**accuracy, "images": f"test split of dataset {version}"}


def format_table(results: list[dict]) -> list[str]:
    """One line per converted file: size, accuracy beside the SavedModel's, parity."""
    lines = [
        f"{'file':28}{'bytes':>11}{'/tflite':>8}{'/saved':>8}{'accuracy':>10}{'delta':>8}"
        f"{'agree':>8}{'max diff':>10}  parity"
    ]
    for r in results:
        accuracy = r["accuracy"]
        tflite_ratio = r["size_ratio_to_float_tflite"]
        lines.append(
            f"{r['converted']:28}{r['size_bytes']:11,d}"
            + (f"{tflite_ratio:8.2f}" if tflite_ratio is not None else f"{'-':>8}")
            + f"{r['size_ratio_to_saved_model']:8.2f}"
            + (
                f"{accuracy['accuracy']:10.2%}{accuracy['accuracy_delta']:+8.2%}"
                f"{accuracy['top1_agreement']:8.1%}"
                if accuracy
                else f"{'-':>10}{'-':>8}{'-':>8}"
            )
            + f"{r['max_abs_diff']:10.1e}  {'pass' if r['passed'] else 'FAIL'}"
        )
    return lines


def convert_one(
    name: str,
    run_dir: Path,
    saved_model: Path,
    out: Path,
    images: np.ndarray,
    expected,
    quantize: Sequence[str] = DEFAULT_QUANTIZE,
    representative: np.ndarray | None = None,
) -> list[tuple[Path, dict]]:
    """(file, parity result) for each file format `name` produces (TFLite: one per `quantize`
    mode; int8 calibrates on `representative`)."""
    if name == "keras":
        source = run_dir / run_layout.KERAS_MODEL
        if not source.is_file():
            raise ExportError(f"{run_dir} has no {run_layout.KERAS_MODEL}")
        paths = [Path(shutil.copyfile(source, out / run_layout.KERAS_MODEL))]
    elif name == "onnx":
        paths = [convert.to_onnx(saved_model, out / "model.onnx")]
    else:
        # Float first, so that the quantised files' reports find it to compare sizes with.
        ordered = sorted(quantize, key=lambda mode: mode != "none")
        paths = [
            convert.to_tflite(saved_model, out / tflite_name(mode), mode, representative)
            for mode in ordered
        ]
    return [
        (path, parity.check_parity(saved_model, path, images, None, expected)) for path in paths
    ]
