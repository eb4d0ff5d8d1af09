"""Converts an exported SavedModel to ONNX and (quantised) TFLite, and checks each against it."""

import logging
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from core import errors, signatures

logger = logging.getLogger(__name__)

# tf2onnx 1.17 writes opsets up to 18; 17 is the newest that every onnxruntime since 1.13
# runs (18 moved Reduce* axes to inputs, which older runtimes and tools still trip on).
ONNX_OPSET = 17
# A large model can take minutes in tf2onnx; past this the subprocess is stopped.
ONNX_TIMEOUT_S = 1800

# none: float32. dynamic_range: int8 weights, float activations, no data needed. float16: float16
# weights, dequantised to float32 at load. int8: int8 weights and activations, calibrated on
# representative images; its input and output stay float32 (quantize/dequantize ops at the edges)
# so it keeps the float `images` -> `scores` signature every runner and client already uses.
Quantize = typing.Literal["none", "dynamic_range", "float16", "int8"]
QUANTIZE_MODES = typing.get_args(Quantize)
# Calibration sees this many images by default: ranges settle well before 200 on small CNNs and
# MobileNets, and each costs one float inference at conversion time.
REPRESENTATIVE_IMAGES = 200


class ConversionError(errors.UserError):
    """A SavedModel that could not be converted or checked; names the format and the cause."""


def to_onnx(saved_model_dir: str | Path, out_path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """ONNX of `predict_images`: float32 [N, H, W, C] in [0, 1] in, `scores` and `classes` out.

    Runs `python -m tf2onnx.convert` in a subprocess: its Python API has no SavedModel entry
    point, and `from_function` on a loaded signature either refuses it or, wrapped in a
    tf.function, leaves the variables as an extra graph input instead of freezing them.
    The subprocess also keeps tf2onnx's graph-mode and logging changes out of this process.
    """
    saved_model_dir = check_saved_model("onnx", saved_model_dir)
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
    saved_model_dir: str | Path,
    out_path: str | Path,
    quantize: Quantize = "none",
    representative: np.ndarray | None = None,
) -> Path:
    """TFLite of `predict_images`, quantised as `quantize` says (see Quantize).

    "int8" calibrates its activation ranges on `representative`: float images [N, H, W, C] in
    [0, 1] from the training data (REPRESENTATIVE_IMAGES of them is plenty); other modes need none.
    """
    if quantize not in QUANTIZE_MODES:
        raise ConversionError(
            f"tflite quantize must be one of {', '.join(QUANTIZE_MODES)} (received {quantize!r})"
        )
    saved_model_dir = check_saved_model("tflite", saved_model_dir)
    if quantize == "int8":
        if representative is None:
            raise ConversionError(
                "tflite int8 needs representative images to calibrate activation ranges "
                f"(received none); pass ~{REPRESENTATIVE_IMAGES} training images"
            )
        shape = image_shape("tflite", saved_model_dir)
        representative = check_images("tflite int8 calibration", representative, shape)
    out_path = Path(out_path)
    start = time.monotonic()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model_dir), signature_keys=[signatures.PREDICT_IMAGES]
        )
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.representative_dataset = lambda: ([image[None]] for image in representative)
            # Int8 kernels only: an op without one fails the conversion, rather than silently
            # running in float between extra (de)quantize ops.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
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


def check_saved_model(kind: str, saved_model_dir: str | Path) -> Path:
    """Fails early, at the input, on a folder that is not an export with `predict_images`."""
    saved_model_dir = Path(saved_model_dir)
    names = _signature_defs(kind, saved_model_dir)
    if signatures.PREDICT_IMAGES not in names:
        found = ", ".join(sorted(name for name in names if not name.startswith("__"))) or "none"
        raise ConversionError(
            f"{kind}: {saved_model_dir} has no '{signatures.PREDICT_IMAGES}' signature (found: "
            f"{found}); export it with artifacts.export.export_saved_model"
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


def image_shape(kind: str, saved_model_dir: Path) -> tuple[int, int, int]:
    spec = _signature_defs(kind, saved_model_dir)[signatures.PREDICT_IMAGES].inputs
    dims = [dim.size for dim in spec[signatures.IMAGES].tensor_shape.dim]
    return tuple(dims[1:])


def check_images(what: str, images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    images = np.asarray(images)
    received = f"received {images.dtype} {list(images.shape)}"
    if images.ndim != 4 or tuple(images.shape[1:]) != shape or len(images) == 0:
        raise ConversionError(
            f"{what}: images must be float [N, {', '.join(map(str, shape))}] with N > 0 "
            f"({received})"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ConversionError(f"{what}: images must be floats in [0, 1] ({received})")
    if images.min() < 0 or images.max() > 1:
        raise ConversionError(
            f"{what}: images must be in [0, 1] (received {images.min()}..{images.max()})"
        )
    return images.astype(np.float32)


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
