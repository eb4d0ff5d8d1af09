"""The training loop: compile, callbacks (checkpoints, TensorBoard, history, stopping), fit."""

import sys
from pathlib import Path

import keras
import tensorflow as tf

from configs import schema
from trainer import runs


def build_callbacks(cfg: schema.TrainConfig, run_dir: Path, has_validation: bool) -> list:
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(run_dir / runs.CHECKPOINTS / "epoch-{epoch:03d}.weights.h5"),
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY)),
        keras.callbacks.TensorBoard(str(run_dir / runs.TENSORBOARD), write_graph=False),
        keras.callbacks.TerminateOnNaN(),
    ]
    stopping = cfg.early_stopping
    if stopping.enabled and (has_validation or not stopping.monitor.startswith("val_")):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=stopping.monitor,
                patience=stopping.patience,
                restore_best_weights=stopping.restore_best_weights,
                verbose=1,
            )
        )
    return callbacks


def fit(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset | None,
    cfg: schema.TrainConfig,
    run_dir: Path,
) -> keras.callbacks.History:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    # A live bar on a terminal; one line per epoch in logs and CI.
    verbose = 1 if sys.stdout.isatty() else 2
    return model.fit(
        train_data,
        validation_data=val_data,
        epochs=cfg.epochs,
        callbacks=build_callbacks(cfg, run_dir, val_data is not None),
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles
    )
