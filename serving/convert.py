"""Converts an exported SavedModel's float signature to ONNX and TFLite, and proves each matches."""

import json
import logging
import os
import re
import subprocess
import sys
import time
import typing
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from configs import errors
from serving import signatures

logger = logging.getLogger(__name__)

# tf2onnx 1.17 writes opsets up to 18; 17 is the newest that every onnxruntime since 1.13
# runs (18 moved Reduce* axes to inputs, which older runtimes and tools still trip on).
ONNX_OPSET = 17
# A large model can take minutes in tf2onnx; past this the subprocess is stopped.
ONNX_TIMEOUT_S = 1800

Quantize = typing.Literal["none", "dynamic_range"]
QUANTIZE_MODES = typing.get_args(Quantize)

# Float conversions compute the same graph with other kernels (oneDNN, MLAS, XNNPACK), so only
# the order of float32 sums differs: we measure 3e-8 to 4e-7 on small CNNs. 1e-5 leaves room for
# deeper models' longer reductions and still catches any real difference (a wrong op, layout
# or weight moves probabilities by 1e-3 or more).
FLOAT_TOLERANCE = 1e-5
# Dynamic-range quantisation rounds weights to int8, so probabilities move (1e-4 to 4e-3 on
# small CNNs) by an amount that depends on the model; what must survive is the decision.
# 0.95 allows one flip in twenty images; with fewer than 20 images it requires all to agree.
QUANTIZED_TOP1_AGREEMENT = 0.95

PARITY_SUFFIX = ".parity.json"


class ConversionError(errors.UserError):
    """A SavedModel that could not be converted or checked; names the format and the cause."""


def to_onnx(saved_model_dir: str | Path, out_path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """ONNX of `predict_images`: float32 [N, H, W, C] in [0, 1] in, `scores` and `classes` out.

    Runs `python -m tf2onnx.convert` in a subprocess: its Python API has no SavedModel entry
    point, and `from_function` on a loaded signature either refuses it or, wrapped in a
    tf.function, leaves the variables as an extra graph input instead of freezing them.
    The subprocess also keeps tf2onnx's graph-mode and logging changes out of this process.
    """
    saved_model_dir = _check_saved_model("onnx", saved_model_dir)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = out_path.with_name(f".tmp-{out_path.name}")
    command = [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        "--saved-model",
        str(saved_model_dir),
        "--tag",
        "serve",
        "--signature_def",
        signatures.PREDICT_IMAGES,
        "--opset",
        str(opset),
        "--output",
        str(staging),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=ONNX_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        staging.unlink(missing_ok=True)
        raise ConversionError(
            f"onnx conversion of {saved_model_dir} took over {ONNX_TIMEOUT_S} s and was stopped"
        ) from error
    if done.returncode != 0 or not staging.is_file():
        staging.unlink(missing_ok=True)
        logger.debug("tf2onnx output:\n%s", done.stdout + done.stderr)
        raise ConversionError(
            f"onnx conversion of {saved_model_dir} failed: {_tf2onnx_error(done.stderr)}"
        )
    staging.replace(out_path)
    logger.info("onnx: %s in %.1f s", out_path, time.monotonic() - start)
    return out_path


def to_tflite(
    saved_model_dir: str | Path, out_path: str | Path, quantize: Quantize = "none"
) -> Path:
    """TFLite of `predict_images`; "dynamic_range" stores big weights as int8, needing no data."""
    if quantize not in QUANTIZE_MODES:
        raise ConversionError(
            f"tflite quantize must be one of {', '.join(QUANTIZE_MODES)} (received {quantize!r})"
        )
    saved_model_dir = _check_saved_model("tflite", saved_model_dir)
    out_path = Path(out_path)
    start = time.monotonic()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model_dir), signature_keys=[signatures.PREDICT_IMAGES]
        )
        if quantize == "dynamic_range":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError, ValueError, OSError...
        logger.debug("tflite converter error", exc_info=True)
        raise ConversionError(
            f"tflite ({quantize}) conversion of {saved_model_dir} failed: {_first_line(error)}"
        ) from error
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = out_path.with_name(f".tmp-{out_path.name}")
    staging.write_bytes(flatbuffer)
    staging.replace(out_path)
    logger.info("tflite (%s): %s in %.1f s", quantize, out_path, time.monotonic() - start)
    return out_path


