"""trainer.task resumes a killed run: real `python -m trainer.task` processes and real SIGKILLs."""

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tensorflow as tf

from configs import loader
from core import run_layout
from transforms import dataset

pytestmark = [pytest.mark.slow, pytest.mark.beam]

REPO = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPO / "configs" / "digits.yaml"
EPOCHS = 5
BATCH_SIZE = 64
# The digits are 8x8 pixels, so 16x16 loses nothing and trains twice as fast as 32x32.
FAST = [
    f"data.batch_size={BATCH_SIZE}",
    "data.image_size=[16, 16]",
    "augment.layers=[]",
    "train.early_stopping.enabled=false",
    "train.distribution=none",
]
PROCESS_TIMEOUT_S = 240
CHECKPOINT_NUMBER = re.compile(r"ckpt-(\d+)$")


class Digits:
    """The bundled digits, ingested once for the module."""

    def __init__(self, root: Path, source: Path, version_dir: Path, steps_per_epoch: int):
        self.root, self.source, self.version_dir = root, source, version_dir
        self.steps_per_epoch = steps_per_epoch

    def overrides(self) -> list[str]:
        return [
            f"data.source={self.source}",
            f"data.output_dir={self.version_dir.parent}",
            f"train.runs_dir={self.root / 'runs'}",
        ]

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id


@pytest.fixture(scope="module")
def digits(tmp_path_factory, digits_dir, ingested_digits) -> Digits:
    train_count = ingested_digits.dataset["splits"]["train"]["count"]
    return Digits(
        tmp_path_factory.mktemp("resume"),
        digits_dir,
        ingested_digits.path,
        train_count // BATCH_SIZE,
    )


def train_command(digits: Digits, run_id: str, *overrides: str) -> list[str]:
    settings = [*digits.overrides(), *FAST, f"train.run_id={run_id}", *overrides]
    return [
        sys.executable,
        "-m",
        "trainer.task",
        "--config",
        str(DIGITS_CONFIG),
        *(arg for setting in settings for arg in ("--set", setting)),
    ]


