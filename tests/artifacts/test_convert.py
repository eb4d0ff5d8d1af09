"""ONNX and TFLite conversions of an exported model, each checked against the SavedModel."""

import json
from pathlib import Path

import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf

from artifacts import convert, export, parity
from core import errors, signatures

IMAGE_SIZE = (16, 16)
CLASS_NAMES = ["cat", "dog", "fox"]


def tiny_cnn(seed: int) -> keras.Model:
    """Conv -> pool -> Dense(64) over 392 features: a 25k-weight kernel that quantisation shrinks.

    The wide head kernel makes probabilities differ across images, so parity is not trivial.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*IMAGE_SIZE, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    x = keras.layers.Dense(64, activation="relu")(x)
    head = keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))
    return keras.Model(inputs, keras.layers.Softmax()(head(x)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two exports of the same architecture with different weights: the model and a stranger."""
    base = tmp_path_factory.mktemp("convert")
    return {
        name: export.export_saved_model(
            tiny_cnn(seed), base / name, 1, IMAGE_SIZE, 3, CLASS_NAMES, {}
        )
        for name, seed in (("model", 0), ("other", 1))
    }


@pytest.fixture(scope="module")
def images(exported: dict[str, Path]) -> np.ndarray:
    return parity.build_parity_images(exported["model"], count=16, seed=0)


@pytest.fixture(scope="module")
def tflite(exported: dict[str, Path]) -> dict[str, Path]:
    out = exported["model"].parent.parent / "tflite"
    return {
        quantize: convert.to_tflite(exported["model"], out / f"model-{quantize}.tflite", quantize)
        for quantize in ("none", "dynamic_range")  # the other modes: test_quantize.py
    }


@pytest.fixture(scope="module")
def onnx_model(exported: dict[str, Path]) -> Path:
    return convert.to_onnx(exported["model"], exported["model"].parent.parent / "model.onnx")


def test_the_test_model_gives_distinct_scores(exported, images):
    signature = tf.saved_model.load(str(exported["model"])).signatures[signatures.PREDICT_IMAGES]
    scores = signature(images=tf.constant(images))[signatures.SCORES].numpy()
    assert images.shape == (16, *IMAGE_SIZE, 3) and images.dtype == np.float32
    assert np.ptp(scores, axis=0).max() > 0.05, scores
    assert np.ptp(np.sort(scores, axis=1)[:, -2:], axis=1).min() > 0.01, "a near tie flips top-1"


@pytest.mark.slow
def test_onnx_takes_the_float_images_and_matches_the_saved_model(exported, onnx_model, images):
    session = onnxruntime.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    (node,) = session.get_inputs()
    assert (node.name, node.type, node.shape[1:]) == ("images", "tensor(float)", [16, 16, 3])
    assert {output.name for output in session.get_outputs()} == {"scores", "classes"}

    result = parity.check_parity(exported["model"], onnx_model, images, None)
    assert result["format"] == "onnx" and result["quantize"] == "none"
    assert result["max_abs_diff"] <= parity.FLOAT_TOLERANCE, result
    assert result["top1_agreement"] == 1.0 and result["classes_match"], result
    assert result["passed"] and result["num_images"] == 16

    path = parity.write_parity(result, onnx_model)
    assert path == onnx_model.with_name("model.onnx.parity.json")
    assert json.loads(path.read_text()) == result


def test_float_tflite_matches_the_saved_model(exported, tflite, images):
    result = parity.check_parity(exported["model"], tflite["none"], images, None)
    assert result["format"] == "tflite" and result["quantize"] == "none"
    assert result["tolerance"] == parity.FLOAT_TOLERANCE
    assert result["max_abs_diff"] <= parity.FLOAT_TOLERANCE, result
    assert result["passed"] and result["classes_match"], result
    # Batches of other sizes than the 16 above go through the same converted model.
    assert parity.check_parity(exported["model"], tflite["none"], images[:3], None)["passed"]