def build_parity_images(saved_model_dir: str | Path, count: int = 16, seed: int = 0) -> np.ndarray:
    """Fixed uniform-noise float images of the shape `predict_images` takes."""
    height, width, channels = _image_shape("parity", _check_saved_model("parity", saved_model_dir))
    rng = np.random.default_rng(seed)
    return rng.random((count, height, width, channels), dtype=np.float32)


def saved_model_outputs(
    saved_model_dir: str | Path, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, class names) of the SavedModel's `predict_images` on `images`: the reference
    every converted model is compared with (compute it once when checking several)."""
    signature = tf.saved_model.load(str(saved_model_dir)).signatures[signatures.PREDICT_IMAGES]
    expected = signature(**{signatures.IMAGES: tf.constant(images)})
    return expected[signatures.SCORES].numpy(), _strings(expected[signatures.CLASSES].numpy())


def check_parity(
    saved_model_dir: str | Path,
    converted_path: str | Path,
    images: np.ndarray,
    tolerance: float | None = None,
    expected: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Runs `predict_images` and the converted model on `images`; a JSON-able verdict.

    The format comes from the suffix (.keras, .onnx, .tflite) and, for TFLite, from its weights
    (int8 weights mean dynamic-range quantisation). Float formats pass when the largest
    probability difference is <= tolerance (default FLOAT_TOLERANCE). Quantised ones pass when
    the top-1 agreement is >= QUANTIZED_TOP1_AGREEMENT and, only if a tolerance is given, within
    it. Every format must also return the same class names as the SavedModel (a .keras model
    outputs probabilities only; its labels travel in the export's metadata). `expected` is
    `saved_model_outputs(saved_model_dir, images)`, computed here when not given.
    """
    converted_path = Path(converted_path)
    kind = converted_path.suffix.lstrip(".")
    if kind not in ("keras", "onnx", "tflite"):
        raise ConversionError(
            "parity: converted model must end in .keras, .onnx or .tflite "
            f"(received {converted_path})"
        )
    if not converted_path.is_file():
        raise ConversionError(f"{kind} parity: no converted model at {converted_path}")
    saved_model_dir = _check_saved_model(kind, saved_model_dir)
    images = _check_images(kind, images, _image_shape(kind, saved_model_dir))

    expected_scores, expected_classes = expected or saved_model_outputs(saved_model_dir, images)
    if kind == "onnx":
        quantize, (scores, classes) = "none", _run_onnx(converted_path, images)
    elif kind == "keras":
        quantize, (scores, classes) = "none", (_run_keras(converted_path, images), expected_classes)
    else:
        quantize, (scores, classes) = _run_tflite(converted_path, images)

    max_abs_diff = float(np.max(np.abs(scores.astype(np.float32) - expected_scores)))
    top1 = float(np.mean(scores.argmax(axis=1) == expected_scores.argmax(axis=1)))
    classes_match = classes.shape == expected_classes.shape and bool(
        np.all(classes == expected_classes)
    )
    if quantize == "none":
        tolerance = FLOAT_TOLERANCE if tolerance is None else tolerance
        passed = max_abs_diff <= tolerance
        top1_threshold = None
    else:
        top1_threshold = QUANTIZED_TOP1_AGREEMENT
        passed = top1 >= top1_threshold and (tolerance is None or max_abs_diff <= tolerance)
    return {
        "format": kind,
        "quantize": quantize,
        "converted": converted_path.name,
        "size_bytes": converted_path.stat().st_size,
        "num_images": int(images.shape[0]),
        "max_abs_diff": max_abs_diff,
        "top1_agreement": top1,
        "tolerance": tolerance,
        "top1_threshold": top1_threshold,
        "classes_match": classes_match,
        "passed": bool(passed and classes_match),
    }


