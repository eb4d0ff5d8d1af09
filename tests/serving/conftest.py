"""Fixtures for the serving tests: a tiny exported model and real REST servers on 127.0.0.1."""

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.server import models, rest
from tests.conftest import export_dense_model

MODEL_NAME = "digits"
CLASS_NAMES = ["a", "b", "c"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serving: starts a real model server on 127.0.0.1")


def encode_png(seed: int, size: tuple[int, int], mode: str) -> bytes:
    """Random noise as a PNG, so that different images get different scores."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def png_images() -> list[bytes]:
    """Three PNGs of other sizes and modes than the model's 32x32 grayscale input."""
    return [
        encode_png(0, (32, 32), "L"),
        encode_png(1, (48, 20), "RGB"),
        encode_png(2, (7, 9), "RGBA"),
    ]


@pytest.fixture(scope="module")
def export_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<base>/1/`: Input (32, 32, 1) -> Flatten -> Dense(3, softmax), exported for serving."""
    base = tmp_path_factory.mktemp("export")
    export_dense_model(base, 32, 1, CLASS_NAMES)
    return base


@pytest.fixture(scope="module")
def served_model(export_base: Path) -> models.ServedModel:
    return models.ServedModel(MODEL_NAME, export_base)


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., rest.AnnouncingServer]]:
    """Starts servers in background threads and stops them all when the module ends."""
    running = []

    def start(
        served: dict[str, models.ServedModel],
        sockets: list[socket.socket] | None = None,
        port: int = 0,
    ) -> rest.AnnouncingServer:
        server = rest.build_server(served, "127.0.0.1", port, log_level="warning")
        thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the REST server did not start; see the log above")
            time.sleep(0.01)
        return server

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(
    start_server: Callable[..., rest.AnnouncingServer], served_model: models.ServedModel
) -> str:
    # Bound here and handed over, so no other process can take the port before uvicorn listens.
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    start_server({MODEL_NAME: served_model}, sockets=[listening])
    return f"http://127.0.0.1:{listening.getsockname()[1]}"
