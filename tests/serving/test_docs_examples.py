"""docs/serving.md's examples, run verbatim against `imgclf serve` on the ports they name."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry import store
from serving import client
from tests.conftest import export_dense_model

pytestmark = pytest.mark.serving

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "serving.md"
EXAMPLE = re.compile(r"<!-- docs-test: serving -->\n```(bash|python)\n(.*?)```", re.DOTALL)
PORTS = (8501, 8500)  # what the examples name: serving.port and serving.grpc_port defaults


def page_examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(PAGE.read_text(encoding="utf-8"))


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def examples_workdir(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path) -> Path:
    """A folder laid out as the examples assume: data/digits/ and model_store/ with a digits
    model whose version 1 is labelled production; `imgclf serve` running on 8501/8500."""
    busy = [port for port in PORTS if not port_is_free(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use; the serving examples need them free")
    workdir = tmp_path_factory.mktemp("serving-examples")
    (workdir / "data").mkdir()
    (workdir / "data" / "digits").symlink_to(digits_dir)
    exported = export_dense_model(workdir / "exports", 32, 1, [str(d) for d in range(10)])
    store.push(workdir / "model_store", exported, "digits")
    store.promote(workdir / "model_store", "digits", 1, "production", force=True)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--model-config-file",
            "model_store/models.config",
        ],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client.wait_until_ready("http://127.0.0.1:8501", "digits", timeout_s=2)
                break
            except client.ClientError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
        yield workdir
    finally:
        server.terminate()
        server.wait(timeout=30)


def json_documents(text: str) -> list[dict]:
    """The JSON objects in curl's output, which ends none of them with a newline; a brace that
    starts no JSON (Prometheus labels, `metric{api="rest"}`) is skipped."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) != -1:
        try:
            document, position = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        documents.append(document)
    return documents


def test_the_page_has_its_examples():
    assert [language for language, _ in page_examples()] == ["bash", "python", "python"]


def test_curl_examples(examples_workdir: Path):
    (_, script), *_ = page_examples()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=examples_workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    documents = json_documents(result.stdout)
    status, labelled, metadata, prediction, uploads = documents
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert labelled["model_version_status"][0]["version"] == "1"
    assert "serving_default" in metadata["metadata"]["signature_def"]["signature_def"]
    assert len(prediction["predictions"][0]["scores"]) == 10
    assert [r["filename"] for r in uploads["results"]] == ["0003.png", "0007.png"]
    assert all(len(r["top"]) == 3 for r in uploads["results"])
    assert re.search(r'imgclf_serving_requests_total\{.*code="200".*\} [1-9]', result.stdout)


@pytest.mark.parametrize("index, expected", [(1, r"\d \(\d\.\d\d\)"), (2, r"1 \['\d', '\d'\]")])
def test_python_examples(examples_workdir: Path, index: int, expected: str):
    code = page_examples()[index][1]

    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=examples_workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(expected, result.stdout.strip().splitlines()[-1]), result.stdout
