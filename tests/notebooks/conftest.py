"""A small ingested digits dataset and a finished tiny run on it, built once per session."""

import pytest

from tests.conftest import DIGITS_CONFIG, digits_subset

PER_CLASS = 12  # 120 images: 96 train / 12 val / 12 test, and ingest takes a few seconds
TINY_RUN = [
    "data.image_size=[16, 16]",
    "model.cnn=[{conv: {filters: 8}}, {max_pool: {}}]",
    "train.epochs=2",
    "optimizer.warmup_epochs=0",
    "pipeline.infra_validation.enabled=false",
]


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory, digits_dir):
    """configs/digits.yaml's ingest of 12 digits per class: (overrides, IngestResult)."""
    from configs import loader
    from transforms.beam import ingest

    root = tmp_path_factory.mktemp("notebook_digits")
    source = digits_subset(digits_dir, root / "digits", PER_CLASS)
    overrides = [
        f"data.source={source}",
        f"data.output_dir={root / 'tfrecords'}",
        f"train.runs_dir={root / 'runs'}",
    ]
    return overrides, ingest.run(loader.load(DIGITS_CONFIG, overrides).data)


@pytest.fixture(scope="session")
def small_digits_run(small_digits):
    """A finished 2-epoch run on small_digits as `imgclf train` leaves it (evaluated: metrics,
    charts, predictions.jsonl): (overrides, RunResult)."""
    from configs import loader
    from tfx_pipeline import flow

    overrides = [*small_digits[0], *TINY_RUN]
    return overrides, flow.run(loader.load(DIGITS_CONFIG, overrides))
