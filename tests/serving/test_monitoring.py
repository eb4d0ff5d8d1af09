"""Monitoring on a real server: statistics of served digits, drift against the ingested digits,
Prometheus exposition, the bounded measuring queue and the sampled request log."""

import base64
import json
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import cli
from cli import monitor as monitoring_cli
from core import image_stats
from monitoring import timespan, windows
from tests.monitoring import digits_traffic
from tests.transforms import shards

pytestmark = [pytest.mark.serving, pytest.mark.slow]

SCENARIOS = ("heldout", "dark", "large", "mix")


@pytest.fixture(scope="module")
def digits(digits_dir: Path, ingested_digits) -> dict[str, digits_traffic.Labelled]:
    return digits_traffic.by_split(digits_dir, ingested_digits.path)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, digits, ingested_digits) -> Path:
    base = tmp_path_factory.mktemp("digits_model")
    class_names = ingested_digits.dataset["label_map"]
    digits_traffic.export_classifier(base, digits["train"], class_names)
    return base


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("monitoring_stats")


@pytest.fixture(scope="module")
def monitored(start_server, classifier: Path, stats_dir: Path, tmp_path_factory):
    """One server, the classifier under one name per traffic scenario, 1-second windows."""
    config = tmp_path_factory.mktemp("config") / "models.config"
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{classifier}" model_platform: "tensorflow" }}\n'
        for name in SCENARIOS
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    return start_server(
        model_config_file=config,
        monitoring={"window_seconds": 1, "dir": str(stats_dir), "input_sample_rate": 1.0},
    )


def send(url: str, model: str, images: list[bytes], batch: int = 32) -> None:
    for start in range(0, len(images), batch):
        instances = [{"b64": base64.b64encode(i).decode()} for i in images[start : start + batch]]
        response = httpx.post(f"{url}/v1/models/{model}:predict", json={"instances": instances})
        assert response.status_code == 200, response.text


