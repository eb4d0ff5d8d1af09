"""Data-source fixtures: image trees, archives, real S3 (moto) and HTTP servers on 127.0.0.1."""

import collections
import http.server
import io
import logging
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from configs import schema
from transforms.sources import base, registry

# {relative path: bytes}: a tree, a manifest's images or an archive's members.
Files = dict[str, bytes]


@pytest.fixture
def make_cfg() -> Callable[..., schema.DataConfig]:
    """make_cfg(source, **fields): a DataConfig with quick retries, for tests."""

    def make(source: str | Path, **fields: Any) -> schema.DataConfig:
        fields = {"read_retries": 2, "retry_backoff_s": 0.01, "read_timeout_s": 10.0} | fields
        return schema.DataConfig(source=str(source), **fields)

    return make


@pytest.fixture(scope="session")
def image_files(make_image: Callable[..., bytes]) -> Files:
    """Six distinct images over three classes: PNGs and JPEGs, one nested inside its class."""
    return {
        "cat/1.png": make_image(1),
        "cat/2.jpg": make_image(2, "JPEG"),
        "dog/1.png": make_image(3),
        "dog/puppies/2.png": make_image(4),
        "fox/1.jpg": make_image(5, "JPEG"),
        "fox/2.png": make_image(6),
    }


def write_files(root: Path, files: Files) -> Path:
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return root


def zip_bytes(files: Files) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_bytes(files: Files, mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def read_all(cfg: schema.DataConfig) -> dict[str, tuple[base.SourceItem, bytes | base.ReadFailure]]:
    """{item uri: (item, bytes or failure)} over every unit of `cfg.source`."""
    return {
        item.uri: (item, data)
        for unit in registry.list_units(cfg)
        for item, data in registry.read_unit(unit, cfg)
    }


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real moto S3 server on 127.0.0.1 with dummy credentials in the environment."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint)


class FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves the server's folder, with byte ranges unless the path starts with /norange/.

    /flaky/<name> fails with 503 while `server.flaky[<path>]` > 0 (a GET counts one down). The
    first GET of /flaky/<name> that starts in `range(*server.cut.pop(<path>))` gets half its body,
    then a hang-up. Every GET is counted in `server.hits[<path>]`, so tests see how many
    attempts a read took.
    """

    server: "FileServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _cut(self, path: str, start: int) -> bool:
        with self.server.lock:
            if start in range(*self.server.cut.get(path, (0, 0))):
                del self.server.cut[path]
                return True
        return False

    def _serve(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if body:
            self.server.hits[path] += 1
        if self.server.flaky.get(path, 0) > 0:
            if body:
                self.server.flaky[path] -= 1
            self.send_error(503, "flaky on purpose")
            return
        relative = path.removeprefix("/norange").removeprefix("/flaky").lstrip("/")
        file = self.server.root / relative
        if not relative or not file.is_file():
            self.send_error(404, "no such file")
            return
        content = file.read_bytes()
        ranges = not path.startswith("/norange/")
        header = self.headers.get("Range", "")
        start = 0
        if ranges and header.startswith("bytes="):
            start_text, _, end_text = header[6:].partition("-")
            start = int(start_text)
            end = min(int(end_text) if end_text else len(content) - 1, len(content) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(content)}")
            content = content[start : end + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        if ranges:  # A server without ranges just ignores the header, like http.server.
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body and self._cut(path, start):
            self.wfile.write(content[: len(content) // 2])
            self.wfile.flush()
            time.sleep(0.2)  # Lets the client use what it got before it sees the hang-up.
            self.close_connection = True
        elif body:
            self.wfile.write(content)


class FileServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), FileHandler)
        self.root = root
        self.hits: collections.Counter[str] = collections.Counter()
        self.flaky: dict[str, int] = {}
        self.cut: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """A threaded HTTP server on 127.0.0.1 over an empty temporary folder (`server.root`)."""
    server = FileServer(tmp_path_factory.mktemp("http"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
