"""MultiWorkerMirroredStrategy: two `python -m trainer.task` workers on 127.0.0.1 train one run."""

import csv
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from configs import loader
from core import run_layout
from transforms import dataset

pytestmark = [pytest.mark.slow, pytest.mark.distributed, pytest.mark.beam]

REPO = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPO / "configs" / "digits.yaml"
WORKERS = 2
EPOCHS = 2
# A global batch of 64 is a micro-batch of 32 per worker; 16x16 loses nothing on 8x8 digits.
FAST = [
    "data.batch_size=64",
    "data.image_size=[16, 16]",
    "augment.layers=[]",
    "train.early_stopping.enabled=false",
]
RUN_TIMEOUT_S = 300
FINGERPRINT = re.compile(r"\(weights ([0-9a-f]{16})\)")


@pytest.fixture(scope="module")
def digits(tmp_path_factory, ingested_digits):
    """(root for this module's runs, the shared digits version folder)."""
    return tmp_path_factory.mktemp("multi_worker"), ingested_digits.path


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (all held open together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def train_workers(root: Path, version_dir: Path, run_id: str, *overrides: str) -> list[dict]:
    """Runs one worker process per TF_CONFIG task and waits for all of them.

    Returns per worker: its exit status, output lines and private temporary folder.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]}
    settings = [
        f"data.output_dir={version_dir.parent}",
        f"train.runs_dir={root / 'runs'}",
        *FAST,
        "train.distribution=multi_worker",
        f"train.run_id={run_id}",
        *overrides,
    ]
    command = [sys.executable, "-m", "trainer.task", "--config", str(DIGITS_CONFIG)]
    command += [arg for setting in settings for arg in ("--set", setting)]
    workers = []
    for index in range(WORKERS):
        folder = Path(tempfile.mkdtemp(prefix=f"{run_id}-worker{index}-", dir=root))
        log, temporary = folder / "output.log", folder / "tmp"
        temporary.mkdir()
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = os.environ | {
            "TF_CONFIG": json.dumps(tf_config),
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TMPDIR": str(temporary),
        }
        with open(log, "w") as output:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        workers.append({"process": process, "log": log, "tmp": temporary})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        for worker in workers:
            worker["status"] = worker["process"].wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker["process"].kill()
            worker["process"].wait()
        pytest.fail(f"the workers ran past {RUN_TIMEOUT_S}s:\n{outputs(workers)}")
    for worker in workers:
        worker["lines"] = worker["log"].read_text().splitlines()
    return workers


def outputs(workers: list[dict]) -> str:
    return "\n".join(
        f"--- worker {index} ---\n" + "\n".join(worker["log"].read_text().splitlines()[-30:])
        for index, worker in enumerate(workers)
    )


def fingerprint(lines: list[str]) -> str:
    [match] = [m for m in map(FINGERPRINT.search, lines) if m]
    return match.group(1)


def epoch_rows(lines: list[str]) -> list[str]:
    """The end-of-epoch metric lines (train and validation loss and accuracy)."""
    return [line for line in lines if line.startswith("loss: ")]


@pytest.fixture(scope="module")
def trained(digits):
    root, version_dir = digits
    workers = train_workers(root, version_dir, "mw", f"train.epochs={EPOCHS}")
    assert [w["status"] for w in workers] == [0] * WORKERS, outputs(workers)
    return workers


def test_both_workers_train_one_two_replica_model(trained):
    for worker in trained:
        assert any(f"{WORKERS} replica(s) x 1 micro-batch(es) of 32" in x for x in worker["lines"])
        assert [line for line in worker["lines"] if line.startswith("Epoch ")] == [
            f"Epoch {epoch}/{EPOCHS}" for epoch in range(1, EPOCHS + 1)
        ]


def test_only_the_chief_writes_the_run(digits, trained):
    root, _ = digits
    chief, worker = (w["lines"] for w in trained)
    assert any(line.startswith("train: done in") for line in chief), outputs(trained)
    assert not any(line.startswith("train: worker done in") for line in chief)
    assert any(line.startswith("train: worker done in") for line in worker), outputs(trained)
    assert not any(line.startswith("train: done in") for line in worker)

    run_dir = root / "runs" / "mw"
    metrics = json.loads((run_dir / run_layout.METRICS).read_text())
    assert metrics["epochs_run"] == EPOCHS
    # Exporting twice would have made a version 2 (or clashed on version 1).
    assert sorted(p.name for p in (run_dir / run_layout.EXPORT).iterdir()) == ["1"]
    assert (run_dir / run_layout.EXPORT / "1" / "saved_model.pb").is_file()
    with open(run_dir / run_layout.HISTORY) as history:
        assert [int(row["epoch"]) for row in csv.DictReader(history)] == list(range(EPOCHS))
    # The other worker saved its share of each checkpoint in a scratch folder it then removed.
    for index, worker in enumerate(trained):
        leftovers = list(worker["tmp"].glob("imgclf-worker-ckpt-*"))
        assert not leftovers, f"worker {index} left {leftovers}"


def test_workers_end_with_identical_weights(trained):
    chief, worker = (w["lines"] for w in trained)
    assert fingerprint(chief) == fingerprint(worker)
    # Same weights every epoch, so the same validation metrics (and early-stopping decisions).
    assert epoch_rows(chief) == epoch_rows(worker)
    assert len(epoch_rows(chief)) == EPOCHS


def test_a_finished_run_extended_by_an_epoch_resumes_on_every_worker(digits, trained):
    root, version_dir = digits
    workers = train_workers(root, version_dir, "mw", f"train.epochs={EPOCHS + 1}")
    assert [w["status"] for w in workers] == [0] * WORKERS, outputs(workers)
    for worker in workers:
        resumed = [line for line in worker["lines"] if line.startswith("train: resuming from")]
        assert len(resumed) == 1 and resumed[0].endswith(f"(epoch {EPOCHS + 1}, step 0)")
        assert [line for line in worker["lines"] if line.startswith("Epoch ")] == [
            f"Epoch {EPOCHS + 1}/{EPOCHS + 1}"
        ]
    chief, worker = (w["lines"] for w in workers)
    assert fingerprint(chief) == fingerprint(worker) != fingerprint(trained[0]["lines"])
    run_dir = root / "runs" / "mw"
    assert json.loads((run_dir / run_layout.METRICS).read_text())["epochs_run"] == EPOCHS + 1
    assert sorted(p.name for p in (run_dir / run_layout.EXPORT).iterdir()) == ["1", "2"]


# --- each worker reads its own half of the data ---


def digest(image, label) -> str:
    return hashlib.sha256(image.tobytes() + label.tobytes()).hexdigest()


def one_pass(version_dir: Path, cfg, shard: tuple[int, int], limit: int) -> list[str]:
    """Digests of the examples one input pipeline reads in one pass over its share.

    The training dataset is endless; a pass ends when an example comes round again (the shuffle
    buffer holds a whole share, so a pass is emitted entirely before the next one starts).
    """
    training = dataset.build_training_dataset(version_dir, cfg, 5, 1, shard=shard)
    seen: dict[str, None] = {}  # ordered, with fast lookups
    for images, labels in training.take(limit + 1).as_numpy_iterator():
        example = digest(images[0], labels[0])
        if example in seen:
            return list(seen)
        seen[example] = None
    raise AssertionError(f"shard {shard} read {limit + 1} examples without a repeat")


def test_each_worker_reads_a_disjoint_share_of_the_train_split(digits):
    _, version_dir = digits
    cfg = loader.load(DIGITS_CONFIG, [*FAST, f"data.output_dir={version_dir.parent}"]).data
    split = dataset.build_dataset(version_dir, "train", cfg, training=False)
    everything = [
        digest(image, label)
        for images, labels in split.as_numpy_iterator()
        for image, label in zip(images, labels, strict=True)
    ]
    assert len(set(everything)) == len(everything) > 1000  # unique, so digests identify examples

    shares = [
        one_pass(version_dir, cfg, (WORKERS, index), len(everything)) for index in range(WORKERS)
    ]
    assert all(shares)
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(everything)


# --- the pipeline's Trainer after a multi-worker training job (README: "at scale") ---


def test_the_pipeline_exports_and_pushes_the_finished_multi_worker_run(digits, digits_dir, trained):
    """Train with the workers, then run the pipeline with the same train.run_id: its Trainer
    restores the finished run in one process, trains nothing more, and the model is pushed."""
    from tfx_pipeline import pipeline

    root, version_dir = digits
    run_dir = root / "runs" / "mw"
    epochs_run = json.loads((run_dir / run_layout.METRICS).read_text())["epochs_run"]
    exports_before = {p.name for p in (run_dir / run_layout.EXPORT).iterdir()}
    cfg = loader.load(
        DIGITS_CONFIG,
        [
            f"data.source={digits_dir}",
            f"data.output_dir={version_dir.parent}",
            "data.beam_direct_mode=in_memory",
            f"train.runs_dir={root / 'runs'}",
            *FAST,
            f"train.epochs={epochs_run}",
            "train.run_id=mw",
            f"registry.store={root / 'store'}",
            f"pipeline.metadata={root / 'pipeline' / 'metadata.sqlite'}",
            "evaluation.gate.min_accuracy=0.5",
        ],
    )
    history_before = (run_dir / run_layout.HISTORY).read_text()
    summary = pipeline.run_pipeline(cfg)

    assert {e.component: e.status for e in summary.executions}["Pusher"] == "completed"
    model = summary.outputs["Trainer.model"]
    assert model.properties["run_id"] == "mw"
    assert model.properties["dataset_version"] == version_dir.name
    assert (run_dir / run_layout.HISTORY).read_text() == history_before  # no epoch trained
    assert json.loads((run_dir / run_layout.METRICS).read_text())["epochs_run"] == epochs_run
    [new_export] = {p.name for p in (run_dir / run_layout.EXPORT).iterdir()} - exports_before
    assert model.uri.endswith(f"/{new_export}")
    newest_before = max(exports_before, key=int)
    assert export_variables(run_dir / run_layout.EXPORT / new_export) == export_variables(
        run_dir / run_layout.EXPORT / newest_before
    )


def export_variables(export_dir: Path) -> dict[str, bytes]:
    """The model's float variables (weights) in a SavedModel, in the model's order, as bytes.

    ExportArchive also saves an `_all_variables` list, in an order that varies by export, and
    the integer states of random generators, which count calls rather than hold weights.
    """
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    return {
        key: reader.get_tensor(key).tobytes()
        for key, dtype in reader.get_variable_to_dtype_map().items()
        if key.startswith("variables/") and dtype.is_floating
    }
