"""The TF-Serving-compatible REST server and client, against a real server on 127.0.0.1."""

import asyncio
import re
import shutil
import socket
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from artifacts import models
from serving import client
from tests.conftest import CLASS_NAMES, MODEL_NAME, b64

pytestmark = pytest.mark.serving


def predict_url(server_url: str, name: str = MODEL_NAME) -> str:
    return f"{server_url}/v1/models/{name}:predict"


@pytest.fixture(scope="module")
def direct_scores(export_base: Path, png_images: list[bytes]) -> np.ndarray:
    """Scores of the exported signature called in-process, the reference for REST answers."""
    signature = tf.saved_model.load(str(export_base / "1")).signatures["serving_default"]
    return signature(image_bytes=tf.constant(png_images))["scores"].numpy()


# --- loading ---


def test_loads_the_highest_numbered_version(export_base: Path, tmp_path: Path):
    for version in ("2", "10"):
        shutil.copytree(export_base / "1", tmp_path / version)
    (tmp_path / ".tmp-11").mkdir()  # an export in progress: no saved_model.pb yet
    (tmp_path / "notes").mkdir()

    assert models.ServedModel.latest("m", tmp_path).version == 10


def test_a_folder_without_versions_is_a_clear_error(tmp_path: Path):
    (tmp_path / "1").mkdir()  # numbered, but no saved_model.pb inside

    with pytest.raises(models.ModelLoadError, match=r"no servable version under .*saved_model\.pb"):
        models.ServedModel.latest("m", tmp_path)
    with pytest.raises(models.ModelLoadError, match="is not a folder"):
        models.ServedModel.latest("m", tmp_path / "missing")


# --- status and metadata ---


@pytest.mark.parametrize("path", [MODEL_NAME, f"{MODEL_NAME}/versions/1"])
def test_status(server_url: str, path: str):
    response = httpx.get(f"{server_url}/v1/models/{path}")

    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def test_metadata(server_url: str):
    response = httpx.get(f"{server_url}/v1/models/{MODEL_NAME}/metadata")

    assert response.status_code == 200
    document = response.json()
    assert document["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    signature = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    image_bytes = signature["inputs"]["image_bytes"]
    assert image_bytes["dtype"] == "DT_STRING"
    assert [dim["size"] for dim in image_bytes["tensor_shape"]["dim"]] == ["-1"]
    outputs = signature["outputs"]
    assert (outputs["scores"]["dtype"], outputs["classes"]["dtype"]) == ("DT_FLOAT", "DT_STRING")
    assert [dim["size"] for dim in outputs["scores"]["tensor_shape"]["dim"]] == ["-1", "3"]


# --- predict ---

REQUEST_FORMATS = {
    "rows": lambda images: {"instances": [b64(image) for image in images]},
    "rows_named": lambda images: {"instances": [{"image_bytes": b64(image)} for image in images]},
    "columns_named": lambda images: {"inputs": {"image_bytes": [b64(image) for image in images]}},
    "columns": lambda images: {"inputs": [b64(image) for image in images]},
}


@pytest.mark.parametrize("request_format", REQUEST_FORMATS)
def test_predict_matches_the_signature(
    server_url: str, png_images: list[bytes], direct_scores: np.ndarray, request_format: str
):
    body = REQUEST_FORMATS[request_format](png_images)
    body["signature_name"] = "serving_default"

    response = httpx.post(predict_url(server_url), json=body)

    assert response.status_code == 200, response.text
    if request_format.startswith("rows"):
        predictions = response.json()["predictions"]
        scores = [prediction["scores"] for prediction in predictions]
        classes = [prediction["classes"] for prediction in predictions]
    else:
        outputs = response.json()["outputs"]
        scores, classes = outputs["scores"], outputs["classes"]
    assert np.array(scores).shape == (3, 3)
    np.testing.assert_allclose(scores, direct_scores, rtol=0, atol=1e-6)
    assert classes == [CLASS_NAMES] * 3


def test_predict_a_named_version(server_url: str, png_images: list[bytes]):
    url = f"{server_url}/v1/models/{MODEL_NAME}/versions/1:predict"

    response = httpx.post(url, json={"instances": [b64(png_images[0])]})

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_each_request_is_checked_once(
    model_server, png_images: list[bytes], monkeypatch: pytest.MonkeyPatch, api: str
):
    model = model_server.manager.resolve(MODEL_NAME)
    checks = []
    check_inputs = model.check_inputs

    def counted(signature_name, inputs, *limits):
        checks.append(signature_name)
        return check_inputs(signature_name, inputs, *limits)

    monkeypatch.setattr(model, "check_inputs", counted)
    if api == "rest":
        response = httpx.post(
            predict_url(model_server.rest_url), json={"inputs": [b64(png_images[0])]}
        )
        assert response.status_code == 200, response.text
    else:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(png_images[:1]))
        with grpc.insecure_channel(model_server.grpc_target) as channel:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)

    assert checks == ["serving_default"]


