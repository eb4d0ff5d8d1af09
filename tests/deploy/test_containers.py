"""The `imgclf serve` image built with podman (`make images`) and run on a registry mounted from
the host: REST, gRPC and upload requests, a promote and a rollback on the host served without a
restart, a clean stop on SIGTERM, and the same image run by deploy/docker-compose.yml."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import cli
from serving import client
from tests.conftest import b64, encode_png, export_dense_model

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "containers" / "build.sh"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
CONTAINERS_CONF = REPO / "deploy" / "containers" / "containers.conf"
IMAGE = "localhost/imgclf-serve:latest"
ROOT = "/models"  # where the container sees the registry
MODEL = "digits"
# Two versions told apart by their labels as well as their numbers.
CLASSES = {1: ["a", "b"], 2: ["x", "y"]}
STOP_TIMEOUT_S = 20  # podman stop's wait before SIGKILL
PROJECT_LABEL = "io.podman.compose.project"

pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("podman") is None or shutil.which("debootstrap") is None,
        reason="podman or debootstrap is not installed (apt-get install podman buildah "
        "debootstrap runc; .ci/run installs them)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the base image is built as root (debootstrap)"),
]


def podman(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def registry(*argv: str) -> None:
    assert cli.main(["registry", *argv]) == 0


def write_serving_config(store_dir: Path) -> None:
    """What the docs say to run after every promote or rollback: the container reads this."""
    out = store_dir / "serving.config"
    registry("serving-config", "--root", ROOT, "--store", str(store_dir), "--out", str(out))


@pytest.fixture(scope="module")
def serve_image() -> str:
    """The images as `make images` builds them: from scratch the first time (minutes), then
    from cached layers (seconds), so the container runs these sources."""
    started = time.monotonic()
    result = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"images built in {time.monotonic() - started:.0f} s")
    return IMAGE


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with digits versions 1 (production) and 2, readable by the image's uid 1000."""
    base = tmp_path_factory.mktemp("container-registry")
    for version, class_names in CLASSES.items():
        run_dir = base / "runs" / f"run-{version}"
        export_dense_model(run_dir / "export", 8, 1, class_names)
        (run_dir / "blessing.json").write_text(json.dumps({"blessed": True}))
        registry("push", str(run_dir), "--model", MODEL, "--store", str(base / "store"))
    registry("promote", MODEL, "1", "--label", "production", "--store", str(base / "store"))
    write_serving_config(base / "store")
    # pytest's temporary folders are private to root; a real registry volume is world-readable.
    for folder in (base, base / "store"):
        folder.chmod(0o755)
    return base / "store"


@pytest.fixture(scope="module")
def container(serve_image: str, store_dir: Path):
    """The serving container on the host's network, the registry mounted read-only; yields
    (name, REST URL, gRPC address, seconds from `podman run` to the first prediction)."""
    name = f"imgclf-test-{uuid.uuid4().hex[:8]}"
    rest_port, grpc_port = free_port(), free_port()
    started = time.monotonic()
    run = podman(
        "run", "--detach", "--name", name, "--init", "--network", "host",
        "--volume", f"{store_dir}:{ROOT}:ro",
        serve_image,  # the registry path is the entrypoint's: these flags add to it
        "--host", "127.0.0.1", "--port", str(rest_port), "--grpc-port", str(grpc_port),
        "--set", "serving.poll_seconds=0.5",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{rest_port}"
    try:
        client.wait_until_ready(url, MODEL, timeout_s=180)
        predict(url, "production", [encode_png(0, (8, 8), "L")])
        cold_start_s = time.monotonic() - started
        print(f"container: first prediction {cold_start_s:.1f} s after podman run")
        yield name, url, f"127.0.0.1:{grpc_port}", cold_start_s
    finally:
        print(podman("logs", name).stdout[-3000:])
        podman("rm", "--force", "--time", "0", name)


def predict(url: str, label: str, images: list[bytes]) -> list[dict]:
    response = httpx.post(
        f"{url}/v1/models/{MODEL}/labels/{label}:predict",
        json={"instances": [b64(image) for image in images]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def grpc_predict(address: str, label: str, images: list[bytes]) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.version_label = label
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images))
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=60)


