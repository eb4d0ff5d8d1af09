"""A run's per-epoch record: history.csv (read back on resume) and the TensorBoard epoch scalars.

Every worker keeps the columns in memory (they make the run's result); only the chief writes
files, so a multi-worker run has one history.csv and one set of event files.
"""

import csv
import os
from pathlib import Path

import tensorflow as tf

from core import run_layout

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
# TensorBoard sub-folders of the epoch scalars, by the prefix of their history columns.
SCALAR_SPLITS = (("train", ""), ("validation", "val_"))


class History:
    """`columns` maps each history.csv column but `epoch` to its values, one per epoch run."""

    def __init__(self, run_dir: Path, chief: bool):
        self.run_dir = Path(run_dir)
        self.chief = chief
        self.columns: dict[str, list[float]] = {}

    def resume(self, epoch: int) -> None:
        """Loads the rows an interrupted run already wrote, up to the restored `epoch`."""
        self.columns = {}
        path = self.run_dir / run_layout.HISTORY
        if not path.exists():
            return
        with open(path) as file:
            for row in csv.DictReader(file):
                if int(row["epoch"]) >= epoch:
                    break
                for key, value in row.items():
                    if key != "epoch" and value != "":
                        self.columns.setdefault(key, []).append(float(value))

    def record(self, row: dict) -> None:
        """Adds an epoch's row (`epoch` and its values); the chief rewrites history.csv and
        writes the epoch's scalars."""
        for key, value in row.items():
            if key != "epoch":
                self.columns.setdefault(key, []).append(value)
        if not self.chief:
            return
        self._write_csv()
        self._write_scalars(row)

    def _write_csv(self) -> None:
        """Rewrites history.csv atomically, so a crash never leaves half a row."""
        path = self.run_dir / run_layout.HISTORY
        temporary = path.with_suffix(".tmp")
        fields = [f for f in HISTORY_FIELDS if f == "epoch" or f in self.columns]
        fields += [f for f in self.columns if f not in HISTORY_FIELDS]  # val_<train.metrics>
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            for epoch in range(len(self.columns["loss"])):
                writer.writerow(
                    {"epoch": epoch, **{k: self.columns[k][epoch] for k in fields if k != "epoch"}}
                )
        os.replace(temporary, path)

    def _write_scalars(self, row: dict) -> None:
        for split, prefix in SCALAR_SPLITS:
            if f"{prefix}loss" not in row:
                continue
            writer = tf.summary.create_file_writer(
                str(self.run_dir / run_layout.TENSORBOARD / split)
            )
            with writer.as_default(step=row["epoch"]):
                tf.summary.scalar("epoch_loss", row[f"{prefix}loss"])
                tf.summary.scalar("epoch_accuracy", row[f"{prefix}accuracy"])
                if split == "train":
                    tf.summary.scalar("epoch_learning_rate", row["learning_rate"])
            writer.close()