@pytest.mark.parametrize(
    "body, expected_error",
    [
        (b"{not json", "not valid JSON"),
        (b'{"instances": []}', "non-empty list"),
        (b'{"images": []}', "exactly one of 'instances'"),
        (b'{"instances": [{"b64": "not base64!"}]}', r"instances\[0\].b64 is not valid base64"),
        (b'{"instances": [[0, 1, 2]]}', r"instances\[0\] must be an encoded image"),
        (b'{"inputs": {"images": []}}', "one key 'image_bytes'"),
        (b'{"instances": [{"b64": "aGVsbG8="}]}', "could not decode the images"),
        (b'{"signature_name": "classify", "instances": []}', "signature_name must be one of"),
        (b'{"signature_name": "predict_images", "instances": [[1, 2]]}', "must have shape"),
        (b'{"signature_name": "predict_images", "instances": [[1], [1, 2]]}', "equal-length"),
        (b'{"signature_name": "predict_images", "instances": [{"b64": "aGVsbG8="}]}', "numbers"),
    ],
    ids=[
        "malformed_json",
        "empty_instances",
        "no_instances",
        "bad_base64",
        "not_bytes",
        "unknown_input",
        "not_an_image",
        "unknown_signature",
        "wrong_shape",
        "ragged",
        "bytes_for_floats",
    ],
)
def test_client_mistakes_are_400(server_url: str, body: bytes, expected_error: str):
    response = httpx.post(
        predict_url(server_url), content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert re.search(expected_error, response.json()["error"])


def test_image_decode_error_names_the_reason(server_url: str):
    response = httpx.post(predict_url(server_url), json={"instances": [b64(b"hello")]})

    assert "Unknown image file format" in response.json()["error"]
    assert "Detected at node" not in response.json()["error"]


@pytest.mark.parametrize(
    "method, path, expected_error",
    [
        ("POST", "unknown:predict", "Servable not found for request: Latest(unknown)"),
        ("GET", "unknown", "Servable not found for request: Latest(unknown)"),
        ("POST", f"{MODEL_NAME}/versions/2:predict", f"Specific({MODEL_NAME}, 2)"),
        ("GET", f"{MODEL_NAME}/versions/2", f"Specific({MODEL_NAME}, 2)"),
        ("POST", f"{MODEL_NAME}:classify", "Malformed request"),
    ],
)
def test_unknown_models_and_versions_are_404(
    server_url: str, png_images: list[bytes], method: str, path: str, expected_error: str
):
    response = httpx.request(
        method, f"{server_url}/v1/models/{path}", json={"instances": [b64(png_images[0])]}
    )

    assert response.status_code == 404
    assert expected_error in response.json()["error"]


def test_other_routes_answer_json_errors(server_url: str):
    response = httpx.get(f"{server_url}/v2/anything")

    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


def test_bodies_over_the_limit_are_413(start_server, export_base: Path):
    # In-process: over a socket the server's early answer races the client's upload.
    app = start_server(model_path=export_base, max_body_bytes=1024).app
    body = b'{"instances": [{"b64": "' + b"A" * 2048 + b'"}]}'

    async def post_declared_and_streamed() -> list[httpx.Response]:
        async def chunks():
            yield body

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as session:
            url = f"/v1/models/{MODEL_NAME}:predict"
            return [
                await session.post(url, content=body),
                await session.post(url, content=chunks()),
            ]

    for response in asyncio.run(post_declared_and_streamed()):
        assert response.status_code == 413
        assert "exceeds 1024 bytes" in response.json()["error"]


def test_ready_lines_name_the_bound_ports(
    start_server, export_base: Path, capsys: pytest.CaptureFixture
):
    start_server(model_path=export_base).announce()

    first, summary = capsys.readouterr().out.strip().splitlines()
    match = re.fullmatch(
        rf"serving {MODEL_NAME} version 1 at (http://127\.0\.0\.1:\d+)/v1/models/{MODEL_NAME} "
        r"\(runtime 1: savedmodel\)",
        first,
    )
    assert match, first
    assert re.match(r"serve: 1 model\(s\) on http://127.0.0.1:\d+, gRPC on 127.0.0.1:\d+", summary)
    assert client.wait_until_ready(match[1], MODEL_NAME, timeout_s=5)


# --- client ---


def test_predict_files_ranks_classes(
    server_url: str, png_images: list[bytes], direct_scores: np.ndarray, tmp_path: Path
):
    paths = []
    for index, image in enumerate(png_images):
        paths.append(tmp_path / f"{index}.png")
        paths[-1].write_bytes(image)

    results = client.predict_files(server_url, MODEL_NAME, paths, top_k=2)

    assert [result["path"] for result in results] == [str(path) for path in paths]
    for result, scores in zip(results, direct_scores, strict=True):
        expected = sorted(
            zip(CLASS_NAMES, scores, strict=True), key=lambda pair: pair[1], reverse=True
        )[:2]
        assert [name for name, _ in result["top"]] == [name for name, _ in expected]
        probabilities = [probability for _, probability in result["top"]]
        np.testing.assert_allclose(probabilities, [p for _, p in expected], atol=1e-6)
        assert result["top"][0][1] >= result["top"][1][1]


def test_client_errors_carry_status_and_server_message(server_url: str, tmp_path: Path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"hello")

    with pytest.raises(client.ClientError, match="HTTP 404: Servable not found"):
        client.predict_files(server_url, "unknown", [not_an_image])
    with pytest.raises(client.ClientError, match="HTTP 400: could not decode the images"):
        client.predict_files(server_url, MODEL_NAME, [not_an_image])


def test_an_unreachable_server_is_a_client_error(tmp_path: Path):
    image = tmp_path / "image.png"
    image.write_bytes(b"unused")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"

    with pytest.raises(client.ClientError, match="could not reach .* is the server running"):
        client.predict_files(url, MODEL_NAME, [image])


def test_wait_until_ready(server_url: str):
    status = client.wait_until_ready(server_url, MODEL_NAME, timeout_s=5)

    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    with pytest.raises(client.ClientError, match="was not AVAILABLE within 0.3s.*HTTP 404"):
        client.wait_until_ready(server_url, "unknown", timeout_s=0.3)
