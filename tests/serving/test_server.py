"""The model server beyond the basics: a registry's models.config with labels, gRPC through the
official tensorflow_serving stubs, uploads, OpenAPI, Prometheus, batching, limits, traversal."""

import base64
import concurrent.futures
import json
import re
import shutil
import threading
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from registry import store
from serving.server import batching, manager
from tests.conftest import export_dense_model
from tests.serving.conftest import CLASS_NAMES, MODEL_NAME

pytestmark = pytest.mark.serving

OTHER_MODEL = "letters"
OTHER_CLASSES = ["x", "y"]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry store: digits versions 1-2 (production -> 1, staging -> 2), letters 1."""
    root = tmp_path_factory.mktemp("store-src")
    exports = [
        export_dense_model(root / "a", 32, 1, CLASS_NAMES),
        export_dense_model(root / "b", 32, 1, CLASS_NAMES),
        export_dense_model(root / "c", 16, 3, OTHER_CLASSES),
    ]
    model_store = tmp_path_factory.mktemp("store")
    store.push(model_store, exports[0], MODEL_NAME)
    store.push(model_store, exports[1], MODEL_NAME)
    store.push(model_store, exports[2], OTHER_MODEL)
    store.promote(model_store, MODEL_NAME, 1, "production", force=True)
    store.promote(model_store, MODEL_NAME, 2, "staging")
    return model_store


@pytest.fixture(scope="module")
def store_server(start_server, model_store: Path):
    return start_server(model_config_file=model_store / store.CONFIG_FILE)


@pytest.fixture(scope="module")
def grpc_channel(store_server) -> grpc.Channel:
    channel = grpc.insecure_channel(store_server.grpc_target)
    yield channel
    channel.close()


# --- models.config: several models, versions and labels ---


@pytest.mark.parametrize(
    "path, statuses, version",
    [
        (MODEL_NAME, ["2", "1"], 2),
        (f"{MODEL_NAME}/versions/1", ["1"], 1),
        (f"{MODEL_NAME}/labels/production", ["1"], 1),
        (f"{MODEL_NAME}/labels/staging", ["2"], 2),
    ],
)
def test_versions_and_labels_route_to_their_version(
    store_server, grpc_channel, png_images: list[bytes], path: str, statuses: list, version: int
):
    url = f"{store_server.rest_url}/v1/models/{path}"

    status = httpx.get(url).json()["model_version_status"]
    prediction = httpx.post(f"{url}:predict", json={"instances": [b64(png_images[0])]})
    metadata = httpx.get(f"{url}/metadata").json()

    assert [entry["version"] for entry in status] == statuses
    assert prediction.status_code == 200
    assert prediction.json()["predictions"][0]["classes"] == CLASS_NAMES
    assert metadata["model_spec"]["version"] == str(version)


def test_every_model_of_the_config_is_served(store_server, make_image):
    url = f"{store_server.rest_url}/v1/models/{OTHER_MODEL}"
    image = make_image(0, size=(16, 16))

    response = httpx.post(f"{url}:predict", json={"inputs": [b64(image)]})
    status = httpx.get(url).json()

    assert response.json()["outputs"]["classes"] == [OTHER_CLASSES]
    assert [entry["version"] for entry in status["model_version_status"]] == ["1"]


def test_an_unknown_label_is_404(store_server):
    url = f"{store_server.rest_url}/v1/models/{MODEL_NAME}/labels/canary:predict"

    response = httpx.post(url, json={"instances": [b64(b"x")]})

    assert response.status_code == 404
    assert response.json()["error"] == "Unrecognized servable version label: canary"


@pytest.mark.parametrize(
    "path",
    [
        "..%2F..%2Fetc%2Fpasswd:predict",
        f"{MODEL_NAME}/labels/..%2F..%2F1:predict",
        f"{MODEL_NAME}/versions/..%2F1:predict",
        "..:predict",
        f"{MODEL_NAME}%2F..%2F{MODEL_NAME}:predict",
    ],
)
def test_names_never_reach_the_filesystem(store_server, path: str):
    response = httpx.post(f"{store_server.rest_url}/v1/models/{path}", json={"instances": []})

    assert response.status_code == 404
    assert "error" in response.json()


def test_a_config_naming_a_path_is_refused(tmp_path: Path):
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "../escape" base_path: "/tmp" '
        'model_platform: "tensorflow" } }'
    )

    with pytest.raises(manager.ModelConfigError, match=r"model name '\.\./escape' is not allowed"):
        manager.read_model_config(config)


def test_a_config_that_is_not_a_protobuf_is_a_clear_error(tmp_path: Path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list: [oops")

    with pytest.raises(manager.ModelConfigError, match="not a valid TF Serving ModelServerConfig"):
        manager.read_model_config(config)


# --- gRPC through the official stubs ---


def test_grpc_predict_matches_rest(store_server, grpc_channel, png_images: list[bytes]):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.version_label = "production"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(png_images))

    response = prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel).Predict(
        request, timeout=30
    )
    rest = httpx.post(
        f"{store_server.rest_url}/v1/models/{MODEL_NAME}/versions/1:predict",
        json={"inputs": [b64(image) for image in png_images]},
    ).json()["outputs"]

    assert response.model_spec.version.value == 1
    scores = tf.make_ndarray(response.outputs["scores"])
    np.testing.assert_allclose(scores, rest["scores"], atol=1e-6)
    classes = tf.make_ndarray(response.outputs["classes"])
    assert [[c.decode() for c in row] for row in classes] == [CLASS_NAMES] * 3


def test_grpc_predict_the_float_signature_with_an_output_filter(grpc_channel):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = "predict_images"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros([2, 32, 32, 1], np.float32)))
    request.output_filter.append("scores")

    response = prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel).Predict(request)

    assert list(response.outputs) == ["scores"]
    assert tf.make_ndarray(response.outputs["scores"]).shape == (2, 3)
    assert response.model_spec.version.value == 2  # the newest, as no version was named


@pytest.mark.parametrize(
    "name, inputs, code, message",
    [
        ("unknown", {"image_bytes": [b"x"]}, grpc.StatusCode.NOT_FOUND, "Latest(unknown)"),
        (MODEL_NAME, {"image_bytes": [b"hello"]}, grpc.StatusCode.INVALID_ARGUMENT, "decode"),
        (MODEL_NAME, {"pixels": [1.0]}, grpc.StatusCode.INVALID_ARGUMENT, "takes the input"),
        (MODEL_NAME, {"image_bytes": [1.0]}, grpc.StatusCode.INVALID_ARGUMENT, "DT_STRING"),
    ],
)
def test_grpc_errors_carry_tf_serving_codes(grpc_channel, name, inputs, code, message):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))

    with pytest.raises(grpc.RpcError) as raised:
        prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel).Predict(request)

    assert raised.value.code() == code
    assert message in raised.value.details()


def test_grpc_metadata_is_the_saved_signature_defs(grpc_channel):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL_NAME
    request.metadata_field.append("signature_def")

    response = prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel).GetModelMetadata(
        request
    )
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)

    assert set(signature_map.signature_def) == {
        "serving_default",
        "predict_images",
        "preprocess_images",
    }
    serving_default = signature_map.signature_def["serving_default"]
    assert serving_default.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert set(serving_default.outputs) == {"scores", "classes"}


def test_grpc_model_status(grpc_channel):
    stub = model_service_pb2_grpc.ModelServiceStub(grpc_channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME

    every = stub.GetModelStatus(request)
    request.model_spec.version_label = "staging"
    staging = stub.GetModelStatus(request)

    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in every.model_version_status] == [
        (2, available),
        (1, available),
    ]
    assert [s.version for s in staging.model_version_status] == [2]


# --- uploads, docs, metrics ---


def test_classify_images_ranks_labels_per_file(store_server, png_images: list[bytes]):
    url = f"{store_server.rest_url}/v1/models/{MODEL_NAME}/labels/production:classify-images"
    files = [
        ("files", (f"{index}.png", image, "image/png")) for index, image in enumerate(png_images)
    ]

    response = httpx.post(url, files=files, params={"top_k": 2})
    expected = httpx.post(
        url.replace(":classify-images", ":predict"),
        json={"instances": [b64(image) for image in png_images]},
    ).json()["predictions"]

    assert response.status_code == 200, response.text
    document = response.json()
    assert (document["model"], document["version"]) == (MODEL_NAME, 1)
    for result, index, prediction in zip(document["results"], range(3), expected, strict=True):
        ranked = sorted(zip(prediction["scores"], prediction["classes"], strict=True), reverse=True)
        assert result["filename"] == f"{index}.png"
        assert [top["label"] for top in result["top"]] == [label for _, label in ranked[:2]]
        np.testing.assert_allclose([t["score"] for t in result["top"]], [s for s, _ in ranked[:2]])


@pytest.mark.parametrize(
    "files, params, expected",
    [
        ([("files", ("notes.txt", b"hello", "text/plain"))], {}, r"not decodable.*notes\.txt"),
        ([("other", ("a.png", b"x", "image/png"))], {}, "no images uploaded"),
        ([("files", ("a.png", b"x", "image/png"))], {"top_k": "0"}, "top_k must be"),
    ],
)
def test_classify_images_mistakes_are_400(store_server, png_images, files, params, expected):
    good = ("files", ("good.png", png_images[0], "image/png"))
    url = f"{store_server.rest_url}/v1/models/{MODEL_NAME}:classify-images"

    response = httpx.post(url, files=[good, *files] if "not" in expected else files, params=params)

    assert response.status_code == 400
    assert re.search(expected, response.json()["error"])


def test_openapi_documents_the_api(store_server):
    spec = httpx.get(f"{store_server.rest_url}/openapi.json").json()
    docs = httpx.get(f"{store_server.rest_url}/docs")

    post = spec["paths"]["/v1/models/{model_path}"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "/monitoring/prometheus/metrics" in spec["paths"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def metric_samples(url: str) -> dict:
    text = httpx.get(f"{url}/monitoring/prometheus/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_prometheus_counts_requests_and_loaded_versions(store_server, png_images):
    url = f"{store_server.rest_url}/v1/models/{MODEL_NAME}/labels/staging:predict"
    before = metric_samples(store_server.rest_url)
    for _ in range(3):
        httpx.post(url, json={"instances": [b64(png_images[0])]})
    httpx.post(url, json={"instances": [b64(b"not an image")]})
    after = metric_samples(store_server.rest_url)

    def count(code: str) -> float:
        labels = (
            ("api", "rest"),
            ("code", code),
            ("method", "predict"),
            ("model", MODEL_NAME),
            ("version", "2"),
        )
        key = ("imgclf_serving_requests_total", labels)
        return after.get(key, 0) - before.get(key, 0)

    assert (count("200"), count("400")) == (3, 1)
    loaded = {
        dict(labels)["version"]
        for (name, labels), value in after.items()
        if name == "imgclf_serving_model_version_loaded" and dict(labels)["model"] == MODEL_NAME
    }
    assert loaded == {"1", "2"}


# --- batching and limits ---


def test_batching_merges_concurrent_requests_with_identical_answers(
    start_server, export_base: Path, png_images: list[bytes], served_model
):
    batched = start_server(
        model_path=export_base,
        batching={"enabled": True, "max_batch_size": 8, "batch_timeout_ms": 50},
    )
    expected = served_model.predict(png_images)["scores"]
    url = f"{batched.rest_url}/v1/models/{MODEL_NAME}:predict"

    def post(index: int) -> list:
        image = png_images[index % 3]
        return httpx.post(url, json={"instances": [b64(image)]}, timeout=30).json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(48)))

    for index, answer in enumerate(answers):
        np.testing.assert_allclose(
            answer["predictions"][0]["scores"], expected[index % 3], atol=1e-6
        )
    samples = metric_samples(batched.rest_url)
    batches = samples[
        ("imgclf_serving_batch_size_count", (("model", MODEL_NAME), ("version", "1")))
    ]
    images = samples[("imgclf_serving_batch_size_sum", (("model", MODEL_NAME), ("version", "1")))]
    assert images == 48
    assert batches < 48  # some requests shared a model call


def test_a_bad_image_fails_only_its_own_request_in_a_batch(served_model, png_images):
    batcher = batching.Batcher(served_model.run, 8, timeout_s=0.2, max_enqueued_batches=4)
    try:
        good = [
            batcher.submit("serving_default", {"image_bytes": np.array([image], object)})
            for image in png_images
        ]
        bad = batcher.submit("serving_default", {"image_bytes": np.array([b"junk"], object)})
        results = [future.result(timeout=30) for future in good]
        with pytest.raises(ValueError, match="could not decode"):
            bad.result(timeout=30)
    finally:
        batcher.close()

    assert [result["scores"].shape for result in results] == [(1, 3)] * 3


def test_overload_is_429_and_slow_requests_are_504(start_server, export_base, png_images):
    # A long batch timeout keeps a lone request waiting: the server looks busy and slow.
    slow = start_server(
        model_path=export_base,
        max_concurrent_requests=1,
        request_timeout_s=1,
        batching={"enabled": True, "max_batch_size": 64, "batch_timeout_ms": 3000},
    )
    url = f"{slow.rest_url}/v1/models/{MODEL_NAME}:predict"
    body = {"instances": [b64(png_images[0])]}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, url, json=body, timeout=30)
        threading.Event().wait(0.3)
        second = httpx.post(url, json=body, timeout=30)
        first = first.result()

    assert second.status_code == 429
    assert "serving.max_concurrent_requests" in second.json()["error"]
    assert first.status_code == 504
    assert "did not answer within 1s" in first.json()["error"]
    # The server is still healthy afterwards.
    threading.Event().wait(3)
    assert httpx.get(f"{slow.rest_url}/v1/models/{MODEL_NAME}").status_code == 200


# --- hot loading ---


def copy_in_atomically(source: Path, base: Path, version: int) -> None:
    """As the registry and the exporter do: complete copy beside, then one rename."""
    staging = base / f".incoming-{version}"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))


def test_hot_swaps_and_a_corrupt_version_fail_no_request(
    start_server, tmp_path: Path, png_images: list[bytes]
):
    base = tmp_path / "model"
    export_dense_model(base, 32, 1, CLASS_NAMES)
    hot = start_server(model_path=base, poll_seconds=0.2)
    channel = grpc.insecure_channel(hot.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stop = threading.Event()
    failures, versions_seen, answered = [], set(), [0]

    def client(index: int) -> None:
        url = f"{hot.rest_url}/v1/models/{MODEL_NAME}:predict"
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png_images[index % 3]]))
        with httpx.Client(timeout=30) as session:
            while not stop.is_set():
                try:
                    if index % 2:
                        versions_seen.add(
                            stub.Predict(request, timeout=30).model_spec.version.value
                        )
                    else:
                        response = session.post(url, json={"instances": [b64(png_images[0])]})
                        if response.status_code != 200:
                            failures.append(response.text)
                    answered[0] += 1
                except Exception as error:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(error))

    def wait_for(predicate, what: str) -> None:
        for _ in range(300):
            if predicate():
                return
            threading.Event().wait(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def served_versions() -> list[str]:
        status = httpx.get(f"{hot.rest_url}/v1/models/{MODEL_NAME}").json()
        return [entry["version"] for entry in status["model_version_status"]]

    clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    try:
        for version in (2, 3, 4):
            copy_in_atomically(base / "1", base, version)
            wait_for(lambda v=version: served_versions() == [str(v)], f"version {version}")
        # Corrupted before it appears: a half-copied directory would be a second, legitimate
        # retry (its files change), which is not what this checks.
        corrupt = base / ".incoming-5"
        shutil.copytree(base / "1", corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"not a protobuf")
        corrupt.rename(base / "5")
        wait_for(lambda: "5" in served_versions(), "version 5's failure to be reported")
        threading.Event().wait(1)  # a few more polls: the corrupt version is not retried
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        channel.close()

    status = httpx.get(f"{hot.rest_url}/v1/models/{MODEL_NAME}").json()["model_version_status"]
    assert failures == []
    assert answered[0] > 20
    assert {1, 4} <= versions_seen
    assert [(entry["version"], entry["state"]) for entry in status] == [
        ("4", "AVAILABLE"),
        ("5", "END"),
    ]
    assert "Cannot parse file" in status[1]["status"]["error_message"]
    failed_loads = metric_samples(hot.rest_url)[
        ("imgclf_serving_model_load_failures_total", (("model", MODEL_NAME), ("version", "5")))
    ]
    assert failed_loads == 1


def test_label_changes_in_the_config_are_picked_up(start_server, model_store: Path, tmp_path):
    live_store = tmp_path / "store"
    shutil.copytree(model_store, live_store)
    # The copied models.config still points at the original store: regenerate it here.
    state = json.loads((live_store / store.STATE_FILE).read_text())
    store.write_models_config(live_store, state)
    live = start_server(model_config_file=live_store / store.CONFIG_FILE, poll_seconds=0.2)
    url = f"{live.rest_url}/v1/models/{MODEL_NAME}/labels/production"
    assert httpx.get(url).json()["model_version_status"][0]["version"] == "1"

    store.promote(live_store, MODEL_NAME, 2, "production", force=True)

    for _ in range(100):
        if httpx.get(url).json()["model_version_status"][0]["version"] == "2":
            break
        threading.Event().wait(0.1)
    assert httpx.get(url).json()["model_version_status"][0]["version"] == "2"
