"""Training telemetry: scalars read back with TensorBoard's reader, and the input-bound warning."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from configs import loader
from core import run_layout
from trainer import loop, telemetry

BATCH = 32
STEPS = 12
CLASSES = 3
SLOW_BATCH_S = 0.1  # far longer than a step of the model below


def train(run_dir, batch_delay_s: float = 0.0) -> None:
    """One epoch of a small conv net (a few ms a step); each batch waits `batch_delay_s` in a
    py_function, one batch at a time, so a delay makes the loop wait on its input."""
    cfg = loader.load(None, ["train.epochs=1", "train.early_stopping.enabled=false"]).train
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES, "softmax"),
        ]
    )
    rng = np.random.default_rng(0)
    images = rng.random((BATCH * STEPS, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, CLASSES, BATCH * STEPS)

    def slow(images, labels):
        def wait(batch):
            time.sleep(batch_delay_s)
            return batch

        images = tf.py_function(wait, [images], tf.float32)
        return tf.ensure_shape(images, (BATCH, 32, 32, 3)), labels

    def make_train_data(epoch, skip):
        # Cached batches: the fast pipeline only hands over ready tensors.
        data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH).cache().repeat()
        if batch_delay_s:
            data = data.map(slow, num_parallel_calls=1)
        return strategy.experimental_distribute_dataset(data.prefetch(tf.data.AUTOTUNE))

    training = loop.TrainingLoop(
        model, keras.optimizers.SGD(0.1), strategy, cfg, BATCH, CLASSES, run_dir
    )
    training.fit(make_train_data, STEPS, None)


def scalars(log_dir) -> dict[str, list[float]]:
    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: [float(tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()["tensors"]
    }


def test_fast_input_writes_plausible_scalars_and_no_warning(tmp_path, capsys):
    train(tmp_path)
    output = capsys.readouterr().out
    found = scalars(tmp_path / run_layout.TENSORBOARD / "train")
    expected = ["images_per_second", "input_wait_fraction", "step_time_ms", "input_wait_ms"]
    for tag in [*expected, "compute_ms", "host_memory_mib"]:
        assert found.get(telemetry.PREFIX + tag), f"{tag} missing from {sorted(found)}"
    assert all(value > 0 for value in found["telemetry/images_per_second"])
    assert all(0 <= value <= 1 for value in found["telemetry/input_wait_fraction"])
    assert all(value > 10 for value in found["telemetry/host_memory_mib"])
    steps = found["telemetry/step_time_ms"]
    parts = zip(found["telemetry/input_wait_ms"], found["telemetry/compute_ms"], strict=True)
    for step_ms, (wait_ms, compute_ms) in zip(steps, parts, strict=True):
        assert wait_ms + compute_ms == pytest.approx(step_ms)
    # GPU figures exist only with a GPU.
    assert ("telemetry/gpu_memory_mib" in found) == bool(tf.config.list_logical_devices("GPU"))
    assert "images/s" in output and "telemetry: " in output
    assert "input-bound" not in output


def test_slow_input_is_measured_and_warned_about_once(tmp_path, capsys):
    train(tmp_path, batch_delay_s=SLOW_BATCH_S)
    output = capsys.readouterr().out
    fractions = scalars(tmp_path / run_layout.TENSORBOARD / "train")[
        "telemetry/input_wait_fraction"
    ]
    assert min(fractions) > 0.5, fractions
    waits = scalars(tmp_path / run_layout.TENSORBOARD / "train")["telemetry/input_wait_ms"]
    # Each step waited for about one delayed batch.
    assert all(1000 * SLOW_BATCH_S * 0.5 < wait < 1000 * SLOW_BATCH_S * 3 for wait in waits)
    [warning] = [line for line in output.splitlines() if "input-bound" in line]
    assert "epoch 1" in warning and "data.image_size" in warning and "augment.layers" in warning


def test_an_unmeasured_wait_is_left_out_not_written_as_zero(tmp_path):
    """Under train.deterministic the loop cannot time its input (TensorFlow refuses the Timestamp
    op) and hands over NaN: throughput is still written, the wait tags are not."""
    recorder = telemetry.Telemetry(tmp_path, images_per_step=BATCH, warn_fraction=0.0)
    recorder.start_epoch()
    live = recorder.record(step=3, steps=3, seconds=0.3, waited=float("nan"))
    [line] = recorder.end_epoch(0)  # no input-bound warning, even with a threshold of 0
    recorder.close()
    assert live["images_per_second"] == pytest.approx(3 * BATCH / 0.3)
    assert "input_wait_fraction" not in live
    assert "input wait not measured" in line
    written = scalars(tmp_path)
    assert telemetry.PREFIX + "images_per_second" in written
    assert not any("input_wait" in tag for tag in written)
