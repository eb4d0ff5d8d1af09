"""Checks a converted model (.keras, .onnx, .tflite) against the SavedModel it came from:
probabilities, top-1 agreement, test accuracy, size and how a TFLite file was quantised."""

import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as tflite_schema

from artifacts import convert
from core import atomic_write, signatures

# Models run on chunks of this many images, so thousands of test images never share one tensor.
EVAL_BATCH = 32

# Float conversions compute the same graph with other kernels (oneDNN, MLAS, XNNPACK), so only
# the order of float32 sums differs: we measure 3e-8 to 4e-7 on small CNNs. 1e-5 leaves room for
# deeper models' longer reductions and still catches any real difference (a wrong op, layout
# or weight moves probabilities by 1e-3 or more).
FLOAT_TOLERANCE = 1e-5
# Quantisation rounds weights (and, for int8, activations), so probabilities move (1e-4 to 4e-3
# for dynamic range on small CNNs, up to 1e-2 for int8, whose softmax output has 1/256 steps) by
# an amount that depends on the model; what must survive is the decision.
# 0.95 allows one flip in twenty images; with fewer than 20 images it requires all to agree.
QUANTIZED_TOP1_AGREEMENT = 0.95


def build_parity_images(saved_model_dir: str | Path, count: int = 16, seed: int = 0) -> np.ndarray:
    """Fixed uniform-noise float images of the shape `predict_images` takes."""
    height, width, channels = convert.image_shape(
        "parity", convert.check_saved_model("parity", saved_model_dir)
    )
    rng = np.random.default_rng(seed)
    return rng.random((count, height, width, channels), dtype=np.float32)


def saved_model_outputs(
    saved_model_dir: str | Path, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, class names) of the SavedModel's `predict_images` on `images`: the reference
    every converted model is compared with (compute it once when checking several)."""
    signature = tf.saved_model.load(str(saved_model_dir)).signatures[signatures.PREDICT_IMAGES]

    def run(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        expected = signature(**{signatures.IMAGES: tf.constant(chunk)})
        return expected[signatures.SCORES].numpy(), _strings(expected[signatures.CLASSES].numpy())

    return _run_batched(run, images)


def check_parity(
    saved_model_dir: str | Path,
    converted_path: str | Path,
    images: np.ndarray,
    tolerance: float | None = None,
    expected: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Runs `predict_images` and the converted model on `images`; a JSON-able verdict.

    The format comes from the suffix (.keras, .onnx, .tflite) and, for TFLite, the quantisation
    from its tensor types (`tflite_quantize`). Float formats pass when the largest
    probability difference is <= tolerance (default FLOAT_TOLERANCE). Quantised ones pass when
    the top-1 agreement is >= QUANTIZED_TOP1_AGREEMENT and, only if a tolerance is given, within
    it. Every format must also return the same class names as the SavedModel (a .keras model
    outputs probabilities only; its labels travel in the export's metadata). `expected` is
    `saved_model_outputs(saved_model_dir, images)`, computed here when not given.
    """
    converted_path = Path(converted_path)
    kind = _converted_kind(converted_path)
    saved_model_dir = convert.check_saved_model(kind, saved_model_dir)
    images = convert.check_images(
        f"{kind} parity", images, convert.image_shape(kind, saved_model_dir)
    )

    expected_scores, expected_classes = expected or saved_model_outputs(saved_model_dir, images)
    quantize, scores, classes = _predict(kind, converted_path, images)
    if kind == "keras":
        classes = expected_classes

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


def measure_accuracy(
    converted_path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    reference_scores: np.ndarray,
) -> dict:
    """Test-set accuracy of the converted model beside the float model's: `images` and `labels`
    from the test split, `reference_scores` the SavedModel's on them (saved_model_outputs)."""
    converted_path = Path(converted_path)
    kind = _converted_kind(converted_path)
    labels = np.asarray(labels)
    if len(labels) != len(images) or len(reference_scores) != len(images) or len(images) == 0:
        raise convert.ConversionError(
            f"{kind} accuracy: need as many labels and reference scores as images, at least one "
            f"(received {len(images)} images, {len(labels)} labels, "
            f"{len(reference_scores)} reference scores)"
        )
    _, scores, _ = _predict(kind, converted_path, np.asarray(images, np.float32))
    predicted, reference = scores.argmax(axis=1), reference_scores.argmax(axis=1)
    accuracy = float(np.mean(predicted == labels))
    reference_accuracy = float(np.mean(reference == labels))
    return {
        "num_images": int(len(images)),
        "accuracy": accuracy,
        "reference_accuracy": reference_accuracy,
        "accuracy_delta": accuracy - reference_accuracy,
        "top1_agreement": float(np.mean(predicted == reference)),
    }