def train(command: list[str], kill_when=None) -> tuple[int, list[str]]:
    """Runs `command`, reading its output line by line; SIGKILLs it once `kill_when(line)` is
    true. Returns the exit status (-SIGKILL when killed) and every line it printed."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(PROCESS_TIMEOUT_S, process.kill)
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if kill_when is not None and kill_when(lines[-1]):
                process.send_signal(signal.SIGKILL)
                kill_when = None
        status = process.wait()
    finally:
        timed_out = not watchdog.is_alive()
        watchdog.cancel()
        process.stdout.close()
    assert not timed_out, f"{command} ran past {PROCESS_TIMEOUT_S}s:\n" + "\n".join(lines)
    return status, lines


def epoch_lines(lines: list[str]) -> list[int]:
    """The epoch numbers of the `Epoch N/M` lines, in order."""
    return [int(m.group(1)) for m in map(re.compile(r"^Epoch (\d+)/\d+$").match, lines) if m]


def printed_accuracy(lines: list[str]) -> float:
    """The test accuracy from the evaluator's line (the run's last)."""
    [match] = [m for m in map(re.compile(r"^evaluate: accuracy ([\d.]+)").search, lines) if m]
    return float(match.group(1))


def checkpoint_numbers(checkpoint_dir: Path) -> list[int]:
    """The numbers of the checkpoints the CheckpointManager keeps (its state file)."""
    state = tf.train.get_checkpoint_state(str(checkpoint_dir))
    paths = state.all_model_checkpoint_paths if state else []
    return [int(CHECKPOINT_NUMBER.search(path).group(1)) for path in paths]


def numbers_on_disk(checkpoint_dir: Path) -> list[int]:
    return sorted(
        int(p.name.split("-")[1].split(".")[0]) for p in checkpoint_dir.glob("ckpt-*.index")
    )


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / run_layout.HISTORY) as file:
        return list(csv.DictReader(file))


def fail_message(lines: list[str]) -> str:
    return "\n".join(lines[-40:])


# --- killed during epoch 3, started again ---


@pytest.fixture(scope="module")
def killed(digits):
    status, lines = train(
        train_command(digits, "killed", f"train.epochs={EPOCHS}"),
        kill_when=lambda line: line == f"Epoch 3/{EPOCHS}",
    )
    assert status == -signal.SIGKILL, fail_message(lines)
    return lines


@pytest.fixture(scope="module")
def resumed(digits, killed):
    status, lines = train(train_command(digits, "killed", f"train.epochs={EPOCHS}"))
    assert status == 0, fail_message(lines)
    return lines


@pytest.fixture(scope="module")
def uninterrupted(digits):
    status, lines = train(train_command(digits, "straight", f"train.epochs={EPOCHS}"))
    assert status == 0, fail_message(lines)
    return lines


def test_killed_run_stopped_during_epoch_3(digits, killed):
    assert epoch_lines(killed) == [1, 2, 3]
    assert not (digits.run_dir("killed") / run_layout.METRICS).exists()
    assert len(read_history(digits.run_dir("killed"))) == 2


def test_restart_resumes_from_the_end_of_epoch_2(digits, resumed):
    checkpoint = (
        digits.run_dir("killed") / run_layout.CHECKPOINTS / f"ckpt-{2 * digits.steps_per_epoch}"
    )
    assert f"train: resuming from {checkpoint} (epoch 3, step 0)" in resumed, fail_message(resumed)


def test_resumed_run_redoes_at_most_the_interrupted_epoch(killed, resumed):
    assert epoch_lines(resumed) == [3, 4, 5]
    both = epoch_lines(killed) + epoch_lines(resumed)
    assert {epoch: both.count(epoch) for epoch in range(1, EPOCHS + 1)} == {
        1: 1,
        2: 1,
        3: 2,
        4: 1,
        5: 1,
    }


def test_resumed_run_writes_a_complete_run(digits, resumed):
    run_dir = digits.run_dir("killed")
    assert [int(row["epoch"]) for row in read_history(run_dir)] == list(range(EPOCHS))
    metrics = json.loads((run_dir / run_layout.METRICS).read_text())
    assert metrics["epochs_run"] == EPOCHS
    assert metrics["resumed_from"].endswith(f"ckpt-{2 * digits.steps_per_epoch}")
    assert (run_dir / run_layout.EXPORT / "1" / "saved_model.pb").is_file()
    end = EPOCHS * digits.steps_per_epoch
    assert checkpoint_numbers(run_dir / run_layout.CHECKPOINTS)[-1] == end


def test_resumed_run_matches_an_uninterrupted_one(digits, resumed, uninterrupted):
    straight = json.loads((digits.run_dir("straight") / run_layout.METRICS).read_text())
    assert straight["epochs_run"] == EPOCHS and straight["resumed_from"] is None
    assert printed_accuracy(uninterrupted) == pytest.approx(straight["accuracy"], abs=1e-4)
    assert printed_accuracy(resumed) == pytest.approx(printed_accuracy(uninterrupted), abs=0.03)


# --- checkpoints within an epoch ---


def test_mid_epoch_checkpoints_are_kept_bounded_and_resumed_from(digits):
    steps, every, keep = digits.steps_per_epoch, 4, 2
    checkpoint_dir = digits.run_dir("stepwise") / run_layout.CHECKPOINTS
    command = train_command(
        digits,
        "stepwise",
        "train.epochs=2",
        f"train.checkpoint_every_steps={every}",
        f"train.keep_checkpoints={keep}",
    )

    def mid_epoch_2_checkpoint(line: str) -> bool:
        """Once epoch 2 started, waits until the manager has recorded a checkpoint within it."""
        if line != "Epoch 2/2":
            return False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(steps < n < 2 * steps for n in checkpoint_numbers(checkpoint_dir)):
                return True
            time.sleep(0.02)
        raise AssertionError(f"no checkpoint within epoch 2 in {checkpoint_dir} after 60s")

    status, killed = train(command, kill_when=mid_epoch_2_checkpoint)
    assert status == -signal.SIGKILL, fail_message(killed)
    # Numbered by optimizer step: every `every` steps within an epoch, and at each epoch's end.
    kept = checkpoint_numbers(checkpoint_dir)
    assert 1 <= len(kept) <= keep + 1 and steps < kept[-1] < 2 * steps, kept
    assert all(n % steps % every == 0 for n in kept), kept

    status, resumed = train(command)
    assert status == 0, fail_message(resumed)
    [resume_line] = [line for line in resumed if line.startswith("train: resuming from")]
    number = int(re.search(r"ckpt-(\d+) ", resume_line).group(1))
    assert steps < number < 2 * steps and (number - steps) % every == 0, resume_line
    assert resume_line.endswith(f"(epoch 2, step {number - steps})")
    assert epoch_lines(killed) + epoch_lines(resumed) == [1, 2, 2]

    last_mid_epoch = steps + (steps - 1) // every * every
    assert checkpoint_numbers(checkpoint_dir) == [last_mid_epoch, 2 * steps]
    assert numbers_on_disk(checkpoint_dir) == [last_mid_epoch, 2 * steps]
    assert len(read_history(digits.run_dir("stepwise"))) == 2


# --- the contract resuming within an epoch relies on ---


def batch_digests(version_dir: Path, cfg, seed: int, batches: int, skip: int = 0) -> list[str]:
    batches_of = dataset.build_training_dataset(
        version_dir, cfg, seed, BATCH_SIZE, skip_batches=skip
    ).take(batches)
    return [
        hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
        for images, labels in batches_of.as_numpy_iterator()
    ]


def test_a_seeded_epoch_replays_the_same_batches_and_skip_drops_its_first(digits):
    cfg = loader.load(DIGITS_CONFIG, [*digits.overrides(), *FAST]).data
    version_dir = digits.version_dir
    assert len(dataset.shard_files(version_dir, "train")) > 1  # so interleaving could reorder
    first = batch_digests(version_dir, cfg, seed=7, batches=12)
    assert len(set(first)) == 12
    for _ in range(3):
        assert batch_digests(version_dir, cfg, seed=7, batches=12) == first
    assert batch_digests(version_dir, cfg, seed=7, batches=7, skip=5) == first[5:]
    assert batch_digests(version_dir, cfg, seed=8, batches=12) != first
