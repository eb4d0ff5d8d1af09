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