def upload(url: str, images: list[bytes]) -> dict:
    files = [("files", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
    response = httpx.post(f"{url}/v1/models/{MODEL}/labels/production:classify-images", files=files)
    assert response.status_code == 200, response.text
    return response.json()


def host_scores(store_dir: Path, version: int, images: list[bytes]) -> np.ndarray:
    """The version's serving_default signature run here, outside the container."""
    model = tf.saved_model.load(str(store_dir / MODEL / str(version)))
    outputs = model.signatures["serving_default"](image_bytes=tf.constant(images))
    return outputs["scores"].numpy()


def served_version(address: str) -> int:
    return grpc_predict(
        address, "production", [encode_png(0, (8, 8), "L")]
    ).model_spec.version.value


def wait_for_version(address: str, version: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (served := served_version(address)) != version:
        assert time.monotonic() < deadline, f"production still serves {served}, not {version}"
        time.sleep(0.2)


IMAGES = [encode_png(1, (8, 8), "L"), encode_png(2, (20, 12), "RGB")]


def test_rest_grpc_and_upload_answer_what_the_model_computes(container, store_dir):
    _, url, address, _ = container
    expected = host_scores(store_dir, 1, IMAGES)

    rest = predict(url, "production", IMAGES)
    np.testing.assert_allclose([p["scores"] for p in rest], expected, rtol=1e-5, atol=1e-6)
    assert [p["classes"] for p in rest] == [CLASSES[1]] * len(IMAGES)

    response = grpc_predict(address, "production", IMAGES)
    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL, 1)
    grpc_scores = tf.make_ndarray(response.outputs["scores"])
    np.testing.assert_allclose(grpc_scores, expected, rtol=1e-5, atol=1e-6)

    uploaded = upload(url, IMAGES)
    assert (uploaded["model"], uploaded["version"]) == (MODEL, 1)
    for result, scores in zip(uploaded["results"], expected, strict=True):
        assert result["top"][0]["label"] == CLASSES[1][int(np.argmax(scores))]


def test_promote_and_rollback_on_the_host_are_served_without_a_restart(container, store_dir):
    name, url, address, _ = container
    started_at = podman("inspect", "--format", "{{.State.StartedAt}}", name).stdout

    registry("promote", MODEL, "2", "--label", "production", "--store", str(store_dir))
    write_serving_config(store_dir)
    wait_for_version(address, 2)
    assert {top["label"] for r in upload(url, IMAGES)["results"] for top in r["top"]} <= set(
        CLASSES[2]
    )
    np.testing.assert_allclose(
        [p["scores"] for p in predict(url, "production", IMAGES)],
        host_scores(store_dir, 2, IMAGES),
        rtol=1e-5,
        atol=1e-6,
    )

    registry("rollback", MODEL, "--store", str(store_dir))
    write_serving_config(store_dir)
    wait_for_version(address, 1)
    assert [p["classes"] for p in predict(url, "production", IMAGES)] == [CLASSES[1]] * 2
    assert podman("inspect", "--format", "{{.State.StartedAt}}", name).stdout == started_at


def test_the_container_stops_cleanly_on_sigterm(container):
    name, _, _, cold_start_s = container
    assert cold_start_s < 120
    started = time.monotonic()
    stop = podman("stop", "--time", str(STOP_TIMEOUT_S), name, timeout=STOP_TIMEOUT_S + 30)
    elapsed = time.monotonic() - started
    assert stop.returncode == 0, stop.stderr
    state = json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout)
    # SIGKILL after the timeout would show as 137: the server must exit on SIGTERM itself.
    assert state["ExitCode"] == 0, state
    assert elapsed < STOP_TIMEOUT_S / 2, f"podman stop took {elapsed:.1f} s"


@pytest.mark.skipif(
    importlib.util.find_spec("podman_compose") is None, reason="podman-compose is not installed"
)
def test_compose_serves_the_registry_on_published_ports(serve_image, store_dir):
    project = f"imgclf-test-{uuid.uuid4().hex[:8]}"
    rest_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "MODEL_STORE": str(store_dir),
        "MODEL_NAME": MODEL,
        "REST_PORT": str(rest_port),
        "GRPC_PORT": str(grpc_port),
    }

    def compose(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "podman_compose", "-p", project, "-f", str(COMPOSE)]
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=120
        )

    up = compose("up", "--detach", "--no-build", "serving")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # Published from the container's own network, not the host's: the bridge and the ports.
        url = f"http://127.0.0.1:{rest_port}"
        client.wait_until_ready(url, MODEL, timeout_s=180)
        assert [p["classes"] for p in predict(url, "production", IMAGES)] == [CLASSES[1]] * 2
        response = grpc_predict(f"127.0.0.1:{grpc_port}", "production", IMAGES)
        assert response.model_spec.version.value == 1
        [container] = json.loads(
            podman("ps", "--format", "json", "--filter", f"label={PROJECT_LABEL}={project}").stdout
        )
        # The compose file's health check, run as the engine runs it.
        health = podman("healthcheck", "run", container["Id"])
        assert health.returncode == 0, health.stdout + health.stderr
        stop = compose("stop", "--timeout", str(STOP_TIMEOUT_S))
        assert stop.returncode == 0, stop.stderr
        state = json.loads(podman("inspect", "--format", "{{json .State}}", container["Id"]).stdout)
        assert state["ExitCode"] == 0, state  # init: true passed SIGTERM on
    finally:
        compose("down", "--timeout", "0")


