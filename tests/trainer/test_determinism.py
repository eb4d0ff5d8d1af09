"""train.deterministic: whole `python -m trainer.task` runs repeat bit for bit from one seed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from configs import loader
from core import run_layout
from transforms.beam import ingest

pytestmark = [pytest.mark.slow, pytest.mark.beam]

REPO = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPO / "configs" / "digits.yaml"
PER_CLASS = 30  # 300 of the digits: enough for a few batches per epoch
PROCESS_TIMEOUT_S = 240
FINGERPRINT = re.compile(r"\(weights ([0-9a-f]{16})\)")
# Randomness everywhere a run has it: initialisation, shuffling, augmentation and dropout.
RUN = [
    "data.image_size=[16, 16]",
    "data.batch_size=32",
    "augment.layers=[{random_flip: {mode: horizontal}}, {random_rotation: {factor: 0.05}}]",
    "model.cnn=[{conv: {filters: 8}}, {max_pool: {}}, {batch_norm: {momentum: 0.5}}]",
    "model.head={pooling: flatten, dropout: 0.3}",
    "optimizer={learning_rate: 0.01, schedule: constant, warmup_epochs: 0}",
    "train.epochs=2",
    "train.distribution=none",
    "train.precision=float32",
    "train.deterministic=true",
]


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory, digits_dir, make_tree) -> list[str]:
    """The first PER_CLASS digits of each class, ingested; returns the run's --set overrides."""
    root = tmp_path_factory.mktemp("determinism")
    spec = {
        class_dir.name: {
            path.name: path.read_bytes() for path in sorted(class_dir.glob("*.png"))[:PER_CLASS]
        }
        for class_dir in sorted(digits_dir.iterdir())
    }
    overrides = [
        f"data.source={make_tree(root / 'tree', spec)}",
        f"data.output_dir={root / 'tfrecords'}",
        "data.beam_direct_mode=in_memory",
        "data.split={train: 0.6, val: 0.2, test: 0.2}",
        f"train.runs_dir={root / 'runs'}",
        *RUN,
    ]
    ingest.run(loader.load(DIGITS_CONFIG, overrides).data)
    return overrides


def start(overrides: list[str], run_id: str, seed: int) -> subprocess.Popen:
    settings = [*overrides, f"train.run_id={run_id}", f"seed={seed}"]
    command = [sys.executable, "-m", "trainer.task", "--config", str(DIGITS_CONFIG)]
    command += [arg for setting in settings for arg in ("--set", setting)]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> str:
    """Waits for a run; returns the fingerprint of its final weights."""
    output, _ = process.communicate(timeout=PROCESS_TIMEOUT_S)
    assert process.returncode == 0, output[-3000:]
    [fingerprint] = FINGERPRINT.findall(output)
    return fingerprint


def test_two_deterministic_runs_with_one_seed_are_identical(small_digits):
    # Started together: the runs share the machine, as repeat runs often do.
    processes = {
        "first": start(small_digits, "first", seed=42),
        "second": start(small_digits, "second", seed=42),
        "other_seed": start(small_digits, "other_seed", seed=7),
    }
    fingerprints = {run_id: finish(process) for run_id, process in processes.items()}
    runs_dir = Path(loader.load(DIGITS_CONFIG, small_digits).train.runs_dir)
    history = {
        run_id: (runs_dir / run_id / run_layout.HISTORY).read_bytes() for run_id in processes
    }
    metrics = {
        run_id: json.loads((runs_dir / run_id / run_layout.METRICS).read_text())
        for run_id in processes
    }

    assert len(history["first"].splitlines()) == 3  # the header and two epochs
    assert b"val_loss" in history["first"].splitlines()[0]
    assert history["second"] == history["first"]
    assert metrics["first"]["accuracy"] > 0.3  # it learned: ten classes, chance is 0.1
    assert metrics["second"]["accuracy"] == metrics["first"]["accuracy"]
    assert fingerprints["second"] == fingerprints["first"]
    # Another seed trains another model: the comparison above can fail.
    assert fingerprints["other_seed"] != fingerprints["first"]
    assert history["other_seed"] != history["first"]
