"""Fixtures shared by the trainer tests."""

from pathlib import Path

import pytest

from configs import loader
from transforms.beam import ingest

DIGITS_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits.yaml"


@pytest.fixture(scope="session")
def ingested_digits(tmp_path_factory, digits_dir) -> ingest.IngestResult:
    """configs/digits.yaml's dataset made from the bundled digits, once per session.

    Training only reads it, so tests share it and pass `data.output_dir=<result.path.parent>`.
    """
    out = tmp_path_factory.mktemp("digits_tfrecords")
    cfg = loader.load(
        DIGITS_CONFIG,
        [f"data.source={digits_dir}", f"data.output_dir={out}", "data.beam_direct_mode=in_memory"],
    )
    return ingest.run(cfg.data)
