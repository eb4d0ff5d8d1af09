"""InfraValidator against real exports served on free ports of 127.0.0.1."""

import shutil
import socket
import threading
from pathlib import Path

import pytest

from artifacts import warmup
from configs import schema
from serving import infra_validation
from serving.server import server
from tests.conftest import export_dense_model

pytestmark = pytest.mark.serving

MODEL_NAME = "digits"


@pytest.fixture(scope="module")
def good_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<base>/1/`: a dense 16x16 grayscale model with warm-up records."""
    return export_dense_model(tmp_path_factory.mktemp("export"), 16, 1, ["a", "b", "c"])


@pytest.fixture
def copied_export(good_export: Path, tmp_path: Path) -> Path:
    """A writable copy of `good_export` as `<tmp>/export/1/`, for tests that break it."""
    return Path(shutil.copytree(good_export, tmp_path / "export" / "1"))


def validate(saved_model_dir: Path, **overrides) -> dict:
    return infra_validation.infra_validate(
        saved_model_dir, schema.InfraValidationConfig(**overrides), MODEL_NAME
    )


def serving_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in ("rest", "model-watcher")}


def test_good_export_passes_with_sensible_latencies(good_export):
    # serving_default at 1 and 8 images, predict_images, preprocess_images
    assert len(warmup.read_warmup_requests(good_export)) == 4
    result = validate(good_export, requests=12)
    assert result["passed"], result["reason"]
    assert result["requests"] == 12 and result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] < 5000
    assert result["budget_ms"] == 1000.0
    assert "12 requests served" in result["reason"]


def test_every_warmup_request_is_sent_at_least_once(good_export):
    result = validate(good_export, requests=1)
    assert result["passed"], result["reason"]
    assert result["requests"] == 4


def test_a_folder_of_versions_serves_the_newest(good_export):
    result = validate(good_export.parent, requests=3)
    assert result["passed"], result["reason"]


def test_tiny_budget_fails_with_the_measured_p99(good_export):
    result = validate(good_export, requests=5, latency_budget_ms=0.001)
    assert not result["passed"]
    assert result["errors"] == 0 and result["p99_ms"] > 0.001
    assert f"p99 latency {result['p99_ms']} ms" in result["reason"]
    assert "pipeline.infra_validation.latency_budget_ms 0.001" in result["reason"]


def test_corrupt_export_fails_with_the_load_error(copied_export):
    (copied_export / "saved_model.pb").write_bytes(b"not a SavedModel")
    result = validate(copied_export)
    assert not result["passed"]
    assert result["requests"] == 0 and result["p99_ms"] is None
    assert "failed to load" in result["reason"] and "Cannot parse" in result["reason"]
    assert "infra-validation-" not in result["reason"]  # the export, not the staging link


def test_missing_saved_model_fails_without_raising(tmp_path):
    result = validate(tmp_path)
    assert not result["passed"]
    assert "no servable version" in result["reason"]


def test_export_without_warmup_records_sends_a_generated_png(copied_export):
    warmup.warmup_path(copied_export).unlink()
    first = infra_validation.replay_requests(copied_export, MODEL_NAME)[0]
    assert first.model_spec.signature_name == "serving_default"
    result = validate(copied_export, requests=4)
    assert result["passed"], result["reason"]
    assert result["requests"] == 4


def test_disabled_skips(tmp_path):
    result = validate(tmp_path, enabled=False)
    assert result["passed"] and result["reason"].startswith("skipped")


def test_server_is_stopped_afterwards(good_export, monkeypatch):
    started = []
    original_start = server.ModelServer.start

    def start(self, *args, **kwargs):
        started.append(self)
        return original_start(self, *args, **kwargs)

    monkeypatch.setattr(server.ModelServer, "start", start)
    before = serving_threads()
    assert validate(good_export, requests=2)["passed"]
    (model_server,) = started
    assert not model_server._rest_thread.is_alive()
    assert serving_threads() == before
    for port in (model_server.rest_port, model_server.grpc_port):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # raises if something still listens there