def test_the_training_image_ingests_as_the_host_does(serve_image, tmp_path):
    """The `imgclf` image runs the pipeline's commands: an ingest of a mounted folder, written
    as uid 1000, gives the dataset version an ingest on the host gives."""
    work = tmp_path / "work"
    for index in range(12):
        label = "ab"[index % 2]
        path = work / "images" / label / f"{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(index, (16, 12), "RGB"))
    work.chmod(0o777)  # the image's uid 1000 writes data/ beside the images

    run = podman(
        "run", "--rm", "--init", "--volume", f"{work}:/work", "localhost/imgclf:latest",
        "ingest", "--set", "data.source=/work/images", "--set", "data.output_dir=/work/data",
        timeout=300,
    )  # fmt: skip
    assert (
        cli.main(
            ["ingest", "--set", f"data.source={work / 'images'}"]
            + ["--set", f"data.output_dir={tmp_path / 'host-data'}"]
        )
        == 0
    )

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    in_container = (work / "data" / "latest").read_text().strip()
    on_host = (tmp_path / "host-data" / "latest").read_text().strip()
    assert in_container == on_host
    dataset = json.loads((work / "data" / in_container / "dataset.json").read_text())
    assert dataset["written"] == 12


def test_a_token_from_the_environment_guards_the_container(serve_image, store_dir):
    """serving.auth as a Kubernetes Secret would set it: the token in an environment variable.
    Predictions need it; the status probe does not."""
    name = f"imgclf-test-{uuid.uuid4().hex[:8]}"
    rest_port = free_port()
    token = uuid.uuid4().hex
    run = podman(
        "run", "--detach", "--name", name, "--init", "--network", "host",
        "--volume", f"{store_dir}:{ROOT}:ro", "--env", f"IMGCLF_TOKEN={token}",
        serve_image,
        "--host", "127.0.0.1", "--port", str(rest_port), "--no-grpc",
        "--set", "serving.auth.token_env=IMGCLF_TOKEN",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{rest_port}"
    body = {"instances": [b64(IMAGES[0])]}
    try:
        client.wait_until_ready(url, MODEL, timeout_s=180)  # the probe: public
        refused = httpx.post(f"{url}/v1/models/{MODEL}:predict", json=body, timeout=60)
        allowed = httpx.post(
            f"{url}/v1/models/{MODEL}:predict",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
    finally:
        podman("rm", "--force", "--time", "0", name)
    assert refused.status_code == 401
    assert allowed.status_code == 200, allowed.text
