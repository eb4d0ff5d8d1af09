"""The one training loop for every strategy: a tf.function step under `strategy.run`.

Keras 3 `fit` is broken under MultiWorkerMirroredStrategy and its optimizer-side gradient
accumulation crashes under any strategy, so the loop is ours: micro-batches are summed inside one
replica step (no cross-step accumulator state), then clipped and applied once. The same code runs
with the default strategy, MirroredStrategy and MultiWorkerMirroredStrategy.

The loop owns the step and the epochs; what an epoch's row decides (the learning rate on a
plateau, the best epoch, early stopping) is in trainer/epoch_policies.py, and its record
(history.csv, TensorBoard epoch scalars) in trainer/history.py.
"""

import contextlib
import hashlib
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from configs import schema
from core import errors, run_layout
from trainer import checkpoints, epoch_policies, history, losses, optim, telemetry

SECONDS_PER_CALL = 0.5  # the time one call of the train step aims at (see TrainingLoop._pace)
MAX_STEPS_PER_CALL = 64


class NonFiniteLoss(errors.UserError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


@dataclass(frozen=True)
class Phase:
    """Epochs from `first_epoch` train with `optimizer` after `set_trainable()` has run."""

    first_epoch: int
    optimizer: keras.optimizers.Optimizer
    set_trainable: Callable[[], None] = lambda: None
    name: str = "full"


@dataclass
class FitResult:
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int | None = None
    resumed_from: str | None = None  # the checkpoint a resumed run started from


def weights_fingerprint(model: keras.Model) -> str:
    """The first 16 hex digits of a sha256 over every weight's float32 bytes, in model order.

    Workers of one synchronous run end with the same value; it also tells two models apart.
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(keras.ops.convert_to_numpy(weight).astype("float32").tobytes())
    return digest.hexdigest()[:16]


def count_trainable(model: keras.Model) -> int:
    return sum(int(keras.ops.size(weight)) for weight in model.trainable_weights)


class TrainingLoop:
    """Trains `model` with `phases` (or one optimizer), built under `strategy.scope()`.

    Each phase has its own optimizer (a phase trains other variables, and a Keras optimizer is
    bound to the variables it first saw); all of them are checkpointed.
    """

    def __init__(
        self,
        model: keras.Model,
        phases: list[Phase] | keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        cfg: schema.TrainConfig,
        global_batch_size: int,
        num_classes: int,
        run_dir: Path,
        chief: bool = True,
        class_weights: list[float] | None = None,
        plateau: optim.Plateau | None = None,
        on_steps_done: Callable[[int, int], None] | None = None,
        on_epoch_done: Callable[[int], None] | None = None,
        stop_early: bool | None = None,
    ):
        if not isinstance(phases, list):
            phases = [Phase(0, phases)]
        self.phases = phases
        self.active_phase: Phase | None = None
        self.model, self.optimizer, self.strategy, self.cfg = (
            model,
            phases[0].optimizer,
            strategy,
            cfg,
        )
        # Called with (epoch, steps done in the epoch) after each run of steps: benchmarks time it.
        self.on_steps_done = on_steps_done
        # Called with the epoch after its checkpoint and history are written: run folders in a
        # bucket sync there.
        self.on_epoch_done = on_epoch_done
        self.global_batch_size = global_batch_size
        self.num_classes = num_classes
        self.run_dir = Path(run_dir)
        self.chief = chief
        self.telemetry = telemetry.Telemetry(
            self.run_dir / run_layout.TENSORBOARD / "train" if chief else None,
            global_batch_size,
            cfg.input_bound_warning,
        )
        self.accumulation = cfg.gradient_accumulation_steps
        self.loss_fn = losses.build_loss(cfg, num_classes)
        # train.metrics, computed on the validation split by evaluate().
        self.metrics = losses.build_metrics(cfg, num_classes)
        self.class_weights = (
            tf.constant(class_weights, tf.float32) if class_weights is not None else None
        )
        with strategy.scope():
            self.train_loss = keras.metrics.Mean(name="loss")
            self.train_accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Loop bookkeeping, outside the strategy: plain host variables every worker keeps alike.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        checkpoint_dir = self.run_dir / run_layout.CHECKPOINTS
        if not chief:
            # Every worker must take part in a save; only the chief's copy is kept.
            checkpoint_dir = Path(tempfile.mkdtemp(prefix="imgclf-worker-ckpt-"))
        # The end-of-epoch policies. Whether early stopping and best-epoch restore run: the task
        # decides `auto` from the schedule (schema.EarlyStoppingConfig.active); None = only when
        # enabled is true.
        stop_early = cfg.early_stopping.enabled is True if stop_early is None else stop_early
        self.best_epoch = epoch_policies.BestEpoch(
            cfg.early_stopping, stop_early, model, checkpoint_dir
        )
        self.plateau = epoch_policies.ReduceOnPlateau(plateau)
        self.history = history.History(self.run_dir, chief)
        later_optimizers = {f"optimizer_{i}": p.optimizer for i, p in enumerate(phases) if i}
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=phases[0].optimizer,
            **later_optimizers,
            epoch=self.epoch,
            step=self.step_in_epoch,
            **self.best_epoch.checkpointed(),
            **self.plateau.checkpointed(),
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(checkpoint_dir), max_to_keep=cfg.keep_checkpoints
        )
        self.train_step = None  # traced per phase: each trains other variables
        self.steps_per_call = 1  # grows once a step's time is known, see _pace
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.sync_statistics = tf.function(self._average_statistics)

    # --- the step ---

    def _gradients(self, images, labels):
        variables = self.model.trainable_variables
        # Class ids, or soft targets [batch, classes] when MixUp or CutMix mixed the labels.
        targets = labels if labels.dtype.is_floating else tf.one_hot(labels, self.num_classes)
        with tf.GradientTape() as tape:
            probabilities = tf.cast(self.model(images, training=True), tf.float32)
            per_example = self.loss_fn(targets, probabilities)
            if self.class_weights is not None:
                # A mixed target's weight is the mix of its classes' weights.
                per_example *= tf.linalg.matvec(targets, self.class_weights)
            # Over the global batch: the sum over replicas and micro-batches is then the mean.
            loss = tf.reduce_sum(per_example) / self.global_batch_size
            if self.model.losses:
                replicas = self.strategy.num_replicas_in_sync
                loss += tf.add_n(self.model.losses) / (replicas * self.accumulation)
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(
            scaled, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        self.train_loss.update_state(per_example)
        self.train_accuracy.update_state(tf.argmax(targets, axis=-1), probabilities)
        return gradients, loss

    def _replica_step(self, images, labels):
        if self.accumulation == 1:
            gradients, loss = self._gradients(images, labels)
        else:
            gradients = [tf.zeros_like(v) for v in self.model.trainable_variables]
            loss = tf.constant(0.0)
            for index in tf.range(self.accumulation):
                micro_gradients, micro_loss = self._gradients(images[index], labels[index])
                gradients = [g + m for g, m in zip(gradients, micro_gradients, strict=True)]
                loss += micro_loss
        gradients = self._clip(gradients)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables, strict=True))
        return loss

    def _clip(self, gradients):
        """Per-tensor then global clipping, on the true gradients: under a LossScaleOptimizer
        they are scaled by the loss scale until apply_gradients, so they are unscaled to clip
        and scaled back (clipping scaled gradients would shrink updates by the scale)."""
        if self.cfg.clip_norm is None and self.cfg.clip_global_norm is None:
            return gradients
        scale = getattr(self.optimizer, "dynamic_scale", None)
        if scale is not None:
            gradients = [g / scale for g in gradients]
        if self.cfg.clip_norm is not None:
            gradients = [tf.clip_by_norm(g, self.cfg.clip_norm) for g in gradients]
        if self.cfg.clip_global_norm is not None:
            gradients, _ = tf.clip_by_global_norm(gradients, self.cfg.clip_global_norm)
        if scale is not None:
            gradients = [g * scale for g in gradients]
        return gradients

    def _distributed_step(self, iterator):
        """The step's loss and the seconds `next(iterator)` blocked: timestamps taken in the
        graph around the fetch measure input wait with no extra host round trip."""
        if self.cfg.deterministic:
            # Op determinism makes the Timestamp op fail: the wait is then not measured (NaN).
            images, labels = next(iterator)
            per_replica = self.strategy.run(self._replica_step, args=(images, labels))
            loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            return loss, tf.constant(math.nan, tf.float64)
        requested = tf.timestamp()
        with tf.control_dependencies([requested]):
            images, labels = next(iterator)
        with tf.control_dependencies(tf.nest.flatten((images, labels), expand_composites=True)):
            waited = tf.timestamp() - requested
        per_replica = self.strategy.run(self._replica_step, args=(images, labels))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None), waited

    def _distributed_steps(self, iterator, steps):
        """`steps` optimizer steps in one call, like Keras' `steps_per_execution`: one host round
        trip per call instead of per step. Returns each step's loss, the running metrics and
        the seconds spent waiting for input."""
        losses = tf.TensorArray(tf.float32, size=steps)
        waited = tf.constant(0.0, tf.float64)
        for index in tf.range(steps):
            loss, step_waited = self._distributed_step(iterator)
            losses = losses.write(index, loss)
            waited += step_waited
        return losses.stack(), self.train_loss.result(), self.train_accuracy.result(), waited

    def _average_statistics(self):
        """Sets non-trainable weights (BatchNorm moving statistics), which each replica updates
        from its own batches, to their mean over replicas: every worker then evaluates, decides
        early stopping and saves the same model."""
        weights = [w for w in self.model.non_trainable_weights if w.dtype.startswith("float")]
        if not weights:
            return
        for weight in weights:
            local = self.strategy.run(lambda w=weight: tf.identity(w.value))
            weight.assign(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None))

    # --- the loop ---

    def fit(self, make_train_data, steps_per_epoch: int, val_data) -> FitResult:
        """`make_train_data(epoch)` returns that epoch's distributed dataset (seeded per epoch, so
        a resumed epoch replays the same batches); `val_data` is evaluated on every worker."""
        result = FitResult()
        latest = self._restore()
        if latest:
            result.resumed_from = latest
            print(
                f"train: resuming from {latest} (epoch {int(self.epoch) + 1}, "
                f"step {int(self.step_in_epoch)})"
            )
        self.history.resume(int(self.epoch))
        result.history = self.history.columns
        self.best_epoch.announce(val_data is not None, self.cfg.epochs)
        while int(self.epoch) < self.cfg.epochs:
            epoch = int(self.epoch)
            self._enter_phase(epoch)
            self.train_loss.reset_state()
            self.train_accuracy.reset_state()
            skip = int(self.step_in_epoch)
            iterator = iter(make_train_data(epoch, skip))
            progress = keras.utils.Progbar(
                steps_per_epoch,
                stateful_metrics=["loss", "accuracy", "images/s"],
                verbose=self._verbosity(),
            )
            print(f"Epoch {epoch + 1}/{self.cfg.epochs}")
            self.telemetry.start_epoch()
            self._train_epoch(iterator, epoch, skip, steps_per_epoch, progress)
            if self.strategy.num_replicas_in_sync > 1:
                self.sync_statistics()
            row = {
                "epoch": epoch,
                "loss": float(self.train_loss.result()),
                "accuracy": float(self.train_accuracy.result()),
                "learning_rate": self._learning_rate(),
            }
            # With an EMA, the averaged weights are the model that is validated and kept.
            with self._averaged_weights():
                if val_data is not None:
                    row["val_loss"], row["val_accuracy"] = self.evaluate(val_data)
                    row.update({f"val_{k}": float(m.result()) for k, m in self.metrics.items()})
                stop = self.best_epoch.end_epoch(row, self._last_phase_start())
            print(" - ".join(f"{k}: {v:.4f}" for k, v in row.items() if k != "epoch"))
            for line in self.telemetry.end_epoch(epoch):
                print(line)
            self.plateau.end_epoch(row, self.optimizer)
            self.epoch.assign(epoch + 1)
            self.step_in_epoch.assign(0)
            checkpoints.save(self.manager, (epoch + 1) * steps_per_epoch)
            self.history.record(row)
            if self.on_epoch_done is not None:
                self.on_epoch_done(epoch)
            if stop:
                print(f"early stopping: {stop}")
                break
        self.telemetry.close()
        result.epochs_run = len(result.history.get("loss", []))
        if self._ema() is not None:
            self._swap_averaged_weights()  # and not back: the run ends with the EMA weights
            print("train: the model keeps the exponential moving average of its weights")
        result.best_epoch = self.best_epoch.finish()
        return result

    def _last_phase_start(self) -> int | None:
        """The first epoch of the last phase while it trains (it alone may stop early)."""
        last = self.phases[-1]
        return last.first_epoch if self.active_phase is last else None

    # --- weight averaging (train.ema) ---

    def _ema(self) -> keras.optimizers.Optimizer | None:
        """The active optimizer when it keeps an EMA of the weights (inside a loss scaler)."""
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return optimizer if getattr(optimizer, "use_ema", False) else None

    @contextlib.contextmanager
    def _averaged_weights(self):
        """The model holds the EMA weights inside the block, its trained weights again after."""
        if self._ema() is None:
            yield
            return
        self._swap_averaged_weights()
        try:
            yield
        finally:
            self._swap_averaged_weights()

    def _swap_averaged_weights(self) -> None:
        # Keras keeps the averages beside the variables it optimises, in the same order.
        optimizer = self._ema()
        pairs = zip(
            optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
        )
        for variable, average in pairs:
            trained = tf.identity(variable.value)
            variable.assign(average.value)
            average.assign(trained)

    def _train_epoch(self, iterator, epoch: int, step: int, steps_per_epoch: int, progress) -> None:
        """Runs the epoch's steps from `step` on, several per call once the step time is known."""
        every = self.cfg.checkpoint_every_steps
        while step < steps_per_epoch:
            # A run of steps never crosses a mid-epoch checkpoint or the end of the epoch.
            stop = (
                steps_per_epoch if not every else min(steps_per_epoch, (step // every + 1) * every)
            )
            count = min(self.steps_per_call, stop - step)
            traces = self.train_step.experimental_get_tracing_count()
            started = time.perf_counter()
            losses, loss, accuracy, waited = self.train_step(iterator, tf.constant(count, tf.int32))
            self._check_finite(losses.numpy(), epoch, step)
            seconds = time.perf_counter() - started
            self._pace(count, seconds)
            step += count
            self.step_in_epoch.assign(step)
            shown = [("loss", float(loss)), ("accuracy", float(accuracy))]
            # A call that traced spent its time compiling, neither computing nor waiting.
            if self.train_step.experimental_get_tracing_count() == traces:
                live = self.telemetry.record(
                    epoch * steps_per_epoch + step, count, seconds, float(waited)
                )
                shown.append(("images/s", live["images_per_second"]))
            progress.update(step, shown)
            if self.on_steps_done is not None:
                self.on_steps_done(epoch, step)
            if every and step % every == 0 and step < steps_per_epoch:
                checkpoints.save(self.manager, epoch * steps_per_epoch + step)

    def _check_finite(self, losses, epoch: int, first_step: int) -> None:
        for index, step_loss in enumerate(losses.tolist()):
            if not math.isfinite(step_loss):
                raise NonFiniteLoss(
                    f"loss became {step_loss} at epoch {epoch + 1}, step {first_step + index + 1}; "
                    f"last good checkpoint: {self.manager.latest_checkpoint or 'none'}. "
                    "Lower optimizer.learning_rate, set train.clip_global_norm, or check the data"
                )

    def _pace(self, count: int, seconds: float) -> None:
        """Sets how many steps the next call runs: as many as take about SECONDS_PER_CALL, so the
        per-call host work (a sync, the progress bar) is amortised on small models while large
        ones still report every step. Grows at most 4x per call, so one fast call cannot jump far
        (the first call, which traces, is slow and leaves it at one step).
        Multi-worker runs keep one step per call, so every worker issues the same collectives."""
        if self.multi_worker:
            return
        wanted = int(SECONDS_PER_CALL / max(seconds / count, 1e-6))
        self.steps_per_call = max(1, min(wanted, 4 * count, MAX_STEPS_PER_CALL))

    def evaluate(self, dataset) -> tuple[float, float]:
        """Mean loss and accuracy over a finite (images, labels) dataset, on this worker; the
        train.metrics in self.metrics hold their values over it afterwards."""
        for metric in self.metrics.values():
            metric.reset_state()
        total_loss, correct, count = 0.0, 0, 0
        for images, labels in dataset:
            probabilities = tf.cast(self._predict(images), tf.float32)
            targets = tf.one_hot(labels, self.num_classes)
            per_example = self.loss_fn(targets, probabilities)
            for metric in self.metrics.values():
                metric.update_state(targets, probabilities)
            total_loss += float(tf.reduce_sum(per_example))
            correct += int(tf.reduce_sum(tf.cast(tf.argmax(probabilities, 1) == labels, tf.int32)))
            count += int(tf.shape(labels)[0])
        return total_loss / max(count, 1), correct / max(count, 1)

    @tf.function(reduce_retracing=True)
    def _predict(self, images):
        return self.model(images, training=False)

    # --- phases and learning rate ---

    def _enter_phase(self, epoch: int) -> None:
        """Switches to the phase `epoch` belongs to: trainable flags, optimizer, a fresh trace."""
        phase = [p for p in self.phases if p.first_epoch <= epoch][-1]
        if phase is self.active_phase:
            return
        phase.set_trainable()
        self.active_phase, self.optimizer = phase, phase.optimizer
        if not self.optimizer.built:
            # Built here rather than in the first step: a tf.function that creates variables
            # while tracing traces a second time (0.5-2 s) before it runs.
            with self.strategy.scope():
                self.optimizer.build(self.model.trainable_variables)
        self.train_step = tf.function(self._distributed_steps)
        if len(self.phases) == 1:
            return
        if epoch == phase.first_epoch and phase is not self.phases[0]:
            # A new phase's rate starts fresh; a run resumed inside the phase keeps its state.
            self.plateau.restart()
        print(
            f"train: phase {phase.name} from epoch {epoch + 1}: "
            f"{count_trainable(self.model):,} trainable "
            f"parameters, learning rate {self._learning_rate():.3g}"
        )

    def _learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _restore(self) -> str | None:
        """Restores the newest checkpoint of the run, if any, and returns its path.

        Non-chief workers save into a scratch folder but resume from the chief's checkpoints, so
        every worker restarts at the same step (a worker that started over would hang the others),
        and from the chief's best-epoch weights.
        """
        checkpoint_dir = self.run_dir / run_layout.CHECKPOINTS
        latest = tf.train.latest_checkpoint(str(checkpoint_dir))
        if latest:
            # Partial: an earlier phase's optimizer state stays unused after its phase ended.
            self.checkpoint.restore(latest).expect_partial()
        if latest and not self.chief:
            self.best_epoch.adopt(checkpoint_dir)
        return latest

    def _verbosity(self) -> int:
        # A live bar on a terminal; nothing per step in logs and CI (the epoch line is printed).
        return 1 if sys.stdout.isatty() and self.chief else 0

    def cleanup(self) -> None:
        if not self.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)
