"""What the training loop decides from each epoch's history row: reduce-on-plateau lowers the
learning rate, the best epoch keeps its weights and says when to stop early.

Each policy keeps its counters in host tf.Variables that the loop checkpoints under fixed keys
(`checkpointed()`), so a resumed run continues the sequence an uninterrupted one would follow.
Every worker runs the same policies on the same rows and so takes the same decisions.
"""

import math
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from configs import schema
from trainer import optim

BEST_WEIGHTS = "best.weights.h5"


def improves(value: float, best: float, minimize: bool) -> bool:
    """Whether `value` beats `best` (NaN: nothing measured yet, so anything does)."""
    return math.isnan(best) or (value < best if minimize else value > best)


class ReduceOnPlateau:
    """Multiplies the rate by `settings.factor` after `settings.patience` epochs without a better
    `settings.monitor`, never below `settings.min_learning_rate`; with no settings it never acts
    (its counters are still checkpointed, so every run's checkpoint has the same keys)."""

    def __init__(self, settings: optim.Plateau | None):
        self.settings = settings
        self.best = tf.Variable(math.nan, dtype=tf.float64, trainable=False)
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False)

    def checkpointed(self) -> dict[str, tf.Variable]:
        return {"plateau_best": self.best, "plateau_wait": self.wait}

    def restart(self) -> None:
        """Forgets the progress seen so far: a new phase's rate starts fresh."""
        self.best.assign(math.nan)
        self.wait.assign(0)

    def end_epoch(self, row: dict, optimizer: keras.optimizers.Optimizer) -> None:
        """Counts the epoch of `row`, whose `learning_rate` the optimizer holds, and lowers the
        optimizer's rate once patience runs out."""
        settings = self.settings
        if settings is None or settings.monitor not in row:
            return
        value = row[settings.monitor]
        if improves(value, float(self.best), settings.minimize):
            self.best.assign(value)
            self.wait.assign(0)
            return
        self.wait.assign_add(1)
        if int(self.wait) < settings.patience:
            return
        rate = row["learning_rate"]
        lowered = max(rate * settings.factor, settings.min_learning_rate)
        if lowered < rate:
            optimizer.learning_rate = lowered
            print(f"train: {settings.monitor} stalled; learning rate {rate:.3g} -> {lowered:.3g}")
        self.wait.assign(0)


class BestEpoch:
    """The best epoch by train.early_stopping's monitor: recorded always; its weights saved (to
    `weights_dir`/best.weights.h5) and restored at the end, and the run stopped after `patience`
    epochs without a better one, only when `stop_early` (the task resolves `enabled: auto`)."""

    def __init__(
        self,
        cfg: schema.EarlyStoppingConfig,
        stop_early: bool,
        model: keras.Model,
        weights_dir: Path,
    ):
        self.cfg = cfg
        self.minimize = cfg.minimizes()
        self.stop_early = stop_early
        self.restores = stop_early and cfg.restore_best_weights
        self.model = model
        self.weights_path = Path(weights_dir) / BEST_WEIGHTS
        self.best = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="best")
        self.epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")

    def checkpointed(self) -> dict[str, tf.Variable]:
        return {"best": self.best, "best_epoch": self.epoch}

    def announce(self, validated: bool, epochs: int) -> None:
        """Says why the policy will never act, when it will not."""
        monitor = self.cfg.monitor
        if not validated and monitor.startswith("val_"):
            print(
                f"train: the validation split is empty, so {monitor} is never measured: early "
                "stopping and best-epoch weights are off (raise data.split.val to use them)"
            )
        elif not self.stop_early and self.cfg.enabled == "auto":
            print(
                f"train: early stopping is off: the learning-rate schedule decays over all "
                f"{epochs} epochs, so the last epoch's weights are kept "
                "(train.early_stopping.enabled: auto; set true to stop on the monitor anyway)"
            )

    def adopt(self, chief_dir: Path) -> None:
        """A resumed worker takes the chief's best weights, to restore them at the end exactly
        as the chief does."""
        chief_weights = Path(chief_dir) / BEST_WEIGHTS
        if chief_weights.exists():
            shutil.copyfile(chief_weights, self.weights_path)

    def end_epoch(self, row: dict, last_phase_start: int | None) -> str | None:
        """Records the epoch of `row` if it is the best so far (saving the model's weights, as
        they are now, when they are to be restored). Returns why the run stops early, or None.

        `last_phase_start` is the first epoch of the last phase, None while an earlier phase
        trains: only the last phase stops early, counting from its start, since a head phase
        that levels off is what fine-tuning is for."""
        monitor = self.cfg.monitor
        if monitor not in row:
            return None
        if improves(row[monitor], float(self.best), self.minimize):
            self.best.assign(row[monitor])
            self.epoch.assign(row["epoch"])
            if self.restores:
                # Every worker keeps its own copy: they restore it at the end, while the chief
                # may be writing its file (h5 locks make that a crash).
                self.model.save_weights(self.weights_path)
            return None
        if last_phase_start is None or not self.stop_early:
            return None
        since = max(int(self.epoch), last_phase_start - 1)
        if row["epoch"] - since < self.cfg.patience:
            return None
        return f"no {monitor} improvement in {self.cfg.patience} epochs"

    def finish(self) -> int | None:
        """The best epoch (None when the monitor was never measured), its weights restored into
        the model when they are to be."""
        if int(self.epoch) < 0:
            return None
        if self.restores and self.weights_path.exists():
            self.model.load_weights(self.weights_path)
            print(f"train: restored the weights of the best epoch ({int(self.epoch) + 1})")
        return int(self.epoch)