def test_dynamic_range_tflite_keeps_the_decisions_and_shrinks(exported, tflite, images):
    result = parity.check_parity(exported["model"], tflite["dynamic_range"], images, None)
    assert result["quantize"] == "dynamic_range", result
    assert result["top1_agreement"] >= parity.QUANTIZED_TOP1_AGREEMENT, result
    assert result["passed"] and result["tolerance"] is None, result
    # Weights are rounded, so probabilities move: measurably, but far less than the top-2 gap.
    assert 0 < result["max_abs_diff"] < 0.05, result
    assert tflite["dynamic_range"].stat().st_size < 0.5 * tflite["none"].stat().st_size
    assert not parity.check_parity(exported["model"], tflite["dynamic_range"], images, 1e-6)[
        "passed"
    ]
    path = parity.write_parity(result, tflite["dynamic_range"])
    assert path.name == "model-dynamic_range.tflite.parity.json"


def test_a_conversion_of_another_model_fails_parity(exported, tmp_path, images):
    stranger = convert.to_tflite(exported["other"], tmp_path / "other.tflite")
    result = parity.check_parity(exported["model"], stranger, images, None)
    assert not result["passed"] and result["max_abs_diff"] > 0.05, result
    assert json.loads(parity.write_parity(result, stranger).read_text())["passed"] is False


def saved_model_with(tmp_path: Path, function_name: str, function) -> Path:
    module = tf.Module()
    module.f = function
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={function_name: function})
    return tmp_path / "sm"


def test_inputs_are_checked_before_converting(exported, tmp_path, images):
    assert issubclass(convert.ConversionError, errors.UserError)
    with pytest.raises(convert.ConversionError, match=r"tflite: .*no saved_model.pb"):
        convert.to_tflite(tmp_path / "missing", tmp_path / "x.tflite")
    with pytest.raises(convert.ConversionError, match=r"onnx: .*no saved_model.pb"):
        convert.to_onnx(tmp_path, tmp_path / "x.onnx")
    with pytest.raises(convert.ConversionError, match=r"quantize must be one of .*'int4'"):
        convert.to_tflite(exported["model"], tmp_path / "x.tflite", "int4")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(image_bytes):
        return {"scores": tf.strings.length(image_bytes)}

    bytes_only = saved_model_with(tmp_path, "serving_default", serve)
    with pytest.raises(convert.ConversionError, match=r"no 'predict_images' .*serving_default"):
        convert.to_tflite(bytes_only, tmp_path / "x.tflite")

    float_tflite = convert.to_tflite(exported["model"], tmp_path / "model.tflite")
    with pytest.raises(convert.ConversionError, match=r"images must be float \[N, 16, 16, 3\]"):
        parity.check_parity(exported["model"], float_tflite, images[..., :1], None)
    with pytest.raises(convert.ConversionError, match=r"in \[0, 1\]"):
        parity.check_parity(exported["model"], float_tflite, images * 255, None)
    with pytest.raises(convert.ConversionError, match=r"\.onnx or \.tflite"):
        parity.check_parity(exported["model"], exported["model"] / "saved_model.pb", images)
    assert not list(tmp_path.glob("x.*"))


def test_a_tflite_converter_failure_is_one_line_naming_the_op(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([None, 2, 2, 1], tf.float32, name="images")])
    def determinant(images):
        return {"scores": tf.linalg.det(images[..., 0])[:, None]}

    unsupported = saved_model_with(tmp_path, signatures.PREDICT_IMAGES, determinant)
    with pytest.raises(convert.ConversionError) as raised:
        convert.to_tflite(unsupported, tmp_path / "det.tflite")
    message = str(raised.value)
    assert message.startswith("tflite (none) conversion of ") and "\n" not in message
    assert "'tf.MatrixDeterminant' op is neither a custom op nor a flex op" in message
    assert "loc(" not in message and not (tmp_path / "det.tflite").exists()


@pytest.mark.slow
def test_a_tf2onnx_failure_is_one_line_naming_its_error(exported, tmp_path):
    with pytest.raises(convert.ConversionError) as raised:
        convert.to_onnx(exported["model"], tmp_path / "x.onnx", opset=19)
    message = str(raised.value)
    assert message.startswith("onnx conversion of ") and "\n" not in message
    assert message.endswith("failed: Opset 19 is not supported yet. Please use a lower opset")
    assert not list(tmp_path.iterdir())
