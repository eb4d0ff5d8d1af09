"""Markers of the deployment tests."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "container: builds the images with podman and runs the serving container"
    )