def write_parity(result: dict, converted_path: str | Path) -> Path:
    """Writes `result` beside the converted file: `model.onnx` -> `model.onnx.parity.json`.

    One file per converted model, so a float and a quantised TFLite in one folder keep theirs.
    """
    converted_path = Path(converted_path)
    path = converted_path.with_name(converted_path.name + PARITY_SUFFIX)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _check_saved_model(kind: str, saved_model_dir: str | Path) -> Path:
    """Fails early, at the input, on a folder that is not an export with `predict_images`."""
    saved_model_dir = Path(saved_model_dir)
    names = _signature_defs(kind, saved_model_dir)
    if signatures.PREDICT_IMAGES not in names:
        found = ", ".join(sorted(name for name in names if not name.startswith("__"))) or "none"
        raise ConversionError(
            f"{kind}: {saved_model_dir} has no '{signatures.PREDICT_IMAGES}' signature (found: "
            f"{found}); export it with serving.export.export_saved_model"
        )
    return saved_model_dir


def _signature_defs(kind: str, saved_model_dir: Path) -> dict:
    # Read from saved_model.pb alone: cheap, and no variables are loaded just to validate.
    path = saved_model_dir / "saved_model.pb"
    if not path.is_file():
        raise ConversionError(
            f"{kind}: {saved_model_dir} is not a SavedModel (no saved_model.pb); pass an export "
            "version folder such as runs/<run_id>/export/<version>"
        )
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(path.read_bytes())
    return {name: sig for graph in proto.meta_graphs for name, sig in graph.signature_def.items()}


def _image_shape(kind: str, saved_model_dir: Path) -> tuple[int, int, int]:
    spec = _signature_defs(kind, saved_model_dir)[signatures.PREDICT_IMAGES].inputs
    dims = [dim.size for dim in spec[signatures.IMAGES].tensor_shape.dim]
    return tuple(dims[1:])


def _check_images(kind: str, images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    images = np.asarray(images)
    received = f"received {images.dtype} {list(images.shape)}"
    if images.ndim != 4 or tuple(images.shape[1:]) != shape or len(images) == 0:
        raise ConversionError(
            f"{kind} parity: images must be float [N, {', '.join(map(str, shape))}] with N > 0 "
            f"({received})"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ConversionError(f"{kind} parity: images must be floats in [0, 1] ({received})")
    if images.min() < 0 or images.max() > 1:
        raise ConversionError(
            f"{kind} parity: images must be in [0, 1] (received {images.min()}..{images.max()})"
        )
    return images.astype(np.float32)


def _run_keras(path: Path, images: np.ndarray) -> np.ndarray:
    # Imported here: only .keras files need the trainer's custom layers and schedules registered.
    import keras

    from trainer import models, optim  # noqa: F401

    model = keras.saving.load_model(path, compile=False)
    return np.asarray(model(images, training=False), np.float32)


def _run_onnx(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [node.name for node in session.get_inputs()]
    if inputs != [signatures.IMAGES]:
        raise ConversionError(
            f"onnx parity: {path} must take one input '{signatures.IMAGES}' (received {inputs})"
        )
    scores, classes = session.run(
        [signatures.SCORES, signatures.CLASSES], {signatures.IMAGES: images}
    )
    return scores, _strings(classes)


def _run_tflite(path: Path, images: np.ndarray) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
    interpreter = _tflite_interpreter(path)
    # int8 weights only appear when the converter quantised them.
    quantized = any(detail["dtype"] == np.int8 for detail in interpreter.get_tensor_details())
    # The signature runner resizes the batch dimension (resize_tensor_input) and names outputs.
    runner = interpreter.get_signature_runner(signatures.PREDICT_IMAGES)
    outputs = runner(**{signatures.IMAGES: images})
    quantize = "dynamic_range" if quantized else "none"
    return quantize, (outputs[signatures.SCORES], _strings(outputs[signatures.CLASSES]))


def _tflite_interpreter(path: Path):
    try:  # LiteRT is tf.lite.Interpreter's successor; TF 2.21 still ships the old one.
        from ai_edge_litert import interpreter as litert
    except ImportError:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return tf.lite.Interpreter(model_path=str(path))
    return litert.Interpreter(model_path=str(path))


def _strings(array: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s), otypes=[str])(
        array
    )


def _first_line(error: BaseException) -> str:
    """The first line of a converter message, without MLIR source locations."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return re.sub(r"loc\(.*\):\s*", "", line)


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception):\s*(.*)$")


def _tf2onnx_error(stderr: str) -> str:
    """The exception tf2onnx ended with (its traceback's last line), or its last output line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            return match.group(1).removeprefix("make_sure failure: ") or line
    return lines[-1] if lines else "tf2onnx exited without a message"
