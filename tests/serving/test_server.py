"""The model server beyond the basics: a registry's models.config with labels, gRPC through the
official tensorflow_serving stubs, uploads, OpenAPI, Prometheus, batching, limits, traversal,
warm-up and hot loading."""

import concurrent.futures
import io
import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from artifacts import warmup
from evaluator import report
from registry import store
from serving.server import batching, manager, metrics
from tests.conftest import CLASS_NAMES, MODEL_NAME, b64, export_dense_model, image_request
from transforms import pillow_formats

pytestmark = pytest.mark.serving

OTHER_MODEL = "letters"
OTHER_CLASSES = ["x", "y"]


def wait_for(predicate, what: str, timeout_s: float = 60) -> None:
    """Polls until `predicate()` holds. Generous: a loaded machine loads versions slowly, and
    waiting for an event instead of sleeping a fixed time is what keeps these tests stable."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.02)


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


@pytest.mark.parametrize("method", ["Predict", "GetModelStatus"])
@pytest.mark.parametrize(
    "version, label, message",
    [
        (7, None, f"Servable not found for request: Specific({MODEL_NAME}, 7)"),
        (None, "canary", "Unrecognized servable version label: canary"),
    ],
)
def test_grpc_an_unknown_version_or_label_is_not_found(
    grpc_channel, png_images, method: str, version: int | None, label: str | None, message: str
):
    if method == "Predict":
        request = image_request(png_images[:1])
        call = prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel).Predict
    else:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL_NAME
        call = model_service_pb2_grpc.ModelServiceStub(grpc_channel).GetModelStatus
    # version and version_label are a oneof: setting either one clears the other.
    if version is not None:
        request.model_spec.version.value = version
    else:
        request.model_spec.version_label = label

    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == message


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
        (
            [("files", ("notes.txt", b"hello", "text/plain"))],
            {},
            r"not decodable.*: \['notes\.txt'\]$",
        ),
        # A text field is not an image, whatever its name.
        ([("files", (None, b"just text"))], {}, "no images uploaded"),
        ([("files", ("a.png", b"x", "image/png"))], {"top_k": "0"}, "top_k must be"),
    ],
)
def test_classify_images_mistakes_are_400(store_server, png_images, files, params, expected):
    good = ("files", ("good.png", png_images[0], "image/png"))
    url = f"{store_server.rest_url}/v1/models/{MODEL_NAME}:classify-images"

    response = httpx.post(url, files=[good, *files] if "not" in expected else files, params=params)

    assert response.status_code == 400
    assert re.search(expected, response.json()["error"])


def test_classify_images_takes_files_under_any_field_name(store_server, png_images):
    url = f"{store_server.rest_url}/v1/models/{MODEL_NAME}:classify-images"
    # curl -F file=@a.png, the name most HTTP examples use, and a browser form's own names.
    files = [
        ("file", ("a.png", png_images[0], "image/png")),
        ("image", ("b.png", png_images[1], "image/png")),
        ("files", ("c.png", png_images[0], "image/png")),
    ]

    response = httpx.post(url, files=files)

    assert response.status_code == 200, response.text
    answered = response.json()["results"]
    assert [result["filename"] for result in answered] == ["a.png", "b.png", "c.png"]
    assert answered[0]["top"] == answered[2]["top"]


@pytest.mark.parametrize(("image_format", "mode"), [("TIFF", "RGB"), ("BMP", "1"), ("BMP", "P")])
def test_formats_only_pillow_reads_are_served_with_the_pixels_ingest_stores(
    store_server, png_images, image_format, mode
):
    picture = Image.open(io.BytesIO(png_images[1])).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, image_format)
    original = buffer.getvalue()
    url = f"{store_server.rest_url}/v1/models/{MODEL_NAME}"

    def scores(data: bytes) -> list[float]:
        response = httpx.post(f"{url}:predict", json={"instances": [b64(data)]})
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["scores"]

    upload = httpx.post(f"{url}:classify-images", files=[("file", ("x", original))])

    assert upload.status_code == 200, upload.text
    # Ingest stores these files as Pillow's PNG: served, the original scores the same.
    assert scores(original) == scores(pillow_formats.to_png(original))
    assert scores(original) != scores(png_images[0])


def test_openapi_documents_the_api(store_server):
    spec = httpx.get(f"{store_server.rest_url}/openapi.json").json()
    docs = httpx.get(f"{store_server.rest_url}/docs")

    post = spec["paths"]["/v1/models/{model_path}"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "/monitoring/prometheus/metrics" in spec["paths"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def rendered_dom(url: str) -> str:
    """The DOM of `url` after its scripts ran, in headless Chromium that can resolve no host but
    127.0.0.1: a page that needs a CDN renders nothing here, with or without internet."""
    browser = report.find_browser()
    if browser is None:
        pytest.skip("no Chromium on PATH: install it with apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="imgclf-chromium-") as profile:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=15000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_swagger_ui_and_redoc_render_offline(store_server):
    docs = httpx.get(f"{store_server.rest_url}/docs").text
    # Every script and stylesheet from this server, none from a CDN.
    assert not re.findall(r"(?:src|href)=.https?://", docs)

    swagger = rendered_dom(f"{store_server.rest_url}/docs")
    redoc = rendered_dom(f"{store_server.rest_url}/redoc")

    # Swagger UI drew an operation block per route, with its summary.
    assert swagger.count('class="opblock ') >= 4, swagger[:2000]
    assert "Predict (TF Serving) or classify uploaded images" in swagger
    assert "Prometheus metrics" in swagger
    assert "Prediction and input statistics of a model" in redoc


def metric_samples(url: str) -> dict:
    text = httpx.get(f"{url}/monitoring/prometheus/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def histogram(samples: dict, name: str, labels: dict) -> tuple[list, float, float]:
    """One labelled histogram of `metric_samples`: ([(le, cumulative count)] sorted by le,
    count, sum); zeros when it has not been created yet."""
    key = tuple(sorted(labels.items()))
    buckets = []
    for (sample, sample_labels), value in samples.items():
        other = dict(sample_labels)
        le = other.pop("le", None)
        if sample == f"{name}_bucket" and tuple(sorted(other.items())) == key:
            buckets.append((float(le), value))
    return (
        sorted(buckets),
        samples.get((f"{name}_count", key), 0),
        samples.get((f"{name}_sum", key), 0),
    )


def in_flight(model_server) -> float:
    return metric_samples(model_server.rest_url)[("imgclf_serving_requests_in_flight", ())]


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
    latency = (
        "imgclf_serving_request_latency_seconds",
        {"api": "rest", "method": "predict", "model": MODEL_NAME},
    )
    _, count_before, seconds_before = histogram(before, *latency)
    buckets, count_after, seconds_after = histogram(after, *latency)
    assert count_after - count_before == 4
    assert seconds_after > seconds_before
    assert [le for le, _ in buckets] == [*metrics.LATENCY_BUCKETS_S, float("inf")]
    cumulative = [value for _, value in buckets]
    assert cumulative == sorted(cumulative) and cumulative[-1] == count_after
    assert after[("imgclf_serving_requests_in_flight", ())] == 0
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
    buckets, batches, images = histogram(
        metric_samples(batched.rest_url),
        "imgclf_serving_batch_size",
        {"model": MODEL_NAME, "version": "1"},
    )
    assert images == 48
    assert batches < 48  # some requests shared a model call
    assert dict(buckets)[8] == batches  # and none took more than max_batch_size images


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


@pytest.fixture(scope="module")
def queue_server(start_server, export_base: Path):
    """Batches of at most 2 images, a queue of one batch (2 requests), and a batch timeout
    long enough to see a lone request wait for it."""
    return start_server(
        model_path=export_base,
        batching={
            "enabled": True,
            "max_batch_size": 2,
            "max_enqueued_batches": 1,
            "batch_timeout_ms": 300,
        },
    )


def test_a_lone_request_is_flushed_after_the_batch_timeout(queue_server, png_images):
    url = f"{queue_server.rest_url}/v1/models/{MODEL_NAME}:predict"
    size = ("imgclf_serving_batch_size", {"model": MODEL_NAME, "version": "1"})
    _, batches_before, images_before = histogram(metric_samples(queue_server.rest_url), *size)

    started = time.monotonic()
    response = httpx.post(url, json={"instances": [b64(png_images[0])]}, timeout=30)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    # It waited the whole timeout for a partner, then ran alone: no earlier flush (the lower
    # bound cannot flake), and no wait for a batch that never fills (a generous upper bound).
    assert 0.3 <= elapsed < 10
    _, batches, images = histogram(metric_samples(queue_server.rest_url), *size)
    assert (batches - batches_before, images - images_before) == (1, 1)


def build_blank_png(side: int) -> bytes:
    """A blank grayscale PNG: a few KB to send, but many pixels for the model to decode."""
    return tf.io.encode_png(tf.zeros([side, side, 1], tf.uint8)).numpy()


def test_a_full_batching_queue_is_429_and_resource_exhausted(queue_server, png_images):
    url = f"{queue_server.rest_url}/v1/models/{MODEL_NAME}:predict"
    one_image = {"instances": [b64(png_images[0])]}
    # Two 5600x5600 images take the model about a second: the batching worker is busy, and
    # requests arriving meanwhile wait in its queue, which holds two.
    busy = {"instances": [b64(build_blank_png(5600))] * 2}

    with (
        grpc.insecure_channel(queue_server.grpc_target) as channel,
        concurrent.futures.ThreadPoolExecutor(3) as pool,
    ):
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        slow = pool.submit(httpx.post, url, json=busy, timeout=60)
        wait_for(lambda: in_flight(queue_server) == 1, "the slow batch to be submitted")
        queued = [pool.submit(httpx.post, url, json=one_image, timeout=60) for _ in range(2)]
        wait_for(lambda: in_flight(queue_server) == 3, "two requests to fill the queue")
        refused = httpx.post(url, json=one_image, timeout=30)
        with pytest.raises(grpc.RpcError) as exhausted:
            predict(image_request(png_images[:1]), timeout=30)
        answered = [slow.result(), *(future.result() for future in queued)]
        # Nothing is left counted in flight, and the server still answers both APIs.
        assert in_flight(queue_server) == 0
        assert httpx.post(url, json=one_image, timeout=30).status_code == 200
        assert predict(image_request(png_images[:1]), timeout=30).model_spec.version.value == 1

    assert refused.status_code == 429
    assert "batching queue is full" in refused.json()["error"]
    assert "serving.batching.max_enqueued_batches" in refused.json()["error"]
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "batching queue is full" in exhausted.value.details()
    assert [response.status_code for response in answered] == [200] * 3


@pytest.fixture(scope="module")
def slow_server(start_server, export_base: Path):
    """One request at a time, answered within 1 s; a lone request waits 3 s for a partner to
    share its batch, so it looks slow. A full batch (2 images) runs at once."""
    return start_server(
        model_path=export_base,
        max_concurrent_requests=1,
        request_timeout_s=1,
        batching={"enabled": True, "max_batch_size": 2, "batch_timeout_ms": 3000},
    )


def test_overload_is_429_and_slow_requests_are_504(slow_server, png_images):
    url = f"{slow_server.rest_url}/v1/models/{MODEL_NAME}:predict"
    body = {"instances": [b64(png_images[0])]}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, url, json=body, timeout=30)
        wait_for(lambda: in_flight(slow_server) == 1, "the first request to be in flight")
        second = httpx.post(url, json=body, timeout=30)
        first = first.result()

    assert second.status_code == 429
    assert "serving.max_concurrent_requests" in second.json()["error"]
    assert first.status_code == 504
    assert "did not answer within 1s" in first.json()["error"]
    # The timed-out call frees its slot once its batch really ran; then all is well again.
    wait_for(lambda: in_flight(slow_server) == 0, "the timed-out call to finish")
    full_batch = {"instances": [b64(png_images[0]), b64(png_images[1])]}
    assert httpx.post(url, json=full_batch, timeout=30).status_code == 200


def test_classify_images_finds_bad_files_within_the_slot_and_the_deadline(slow_server, png_images):
    url = f"{slow_server.rest_url}/v1/models/{MODEL_NAME}"
    files = [
        ("files", ("good.png", png_images[0], "image/png")),
        ("files", ("notes.txt", b"hello", "text/plain")),
    ]

    # The two files fill a batch, which fails at once. Then each file is tried alone, as a
    # request of its own: good.png takes the only slot and waits 3 s for a batch partner,
    # past the 1 s the whole upload has.
    failed = httpx.post(f"{url}:classify-images", files=files, timeout=30)
    # Answered, but its call still holds the slot until its batch runs.
    refused = httpx.post(f"{url}:predict", json={"instances": [b64(png_images[0])]}, timeout=30)
    wait_for(lambda: in_flight(slow_server) == 0, "the timed-out call to finish")

    assert failed.status_code == 504, failed.text
    assert "did not answer within 1s" in failed.json()["error"]
    assert refused.status_code == 429
    assert "serving.max_concurrent_requests" in refused.json()["error"]


def test_grpc_slow_requests_are_deadline_exceeded_and_overload_resource_exhausted(
    slow_server, png_images
):
    with grpc.insecure_channel(slow_server.grpc_target) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        with pytest.raises(grpc.RpcError) as slow:
            predict(image_request(png_images[:1]), timeout=30)
        # The timed-out call keeps the only slot until its batch runs, 3 s after it arrived.
        with pytest.raises(grpc.RpcError) as overloaded:
            predict(image_request(png_images[:1]), timeout=30)
        wait_for(lambda: in_flight(slow_server) == 0, "the timed-out call to finish")
        answered = predict(image_request(png_images[:2]), timeout=30)

    assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not answer within 1s" in slow.value.details()
    assert overloaded.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "serving.max_concurrent_requests" in overloaded.value.details()
    assert tf.make_ndarray(answered.outputs["scores"]).shape == (2, 3)


# --- hot loading ---


def copy_in_atomically(source: Path, base: Path, version: int) -> None:
    """As the registry and the exporter do: complete copy beside, then one rename."""
    staging = base / f".incoming-{version}"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))


def write_warmup_file(version_dir: Path, requests: list[predict_pb2.PredictRequest]) -> None:
    """Replaces the version's warm-up records, as TF Serving reads them."""
    with tf.io.TFRecordWriter(str(warmup.warmup_path(version_dir))) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def test_a_version_takes_traffic_only_after_its_warmup_requests_ran(
    start_server, export_base: Path, tmp_path: Path, png_images: list[bytes], caplog
):
    base = tmp_path / "model"
    shutil.copytree(export_base / "1", base / "1")
    served = start_server(model_path=base)  # no polling: the test rescans when it wants
    # Version 2 is the same model, but its last warm-up record cannot run. Only replaying the
    # records can find that out: the model loads and answers real images fine.
    broken = tmp_path / "broken"
    shutil.copytree(export_base / "1", broken)
    records = warmup.read_warmup_requests(broken)
    write_warmup_file(broken, [*records, image_request([b"not an image"])])
    copy_in_atomically(broken, base, 2)

    served.manager.reload()

    status = httpx.get(f"{served.rest_url}/v1/models/{MODEL_NAME}").json()["model_version_status"]
    assert [(entry["version"], entry["state"]) for entry in status] == [
        ("1", "AVAILABLE"),
        ("2", "END"),
    ]
    assert "could not decode the images" in status[1]["status"]["error_message"]
    with grpc.insecure_channel(served.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(image_request(png_images[:1]), timeout=30)
    assert response.model_spec.version.value == 1
    assert any(
        "version 2" in record.getMessage() and "still serving [1]" in record.getMessage()
        for record in caplog.records
    )


def test_hot_swaps_and_a_corrupt_version_fail_no_request(
    start_server, tmp_path: Path, png_images: list[bytes], caplog
):
    base = tmp_path / "model"
    export_dense_model(base, 32, 1, CLASS_NAMES)
    hot = start_server(model_path=base, poll_seconds=0.2)
    channel = grpc.insecure_channel(hot.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stop = threading.Event()
    failures = []
    # Per client, each written only by its own thread: answers so far, and for the gRPC
    # clients the version of each answer in order.
    answered = [0] * 4
    versions = [[] for _ in range(4)]

    def client(index: int) -> None:
        url = f"{hot.rest_url}/v1/models/{MODEL_NAME}:predict"
        request = image_request([png_images[index % 3]])
        with httpx.Client(timeout=30) as session:
            while not stop.is_set():
                try:
                    if index % 2:
                        response = stub.Predict(request, timeout=30)
                        versions[index].append(response.model_spec.version.value)
                    else:
                        response = session.post(url, json={"instances": [b64(png_images[0])]})
                        if response.status_code != 200:
                            failures.append(response.text)
                            continue
                    answered[index] += 1
                except Exception as error:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(error))

    def wait(predicate, what: str) -> None:
        """wait_for, but a failed request ends the wait at once and is the reported error."""
        wait_for(lambda: bool(failures) or predicate(), what)
        assert failures == []

    def every_client_answers() -> None:
        """Waits until each client has been answered again since now."""
        before = list(answered)
        wait(
            lambda: all(now > then for now, then in zip(answered, before, strict=True)),
            "every client",
        )

    def answered_by(version: int) -> bool:
        return any(version in seen for seen in versions)

    def served_versions() -> list[str]:
        status = httpx.get(f"{hot.rest_url}/v1/models/{MODEL_NAME}", timeout=30).json()
        return [entry["version"] for entry in status["model_version_status"]]

    clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    try:
        wait(lambda: answered_by(1), "version 1 to answer")
        every_client_answers()
        for version in (2, 3, 4):
            copy_in_atomically(base / "1", base, version)
            wait(lambda v=version: served_versions() == [str(v)], f"version {version}")
            wait(lambda v=version: answered_by(v), f"version {version} to answer")
            every_client_answers()
        # Corrupted before it appears: a half-copied directory would be a second, legitimate
        # retry (its files change), which is not what this checks.
        corrupt = base / ".incoming-5"
        shutil.copytree(base / "1", corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"not a protobuf")
        corrupt.rename(base / "5")
        wait(lambda: "5" in served_versions(), "version 5's failure to be reported")
        every_client_answers()
        time.sleep(1)  # a few more polls: the corrupt version is not retried
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        channel.close()

    status = httpx.get(f"{hot.rest_url}/v1/models/{MODEL_NAME}").json()["model_version_status"]
    assert failures == []
    assert set().union(*versions) == {1, 2, 3, 4}
    # Each swap is clean: once a client saw a newer version, an older one never answered it.
    assert all(seen == sorted(seen) for seen in versions)
    assert [(entry["version"], entry["state"]) for entry in status] == [
        ("4", "AVAILABLE"),
        ("5", "END"),
    ]
    assert "Cannot parse file" in status[1]["status"]["error_message"]
    assert any(
        "version 5" in record.getMessage() and "still serving [4]" in record.getMessage()
        for record in caplog.records
    )
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


def test_starting_a_server_leaves_the_processs_other_log_handlers_open(start_server, export_base):
    # uvicorn's own logging setup (dictConfig) closes every handler in the process first; a
    # server started inside a notebook, a pipeline run or a test must not cut their logging.
    stream = io.StringIO()
    handler = StreamClosingHandler(stream)
    caller = logging.getLogger("imgclf-test-caller")
    caller.addHandler(handler)
    try:
        start_server(model_path=export_base)
        caller.warning("still logging")
        assert not stream.closed and "still logging" in stream.getvalue()
        assert handler in caller.handlers
    finally:
        caller.removeHandler(handler)


class StreamClosingHandler(logging.StreamHandler):
    """Closes its stream when closed, as absl's handler does with a stream not sys.stderr (in a
    test session: pytest's capture file, whose closing ended the session)."""

    def close(self):
        self.stream.close()
        super().close()


def test_an_image_over_max_pixels_is_refused_before_decoding(start_server, export_base):
    limited = start_server(model_path=export_base, max_pixels=1_000_000)
    buffer = io.BytesIO()
    Image.new("L", (2000, 1000)).save(buffer, "PNG")  # 2 MP in a few kB: a small bomb
    big = buffer.getvalue()
    url = f"{limited.rest_url}/v1/models/{MODEL_NAME}:predict"

    refused = httpx.post(url, json={"instances": [b64(build_blank_png(8)), b64(big)]})
    allowed = httpx.post(url, json={"instances": [b64(build_blank_png(8))]})
    channel = grpc.insecure_channel(limited.grpc_target)
    with pytest.raises(grpc.RpcError) as rpc_refused:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            image_request([big]), timeout=30
        )
    channel.close()

    assert refused.status_code == 400
    assert "image 1 is 2000x1000" in refused.json()["error"]
    assert "serving.max_pixels" in refused.json()["error"]
    assert allowed.status_code == 200
    assert rpc_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