def wait_for(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def summary(url: str, model: str, **params) -> dict:
    response = httpx.get(f"{url}/monitoring/models/{model}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def serve_and_measure(url: str, model: str, images: list[bytes]) -> dict:
    """Sends `images` and waits until the background thread has measured all of them."""
    send(url, model, images)
    return wait_for(
        lambda: (s := summary(url, model))["stats"]["inputs"] >= len(images) and s,
        f"{len(images)} measured images of {model}",
    )


@pytest.fixture(scope="module")
def traffic(monitored, digits) -> dict[str, int]:
    """Each scenario's images sent to its model: held-out digits as they are, darker, larger,
    or only zeros and ones. Returns the images sent per model."""
    held_out = [data for _, data in digits["val"] + digits["test"]]
    sent = {
        "heldout": held_out,
        "dark": [digits_traffic.darker(data) for data in held_out],
        "large": [digits_traffic.resized(data) for data in held_out],
        "mix": [data for label, data in digits["val"] + digits["test"] if label in ("0", "1")],
    }
    for model, images in sent.items():
        serve_and_measure(monitored.rest_url, model, images)
    return {model: len(images) for model, images in sent.items()}


def drift(*args: str) -> tuple[int, dict, Path]:
    out = Path(args[args.index("--out") + 1])
    try:
        status = cli.main(["monitor", "drift", "--since", "10m", *args])
    except SystemExit as stop:
        status = stop.code
    return status, json.loads(out.read_text()) if out.exists() else {}, out


def test_the_json_route_counts_predictions_and_inputs(monitored, traffic):
    answer = summary(monitored.rest_url, "heldout", since="10m", version=1)
    assert answer["versions"] == [1]
    assert answer["bins"]["brightness"] == list(image_stats.UNIT_EDGES)
    counts = answer["stats"]
    assert counts["predictions"] == counts["inputs"] == traffic["heldout"]
    assert sum(counts["classes"].values()) == sum(counts["confidence"]) == traffic["heldout"]
    assert (
        counts["histograms"]["height"][image_stats.bin_index(32, image_stats.SIDE_EDGES)]
        == counts["inputs"]
    )
    assert 0 <= counts["low_confidence_rate"] < 0.25


def test_held_out_digits_are_not_flagged(monitored, traffic, ingested_digits, tmp_path):
    status, report, _ = drift(
        "--model", "heldout", "--server", monitored.rest_url,
        "--dataset", str(ingested_digits.path), "--out", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert (status, report["drifted"]) == (0, [])
    assert report["served"]["predictions"] == traffic["heldout"]
    assert "dataset.json" in report["dataset"]["reference"]


@pytest.mark.parametrize(
    ("model", "flagged", "unflagged"),
    [
        ("dark", {"brightness", "channel_mean_r", "contrast"}, {"height", "width"}),
        ("large", {"height", "width"}, {"brightness"}),
        ("mix", {"class"}, {"height", "width"}),
    ],
)
def test_shifted_traffic_is_flagged_from_the_written_windows(
    monitored, traffic, stats_dir, ingested_digits, tmp_path, model, flagged, unflagged
):
    wait_for(lambda: written_inputs(stats_dir, model) >= traffic[model], f"{model}'s windows")
    status, report, _ = drift(
        "--model", model, "--stats-dir", str(stats_dir),
        "--dataset", str(ingested_digits.path), "--out", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert status == monitoring_cli.DRIFT_EXIT
    assert flagged <= set(report["drifted"])
    assert not unflagged & set(report["drifted"])


def written_inputs(stats_dir: Path, model: str) -> int:
    if not (stats_dir / model).is_dir():
        return 0
    found = windows.read_windows(str(stats_dir), model, timespan.parse_since("10m"))
    return sum(window.inputs for window in found)


def test_prometheus_exposes_the_monitoring_metrics(monitored, traffic):
    text = httpx.get(f"{monitored.rest_url}/monitoring/prometheus/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    labels = {"model": "heldout", "version": "1"}

    def value(family: str, sample: str, **extra) -> float:
        wanted = labels | extra
        return next(
            s.value
            for s in families[family].samples
            if s.name == sample and wanted.items() <= s.labels.items()
        )

    assert families["imgclf_monitoring_confidence"].type == "histogram"
    assert (
        value("imgclf_monitoring_confidence", "imgclf_monitoring_confidence_count")
        == (traffic["heldout"])
    )
    predicted = sum(
        s.value
        for s in families["imgclf_monitoring_predictions"].samples
        if s.name == "imgclf_monitoring_predictions_total" and labels.items() <= s.labels.items()
    )
    assert predicted == traffic["heldout"]
    brightness = "imgclf_monitoring_input_brightness"
    assert value(brightness, f"{brightness}_count") == traffic["heldout"]
    assert value(brightness, f"{brightness}_bucket", le="0.5") == 0  # digits are bright
    for family in ("input_contrast", "input_height", "input_width", "input_channel_mean"):
        assert families[f"imgclf_monitoring_{family}"].type == "histogram"
    assert (
        0
        <= value("imgclf_monitoring_low_confidence_rate", "imgclf_monitoring_low_confidence_rate")
        <= 1
    )


def test_monitoring_route_errors_and_tf_serving_routes_untouched(monitored, traffic):
    url = monitored.rest_url
    unknown = httpx.get(f"{url}/monitoring/models/nope")
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    bad = httpx.get(f"{url}/monitoring/models/heldout", params={"since": "yesterday"})
    assert bad.status_code == 400 and "'yesterday'" in bad.json()["error"]
    bad = httpx.get(f"{url}/monitoring/models/heldout", params={"version": "one"})
    assert bad.status_code == 400 and "'one'" in bad.json()["error"]
    assert httpx.get(f"{url}/v1/models/heldout").json()["model_version_status"][0]["version"] == "1"
    assert httpx.get(f"{url}/v1/models/heldout/monitoring").status_code == 404


def logged_server(start_server, classifier, root: Path, log_images: bool):
    request_log = {"enabled": True, "dir": str(root), "sample_rate": 1.0, "top_k": 2}
    return start_server(
        model_path=classifier,
        monitoring={
            "window_seconds": 1,
            "dir": None,
            "request_log": request_log | {"log_images": log_images},
        },
    )


def logged_lines(root: Path, count: int) -> list[dict]:
    def lines():
        found = [
            json.loads(line)
            for path in sorted(root.glob("digits/1/predictions/*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        return found if len(found) >= count else None

    return wait_for(lines, f"{count} request log lines in {root}")


def test_the_request_log_writes_predictions_but_no_images_unless_asked(
    start_server, classifier, digits, tmp_path
):
    server = logged_server(start_server, classifier, tmp_path, log_images=False)
    images = [data for _, data in digits["test"][:10]]
    send(server.rest_url, "digits", images)
    lines = logged_lines(tmp_path, len(images))
    assert {(line["model"], line["version"]) for line in lines} == {("digits", 1)}
    assert all(len(line["top"]) == 2 and "image" not in line for line in lines)
    assert not list(tmp_path.rglob("*.png"))


def test_logged_images_ingest_as_a_dataset(start_server, classifier, digits, tmp_path):
    root = tmp_path / "log"
    server = logged_server(start_server, classifier, root, log_images=True)
    chosen = [
        (label, data) for digit in ("0", "1") for label, data in digits["test"] if label == digit
    ][::4]
    send(server.rest_url, "digits", [data for _, data in chosen])
    lines = logged_lines(root, len(chosen))
    image_dir = root / "digits" / "1" / "images"
    assert all((root / "digits" / "1" / line["image"]).is_file() for line in lines)
    result = shards.run(
        image_dir, tmp_path / "dataset", split={"train": 0.5, "val": 0.25, "test": 0.25}
    )
    predicted = {line["top"][0]["label"] for line in lines}
    assert set(result.dataset["label_map"]) == predicted
    assert result.dataset["written"] == len({line["sha256"] for line in lines})


def test_monitoring_can_be_switched_off(start_server, classifier, digits):
    server = start_server(model_path=classifier, monitoring={"enabled": False})
    send(server.rest_url, "digits", [data for _, data in digits["test"][:2]])
    answer = httpx.get(f"{server.rest_url}/monitoring/models/digits")
    assert answer.status_code == 404 and "serving.monitoring.enabled" in answer.json()["error"]
    text = httpx.get(f"{server.rest_url}/monitoring/prometheus/metrics").text
    assert "imgclf_monitoring_predictions_total{" not in text


def test_grpc_requests_are_counted_and_float_inputs_not_measured(start_server, classifier, digits):
    server = start_server(model_path=classifier, monitoring={"dir": None, "input_sample_rate": 1.0})
    images = [data for _, data in digits["test"][:3]]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for signature, tensor in (
            ("serving_default", {"image_bytes": tf.make_tensor_proto(images)}),
            ("predict_images", {"images": tf.make_tensor_proto(np.zeros((2, 32, 32, 1), "f"))}),
        ):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.model_spec.signature_name = signature
            for key, proto in tensor.items():
                request.inputs[key].CopyFrom(proto)
            stub.Predict(request, timeout=30)
    counts = wait_for(
        lambda: (s := summary(server.rest_url, "digits")["stats"])["inputs"] == 3 and s,
        "3 measured images",
    )
    assert counts["predictions"] == 5
