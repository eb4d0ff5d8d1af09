"""Fixtures for the serving tests: a tiny exported model and real REST servers on 127.0.0.1."""

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import schema
from serving.server import models, server
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
    return models.ServedModel.latest(MODEL_NAME, export_base)


def serving_config(**overrides) -> schema.ServingConfig:
    """Any free ports on 127.0.0.1, no rescans unless asked."""
    values = {"host": "127.0.0.1", "port": 0, "grpc_port": 0, "poll_seconds": 0, **overrides}
    return schema.ServingConfig(**values)


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., server.ModelServer]]:
    """start(model_path=... | model_config_file=..., **serving overrides) -> a running server;
    every server started is stopped when the module ends."""
    running = []

    def start(model_path=None, model_config_file=None, name=MODEL_NAME, **overrides):
        config = serving_config(model_name=name, **overrides)
        models_manager = server.build_manager(config, model_path, model_config_file, name)
        running.append(server.ModelServer(models_manager, config).start())
        return running[-1]

    yield start
    for model_server in running:
        model_server.stop()


@pytest.fixture(scope="module")
def model_server(start_server: Callable[..., server.ModelServer], export_base: Path):
    return start_server(model_path=export_base)


@pytest.fixture(scope="module")
def server_url(model_server: server.ModelServer) -> str:
    return model_server.rest_url
