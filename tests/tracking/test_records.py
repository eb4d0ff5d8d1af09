"""tracking.records: run.json through a run's life, written atomically, read back with the files."""

import json
import subprocess
import sys

import pytest

from core import run_layout, saved_models
from tracking import records

CONFIG = {"name": "digits", "optimizer": {"learning_rate": 0.003}, "model": {"backbone": "cnn"}}
HISTORY = (
    "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate\n"
    "0,2.0,0.3,1.8,0.4,0.003\n"
    "1,1.0,0.7,0.9,0.75,0.0015\n"
)


def started_run(tmp_path):
    run_dir = tmp_path / "20260101-000000-digits-abc123"
    (run_dir / run_layout.CHECKPOINTS).mkdir(parents=True)
    (run_dir / run_layout.CONFIG).write_text("name: digits\n")
    record = records.start(
        run_dir, CONFIG, "v1", {"commit": "f" * 40, "dirty": False}, {"python": "3.11"}
    )
    return run_dir, record


def finish_training(run_dir, metrics=None):
    (run_dir / run_layout.HISTORY).write_text(HISTORY)
    (run_dir / run_layout.METRICS).write_text(
        json.dumps(metrics or {"accuracy": 0.9, "macro_f1": 0.8})
    )
    (run_dir / run_layout.EXPORT / "1").mkdir(parents=True)
    (run_dir / run_layout.EXPORT / "1" / saved_models.SAVED_MODEL_FILE).write_bytes(b"pb")
    (run_dir / run_layout.EXPORT / "2").mkdir()  # incomplete: no saved_model.pb


def test_start_records_a_running_run_with_what_it_runs_on(tmp_path):
    run_dir, record = started_run(tmp_path)
    on_disk = json.loads((run_dir / run_layout.RECORD).read_text())
    assert on_disk == record
    assert on_disk["run_id"] == run_dir.name and on_disk["name"] == "digits"
    assert on_disk["status"] == records.RUNNING and on_disk["reason"] is None
    assert on_disk["ended"] is None and on_disk["duration_s"] is None
    assert on_disk["config"] == CONFIG and on_disk["dataset_version"] == "v1"
    assert on_disk["git"] == {"commit": "f" * 40, "dirty": False}
    assert on_disk["environment"] == {"python": "3.11"}
    assert on_disk["epochs"] == [] and on_disk["metrics"] == {}
    assert on_disk["artefacts"] == {"checkpoints": "checkpoints", "config": "config.yaml"}
    assert on_disk["attempts"] == 1
    assert records.display_status(on_disk) == records.RUNNING  # this process is alive
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_complete_adds_epochs_metrics_duration_and_artefacts(tmp_path):
    run_dir, _ = started_run(tmp_path)
    finish_training(run_dir)
    record = records.complete(run_dir)
    assert record == records.read(run_dir)
    assert record["status"] == records.COMPLETED and record["reason"] is None
    assert record["epochs"] == [
        {"epoch": 0, "loss": 2.0, "accuracy": 0.3, "val_loss": 1.8, "val_accuracy": 0.4,
         "learning_rate": 0.003},
        {"epoch": 1, "loss": 1.0, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.75,
         "learning_rate": 0.0015},
    ]  # fmt: skip
    assert record["metrics"] == {"accuracy": 0.9, "macro_f1": 0.8}
    assert record["duration_s"] == pytest.approx(
        records.seconds_between(record["started"], record["ended"])
    )
    assert record["artefacts"]["export"] == "export/1"  # the newest complete version
    assert record["artefacts"]["history"] == run_layout.HISTORY
    assert record["artefacts"]["metrics"] == run_layout.METRICS


def test_fail_records_the_exception_type_and_message(tmp_path):
    run_dir, _ = started_run(tmp_path)
    (run_dir / run_layout.HISTORY).write_text(
        HISTORY.splitlines()[0] + "\n" + HISTORY.splitlines()[1]
    )
    record = records.fail(run_dir, ValueError("train.class_weights names no such class: bird"))
    assert record["status"] == records.FAILED
    assert record["reason"] == "ValueError: train.class_weights names no such class: bird"
    assert [epoch["epoch"] for epoch in record["epochs"]] == [0]  # the epochs it finished
    assert records.fail(run_dir, KeyboardInterrupt())["reason"] == "KeyboardInterrupt"


def test_a_resumed_run_counts_its_attempts(tmp_path):
    run_dir, _ = started_run(tmp_path)
    records.fail(run_dir, RuntimeError("killed"))
    again = records.start(run_dir, CONFIG, "v1", None, {})
    assert again["attempts"] == 2 and again["status"] == records.RUNNING
    assert again["reason"] is None


def test_load_reads_files_written_after_the_record(tmp_path):
    run_dir, _ = started_run(tmp_path)
    finish_training(run_dir)
    records.complete(run_dir)
    # What `imgclf train`'s evaluation adds after training.
    (run_dir / "report.html").write_text("<html></html>")
    (run_dir / run_layout.METRICS).write_text(
        json.dumps({"accuracy": 0.9, "top_k_accuracy": {"3": 1}})
    )
    loaded = records.load(run_dir)
    assert loaded["artefacts"]["report"] == "report.html"
    assert loaded["metrics"]["top_k_accuracy"] == {"3": 1}
    assert "report" not in records.read(run_dir)["artefacts"]  # load does not write
    assert records.refresh(run_dir)["artefacts"]["report"] == "report.html"
    assert records.read(run_dir)["metrics"]["top_k_accuracy"] == {"3": 1}


def test_a_running_run_shows_its_epochs_so_far(tmp_path):
    run_dir, _ = started_run(tmp_path)
    (run_dir / run_layout.HISTORY).write_text(HISTORY)
    assert len(records.load(run_dir)["epochs"]) == 2
    assert records.read(run_dir)["epochs"] == []


def test_a_killed_run_shows_as_running_with_a_question_mark(tmp_path):
    run_dir, _ = started_run(tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    records.update(run_dir, pid=int(finished.stdout))
    record = records.load(run_dir)
    assert record["status"] == records.RUNNING  # what the file says
    assert records.display_status(record) == records.STALE
    record["host"] = "another-host"  # elsewhere nobody can tell
    assert records.display_status(record) == records.RUNNING


def test_a_folder_without_run_json_is_listed_as_unrecorded(tmp_path):
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    (run_dir / run_layout.CONFIG).write_text("name: digits\nmodel: {backbone: cnn}\n")
    (run_dir / run_layout.METRICS).write_text(
        json.dumps({"accuracy": 0.5, "dataset_version": "v0"})
    )
    record = records.load(run_dir)
    assert record["status"] == records.UNRECORDED
    assert record["config"]["model"]["backbone"] == "cnn"
    assert record["dataset_version"] == "v0" and record["metrics"]["accuracy"] == 0.5
    with pytest.raises(FileNotFoundError, match="neither run.json nor config.yaml"):
        records.load(tmp_path / "empty")


def test_flat_metrics_keeps_numbers_and_leaves_out_lists():
    metrics = {
        "accuracy": 0.9,
        "precision": {"macro": 0.8, "micro": 0.9},
        "per_class": {"cat": {"recall": 1.0}},
        "confusion_matrix": [[1, 0], [0, 1]],
        "split": "test",
        "resumed_from": None,
        "ok": True,
        "bad": float("nan"),
    }
    assert records.flat_metrics(metrics, skip=("per_class",)) == {
        "accuracy": 0.9,
        "precision.macro": 0.8,
        "precision.micro": 0.9,
    }
    assert records.flat_metrics(metrics)["per_class.cat.recall"] == 1.0