def tflite_quantize(path: str | Path) -> convert.Quantize:
    """How a TFLite file was quantised, read from its tensor types.

    Int8 weights alone cannot tell dynamic range from full integer, which has them too; only
    full integer computes int8 activations (operator outputs). float16 keeps float16 weights.
    """
    model = tflite_schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    constant_types, activation_types = set(), set()
    for graph in (model.Subgraphs(index) for index in range(model.SubgraphsLength())):
        produced = {
            int(tensor)
            for op in (graph.Operators(index) for index in range(graph.OperatorsLength()))
            for tensor in op.OutputsAsNumpy()
        }
        for index in range(graph.TensorsLength()):
            tensor = graph.Tensors(index)
            buffer = model.Buffers(tensor.Buffer())
            if index in produced:
                activation_types.add(tensor.Type())
            elif buffer.DataLength() or buffer.Size():  # Size: data stored past the flatbuffer
                constant_types.add(tensor.Type())
    types = tflite_schema.TensorType
    if types.INT8 in activation_types:
        return "int8"
    if types.FLOAT16 in constant_types:
        return "float16"
    return "dynamic_range" if types.INT8 in constant_types else "none"


def saved_model_size(saved_model_dir: str | Path) -> int:
    """Bytes of the graph and variables: what a float deployment ships (assets.extra/ holds
    metadata and attached conversions, not the model)."""
    saved_model_dir = Path(saved_model_dir)
    files = [saved_model_dir / "saved_model.pb", *(saved_model_dir / "variables").glob("*")]
    return sum(path.stat().st_size for path in files if path.is_file())


def tflite_interpreter(path: str | Path, num_threads: int | None = None):
    """An interpreter with the default delegates (XNNPACK on CPU); `num_threads` None lets
    TFLite choose."""
    try:  # LiteRT is tf.lite.Interpreter's successor; TF 2.21 still ships the old one.
        from ai_edge_litert import interpreter as litert
    except ImportError:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
    return litert.Interpreter(model_path=str(path), num_threads=num_threads)


def write_parity(result: dict, converted_path: str | Path) -> Path:
    """Writes `result` beside the converted file: `model.onnx` -> `model.onnx.parity.json`.

    One file per converted model, so a float and a quantised TFLite in one folder keep theirs.
    """
    converted_path = Path(converted_path)
    path = converted_path.with_name(converted_path.name + signatures.PARITY_SUFFIX)
    return atomic_write.write_json(path, result)


def _converted_kind(converted_path: Path) -> str:
    kind = converted_path.suffix.lstrip(".")
    if kind not in ("keras", "onnx", "tflite"):
        raise convert.ConversionError(
            "parity: converted model must end in .keras, .onnx or .tflite "
            f"(received {converted_path})"
        )
    if not converted_path.is_file():
        raise convert.ConversionError(f"{kind} parity: no converted model at {converted_path}")
    return kind


def _predict(kind: str, path: Path, images: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """(quantize, scores, classes) of a converted model; a .keras model's classes are empty."""
    if kind == "onnx":
        return "none", *_run_batched(_onnx_runner(path), images)
    if kind == "keras":
        return "none", *_run_batched(_keras_runner(path), images)
    return tflite_quantize(path), *_run_batched(_tflite_runner(path), images)


def _run_batched(run, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chunks = [
        run(images[start : start + EVAL_BATCH]) for start in range(0, len(images), EVAL_BATCH)
    ]
    return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))


def _keras_runner(path: Path):
    # Imported here: only .keras files need the trainer's custom layers and schedules registered.
    import keras

    from trainer import models, optim  # noqa: F401

    model = keras.saving.load_model(path, compile=False)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(model(images, training=False), np.float32)
        return scores, np.empty((len(images), 0), str)

    return run


def _onnx_runner(path: Path):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [node.name for node in session.get_inputs()]
    if inputs != [signatures.IMAGES]:
        raise convert.ConversionError(
            f"onnx parity: {path} must take one input '{signatures.IMAGES}' (received {inputs})"
        )

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, classes = session.run(
            [signatures.SCORES, signatures.CLASSES], {signatures.IMAGES: images}
        )
        return scores, _strings(classes)

    return run


def _tflite_runner(path: Path):
    # The signature runner resizes the batch dimension (resize_tensor_input) and names outputs.
    runner = tflite_interpreter(path).get_signature_runner(signatures.PREDICT_IMAGES)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = runner(**{signatures.IMAGES: images})
        return outputs[signatures.SCORES], _strings(outputs[signatures.CLASSES])

    return run


def _strings(array: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s), otypes=[str])(
        array
    )
