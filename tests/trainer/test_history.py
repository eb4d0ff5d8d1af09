"""history.csv and the TensorBoard epoch scalars, written and read back without training."""

import csv

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from core import run_layout
from trainer import history


def row(epoch: int, validated: bool = True, **extra: float) -> dict:
    """An epoch's row with its keys in the order the training loop builds them."""
    values = {
        "epoch": epoch,
        "loss": 1.0 - 0.1 * epoch,
        "accuracy": 0.5 + 0.1 * epoch,
        "learning_rate": 0.01 / (epoch + 1),
    }
    if validated:
        values.update(val_loss=1.5 - 0.1 * epoch, val_accuracy=0.4 + 0.1 * epoch)
    return {**values, **extra}


def read_csv(run_dir) -> tuple[list[str], list[dict]]:
    with open(run_dir / run_layout.HISTORY) as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def epoch_scalars(log_dir) -> dict[str, dict[int, float]]:
    """Each tag's values by step, as TensorBoard reads them."""
    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)}
        for tag in accumulator.Tags()["tensors"]
    }


def test_columns_follow_the_fixed_order_with_metric_columns_last(tmp_path):
    record = history.History(tmp_path, chief=True)
    for epoch in range(2):
        record.record(row(epoch, val_f1=0.3 + epoch))

    fields, rows = read_csv(tmp_path)
    assert fields == [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "val_f1",
    ]
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [float(r["val_f1"]) for r in rows] == [0.3, 1.3]
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.005)
    assert record.columns["loss"] == pytest.approx([1.0, 0.9])
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_an_unvalidated_run_has_no_validation_columns(tmp_path):
    history.History(tmp_path, chief=True).record(row(0, validated=False))
    assert read_csv(tmp_path)[0] == ["epoch", "loss", "accuracy", "learning_rate"]


def test_a_resumed_history_keeps_the_rows_before_the_restored_epoch(tmp_path):
    first = history.History(tmp_path, chief=True)
    for epoch in range(3):
        first.record(row(epoch))

    # Checkpointed after epoch 2 (index 1): the third row is trained again.
    resumed = history.History(tmp_path, chief=True)
    resumed.resume(2)
    assert resumed.columns["val_loss"] == pytest.approx([1.5, 1.4])
    assert set(resumed.columns) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    resumed.record(row(2, loss=7.0))
    _, rows = read_csv(tmp_path)
    assert [float(r["loss"]) for r in rows] == pytest.approx([1.0, 0.9, 7.0])


def test_resuming_skips_empty_cells_and_a_missing_file(tmp_path):
    record = history.History(tmp_path, chief=True)
    record.resume(5)
    assert record.columns == {}
    (tmp_path / run_layout.HISTORY).write_text(
        "epoch,loss,accuracy,learning_rate,val_loss\n0,1.0,0.5,0.1,\n1,0.8,0.6,0.1,\n"
    )
    record.resume(5)
    assert record.columns == {
        "loss": [1.0, 0.8],
        "accuracy": [0.5, 0.6],
        "learning_rate": [0.1, 0.1],
    }


def test_a_worker_keeps_the_columns_and_writes_nothing(tmp_path):
    worker = history.History(tmp_path, chief=False)
    worker.record(row(0))
    assert worker.columns["val_accuracy"] == [0.4]
    assert list(tmp_path.iterdir()) == []


def test_epoch_scalars_go_to_the_train_and_validation_folders_by_epoch(tmp_path):
    record = history.History(tmp_path, chief=True)
    for epoch in range(2):
        record.record(row(epoch))

    tensorboard = tmp_path / run_layout.TENSORBOARD
    train = epoch_scalars(tensorboard / "train")
    assert set(train) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert train["epoch_loss"] == pytest.approx({0: 1.0, 1: 0.9})
    assert train["epoch_learning_rate"] == pytest.approx({0: 0.01, 1: 0.005})
    validation = epoch_scalars(tensorboard / "validation")
    assert set(validation) == {"epoch_loss", "epoch_accuracy"}
    assert validation["epoch_accuracy"] == pytest.approx({0: 0.4, 1: 0.5})


def test_an_unvalidated_epoch_writes_no_validation_scalars(tmp_path):
    history.History(tmp_path, chief=True).record(row(0, validated=False))
    assert (tmp_path / run_layout.TENSORBOARD / "train").is_dir()
    assert not (tmp_path / run_layout.TENSORBOARD / "validation").exists()
