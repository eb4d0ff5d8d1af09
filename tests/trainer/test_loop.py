"""The training loop: accumulation, strategies, non-finite losses, history and checkpoints."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import loader
from trainer import loop, runs

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 32
STEPS = 2
CLASSES = 3


def examples(nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((GLOBAL_BATCH * STEPS, 4, 4, 1), dtype=np.float32)
    if nan:
        images[0, 0, 0, 0] = np.nan
    return images, rng.integers(0, CLASSES, GLOBAL_BATCH * STEPS)


def train(
    run_dir, strategy, accumulation=1, nan=False, class_weights=None, **train_overrides
) -> list[np.ndarray]:
    """Two epochs of SGD on fixed data; the same examples form every global batch."""
    overrides = [
        f"train.gradient_accumulation_steps={accumulation}",
        "train.epochs=2",
        "train.early_stopping.enabled=false",
        *(f"train.{k}={v}" for k, v in train_overrides.items()),
    ]
    cfg = loader.load(None, overrides).train
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(CLASSES, "softmax")]
        )
        optimizer = keras.optimizers.SGD(0.5)
    images, labels = examples(nan)
    replicas = strategy.num_replicas_in_sync

    def make_train_data(epoch, skip):
        def per_pipeline(context):
            data = tf.data.Dataset.from_tensor_slices((images, labels))
            data = data.batch(GLOBAL_BATCH // (replicas * accumulation)).repeat()
            return data.batch(accumulation) if accumulation > 1 else data

        return strategy.distribute_datasets_from_function(per_pipeline)

    training = loop.TrainingLoop(
        model,
        optimizer,
        strategy,
        cfg,
        GLOBAL_BATCH,
        CLASSES,
        run_dir,
        chief=True,
        class_weights=class_weights,
    )
    training.fit(make_train_data, STEPS, None)
    return model.get_weights()


def test_accumulating_4_micro_batches_of_8_matches_batches_of_32(tmp_path):
    strategy = tf.distribute.get_strategy()
    whole = train(tmp_path / "whole", strategy)
    accumulated = train(tmp_path / "accumulated", strategy, accumulation=4)
    for a, b in zip(whole, accumulated, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(whole[0], train(tmp_path / "one-step", strategy, epochs=1)[0])


def test_history_and_checkpoints_after_two_epochs(tmp_path):
    train(tmp_path, tf.distribute.get_strategy())
    history = (tmp_path / runs.HISTORY).read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,learning_rate"
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]
    restored = tf.train.CheckpointManager(
        tf.train.Checkpoint(), str(tmp_path / runs.CHECKPOINTS), max_to_keep=3
    )
    assert restored.latest_checkpoint.endswith(f"ckpt-{2 * STEPS}")


def test_clipping_changes_the_update(tmp_path):
    strategy = tf.distribute.get_strategy()
    free = train(tmp_path / "free", strategy)
    clipped = train(tmp_path / "clipped", strategy, clip_global_norm=0.01)
    assert not np.allclose(free[0], clipped[0], atol=1e-4)


def test_class_weights_weight_the_loss(tmp_path):
    strategy = tf.distribute.get_strategy()
    plain = train(tmp_path / "plain", strategy)
    ones = train(tmp_path / "ones", strategy, class_weights=[1.0, 1.0, 1.0])
    weighted = train(tmp_path / "weighted", strategy, class_weights=[5.0, 1.0, 1.0])
    for a, b in zip(plain, ones, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)
    assert not np.allclose(plain[0], weighted[0], atol=1e-4)


def test_nan_loss_stops_naming_the_step_and_checkpoint(tmp_path):
    with pytest.raises(loop.NonFiniteLoss, match=r"loss became nan at epoch 1, step 1; last good"):
        train(tmp_path, tf.distribute.get_strategy(), nan=True)


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.trainer import test_loop
from pathlib import Path
out = Path(sys.argv[1])
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
one = test_loop.train(out / "one", tf.distribute.get_strategy())
two = test_loop.train(out / "two", mirrored)
two_accumulated = test_loop.train(out / "two-acc", mirrored, accumulation=2)
print(json.dumps({
    "mirrored": max(float(abs(a - b).max()) for a, b in zip(one, two)),
    "mirrored_accumulated": max(float(abs(a - b).max()) for a, b in zip(one, two_accumulated)),
}))
"""


@pytest.mark.distributed
def test_mirrored_on_two_cpu_devices_matches_one_device(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    differences = json.loads(done.stdout.strip().splitlines()[-1])
    assert differences["mirrored"] < 1e-5
    assert differences["mirrored_accumulated"] < 1e-5
