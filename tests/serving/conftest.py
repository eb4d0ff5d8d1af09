"""Fixtures for the serving tests: a tiny exported model and real REST servers on 127.0.0.1."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from configs import schema
from serving.server import server
from tests.conftest import MODEL_NAME


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serving: starts a real model server on 127.0.0.1")


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
