"""The REST wire codec on its own: no server, no model, just bytes and arrays."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from serving.server import wire
from tests.conftest import b64

IMAGE_SPECS = {"image_bytes": tf.TensorSpec([None], tf.string)}
PIXEL_SPECS = {"images": tf.TensorSpec([None, 2], tf.float32)}
SIGNATURES = {
    "serving_default": IMAGE_SPECS,
    "predict_images": PIXEL_SPECS,
    "two_inputs": {
        "image_bytes": tf.TensorSpec([None], tf.string),
        "weights": tf.TensorSpec([None], tf.float32),
    },
}


def parse(body: dict | bytes) -> wire.PredictRequest:
    return wire.parse_predict(body if isinstance(body, bytes) else json.dumps(body), SIGNATURES)


def assert_bytes(array: np.ndarray, expected: list[bytes]) -> None:
    assert array.dtype == object and array.tolist() == expected


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [b64(b"a"), b64(b"bc")]},
        {"instances": [{"image_bytes": b64(b"a")}, {"image_bytes": b64(b"bc")}]},
        {"inputs": [b64(b"a"), b64(b"bc")]},
        {"inputs": {"image_bytes": [b64(b"a"), b64(b"bc")]}},
    ],
    ids=["rows", "rows_named", "columns", "columns_named"],
)
def test_the_four_formats_give_the_same_bytes(body: dict):
    request = parse(body)

    assert request.signature_name == "serving_default"
    assert request.row_format == ("instances" in body)
    assert list(request.inputs) == ["image_bytes"]
    assert_bytes(request.inputs["image_bytes"], [b"a", b"bc"])


def test_a_lone_b64_object_is_a_missing_batch_not_a_wrong_input_name():
    with pytest.raises(wire.BadRequest, match=r"non-empty list per input \(received \{'b64'"):
        parse({"inputs": b64(b"a")})


def test_numbers_and_several_inputs():
    pixels = parse({"signature_name": "predict_images", "instances": [[0, 1], [2.5, 3]]})
    rows = parse(
        {
            "signature_name": "two_inputs",
            "instances": [{"image_bytes": b64(b"x"), "weights": 0.5}],
        }
    )

    assert pixels.inputs["images"].dtype == np.float32
    np.testing.assert_array_equal(pixels.inputs["images"], [[0, 1], [2.5, 3]])
    assert_bytes(rows.inputs["image_bytes"], [b"x"])
    np.testing.assert_array_equal(rows.inputs["weights"], [0.5])


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[" * 100_000, "request body is not valid JSON"),
        (b"[]", "exactly one of 'instances'"),
        ({"instances": [], "inputs": []}, "exactly one of 'instances'"),
        ({"signature_name": ["serving_default"], "inputs": []}, "signature_name must be one of"),
        ({"signature_name": "classify", "inputs": []}, r"\['predict_images', 'serving_default'"),
        ({"instances": {}}, "'instances' must be a non-empty list"),
        ({"instances": [[1]]}, r"instances\[0\] must be an encoded image"),
        ({"instances": [{"b64": "@@"}]}, r"instances\[0\]\.b64 is not valid base64"),
        ({"instances": [{"b64": "YQ==", "x": 1}]}, "must be an encoded image"),
        ({"inputs": {"images": []}}, "'inputs' must have one key 'image_bytes'"),
        ({"inputs": []}, "'inputs' must hold a non-empty list per input"),
        (
            {"signature_name": "two_inputs", "instances": [b64(b"a")]},
            r"instances\[0\] must be an object with the keys \['image_bytes', 'weights'\]",
        ),
        (
            {"signature_name": "two_inputs", "inputs": [b64(b"a")]},
            r"'inputs' must be an object with the keys",
        ),
        ({"signature_name": "predict_images", "instances": [[1], [1, 2]]}, "equal-length"),
        ({"signature_name": "predict_images", "inputs": [b64(b"a")]}, "must be numbers"),
    ],
)
def test_wire_mistakes_are_bad_requests(body, expected: str):
    with pytest.raises(wire.BadRequest, match=expected):
        parse(body)


def test_long_values_are_shortened_in_errors():
    with pytest.raises(wire.BadRequest) as raised:
        parse({"instances": [["x" * 500]]})

    assert len(str(raised.value)) < 200 and "..." in str(raised.value)


OUTPUTS = {
    "scores": np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32),
    "classes": np.array([[b"cat", b"dog", b"f\xc3\xa9e"]] * 2, object),
}


def test_outputs_as_rows_and_columns():
    rows = wire.predict_response(OUTPUTS, row_format=True)
    columns = wire.predict_response(OUTPUTS, row_format=False)

    assert rows["predictions"][1] == {"scores": [0.5, 0.25, 0.25], "classes": ["cat", "dog", "fée"]}
    assert columns["outputs"]["classes"] == [["cat", "dog", "fée"]] * 2
    assert json.loads(json.dumps(rows)) == rows  # plain JSON types only


def test_classify_ranks_labels_and_keeps_class_order_on_ties():
    document = wire.classify_response("digits", 3, ["a.png", "b.png"], OUTPUTS, top_k=2)

    assert (document["model"], document["version"]) == ("digits", 3)
    first, second = document["results"]
    assert first["filename"] == "a.png"
    assert [top["label"] for top in first["top"]] == ["dog", "fée"]
    assert [top["label"] for top in second["top"]] == ["cat", "dog"]
    assert second["top"][0]["score"] == 0.5


@pytest.mark.parametrize(
    "path, expected",
    [
        ("digits:predict", (wire.ModelAddress("digits", None, None), "predict")),
        (
            "digits/versions/12:classify-images",
            (wire.ModelAddress("digits", 12, None), "classify-images"),
        ),
        ("digits/labels/canary:predict", (wire.ModelAddress("digits", None, "canary"), "predict")),
        ("digits", None),
        ("digits/versions/x:predict", None),
        ("a/b:predict", None),
        ("../etc:predict", None),
        ("digits/labels/../1:predict", None),
    ],
)
def test_post_paths(path: str, expected):
    assert wire.parse_post_path(path) == expected


@pytest.mark.parametrize(
    "path, expected",
    [
        ("digits", (wire.ModelAddress("digits", None, None), False)),
        ("digits/versions/2/metadata", (wire.ModelAddress("digits", 2, None), True)),
        ("digits/labels/prod", (wire.ModelAddress("digits", None, "prod"), False)),
        ("digits:predict", None),
        ("digits/monitoring", None),
    ],
)
def test_get_paths(path: str, expected):
    assert wire.parse_get_path(path) == expected


def test_query_parameters_and_uploads():
    assert (wire.parse_top_k(None, 5), wire.parse_top_k("2", 5)) == (5, 2)
    for wrong in ("0", "-1", "two", ""):
        with pytest.raises(wire.BadRequest, match=f"top_k must be .*received '{wrong}'"):
            wire.parse_top_k(wrong, 5)
    assert (wire.parse_version(None), wire.parse_version("7")) == (None, 7)
    with pytest.raises(wire.BadRequest, match="version must be a whole number .*'one'"):
        wire.parse_version("one")
    assert wire.upload_names(["a.png", None, ""]) == ["a.png", "file 1", "file 2"]
    with pytest.raises(wire.BadRequest, match="no images uploaded"):
        wire.upload_names([])


def test_metadata_is_tf_servings_json_of_the_signature_defs():
    signature_def = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    signature_def.inputs["image_bytes"].dtype = tf.string.as_datatype_enum

    document = wire.metadata_response("digits", 4, {"serving_default": signature_def})

    assert document["model_spec"] == {"name": "digits", "signature_name": "", "version": "4"}
    saved = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert saved["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert saved["method_name"] == "tensorflow/serving/predict"
