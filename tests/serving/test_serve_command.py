"""`imgclf serve` as a process: uvicorn's access log by --log-level."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving import client
from tests.conftest import export_dense_model

pytestmark = pytest.mark.serving

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serve-command") / "digits"
    export_dense_model(base, 8, 1, ["a", "b"])
    return base


@pytest.mark.parametrize(("level", "logged"), [([], True), (["--log-level", "warning"], False)])
def test_every_request_is_logged_unless_the_level_is_warning(exported, level, logged):
    port = free_port()
    command = [sys.executable, "-m", "cli", "serve", "--model-path", str(exported)]
    command += ["--model-name", "digits", "--port", str(port), "--no-grpc", *level]
    server = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client.wait_until_ready(f"http://127.0.0.1:{port}", "digits", timeout_s=120)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"serve: 1 model(s) on http://127.0.0.1:{port}" in output
    assert ('"GET /v1/models/digits HTTP/1.1" 200' in output) is logged, output


def test_a_run_folder_is_served_from_its_export_folder(start_server, tmp_path):
    run_dir = tmp_path / "runs" / "20261207-120000-abc"
    export_dense_model(run_dir / "export", 8, 1, ["a", "b"], version=3)
    (run_dir / "config.yaml").write_text("{}\n")  # what else a run folder holds

    served = start_server(model_path=run_dir, name="digits")

    status = client.wait_until_ready(served.rest_url, "digits")
    assert [entry["version"] for entry in status["model_version_status"]] == ["3"]


def test_a_folder_without_versions_names_what_it_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--model-path", str(tmp_path), "--no-grpc"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "or a run folder holding them in export/" in result.stderr
    assert "Traceback" not in result.stderr
