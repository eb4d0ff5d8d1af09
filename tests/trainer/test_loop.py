"""The training loop: accumulation, strategies, non-finite losses, history and checkpoints."""

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import loader
from core import run_layout
from tfx_pipeline import flow
from trainer import loop, optim, task

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
    history = (tmp_path / run_layout.HISTORY).read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,learning_rate"
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]
    restored = tf.train.CheckpointManager(
        tf.train.Checkpoint(), str(tmp_path / run_layout.CHECKPOINTS), max_to_keep=3
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


def test_label_smoothing_is_the_loss_the_loop_trains_and_reports(tmp_path):
    """A constant model's loss under smoothing eps is the cross-entropy against targets
    (1 - eps) one-hot + eps / classes, computed here with numpy."""
    probabilities = np.array([0.7, 0.2, 0.1], np.float32)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                CLASSES,
                "softmax",
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant(np.log(probabilities)),
            ),
        ]
    )
    images, labels = examples()
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    for smoothing in (0.0, 0.2):
        cfg = loader.load(None, [f"train.label_smoothing={smoothing}"]).train
        training = loop.TrainingLoop(
            model,
            keras.optimizers.SGD(0.1),
            tf.distribute.get_strategy(),
            cfg,
            16,
            CLASSES,
            tmp_path,
        )
        loss, _ = training.evaluate(data)
        targets = np.eye(CLASSES)[labels] * (1 - smoothing) + smoothing / CLASSES
        expected = -(targets * np.log(probabilities)).sum(axis=1).mean()
        assert loss == pytest.approx(expected, rel=1e-5)


def test_nan_loss_stops_naming_the_step_and_checkpoint(tmp_path):
    with pytest.raises(loop.NonFiniteLoss, match=r"loss became nan at epoch 1, step 1; last good"):
        train(tmp_path, tf.distribute.get_strategy(), nan=True)


def test_several_steps_per_call_train_exactly_like_one_step_per_call(tmp_path, monkeypatch):
    strategy = tf.distribute.get_strategy()
    monkeypatch.setattr(loop, "MAX_STEPS_PER_CALL", 1)
    one_per_call = train(tmp_path / "one", strategy)
    # Any step time is short enough: epoch 2 then runs both its steps in one call.
    monkeypatch.setattr(loop, "MAX_STEPS_PER_CALL", 64)
    monkeypatch.setattr(loop, "SECONDS_PER_CALL", 1e9)
    calls = []
    original = loop.TrainingLoop._pace
    monkeypatch.setattr(
        loop.TrainingLoop,
        "_pace",
        lambda self, count, seconds: calls.append(count) or original(self, count, seconds),
    )
    several_per_call = train(tmp_path / "several", strategy)
    assert calls == [1, 1, 2]  # epoch 1: the traced first step, then one left; epoch 2: both
    for a, b in zip(one_per_call, several_per_call, strict=True):
        np.testing.assert_array_equal(a, b)


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


# --- per-tensor clipping (train.clip_norm) against global clipping (train.clip_global_norm) ---

CLIP = 1.0
SGD_RATE = 10.0  # large: an unclipped step would move the weights far


def big_batch() -> tuple[np.ndarray, np.ndarray]:
    """One global batch of large inputs, so the kernels' gradients are far above CLIP."""
    images, labels = examples()
    return images[:GLOBAL_BATCH] * 50.0, labels[:GLOBAL_BATCH]


def seeded_model(*hidden: int) -> keras.Model:
    """Flatten, `hidden` relu Dense layers and a softmax Dense; the same weights on every call."""
    keras.utils.set_random_seed(1)
    layers = [keras.layers.Dense(units, "relu") for units in hidden]
    return keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            *layers,
            keras.layers.Dense(CLASSES, "softmax"),
        ]
    )


def gradients_of(model: keras.Model, images, labels) -> list[np.ndarray]:
    """The mean cross-entropy's gradients, computed on a copy of `model` outside the loop."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    with tf.GradientTape() as tape:
        targets = tf.one_hot(labels, CLASSES)
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(targets, copy(images)))
    return [g.numpy() for g in tape.gradient(loss, copy.trainable_variables)]


def sgd_step_updates(run_dir, model, images, labels, **train_overrides) -> list[np.ndarray]:
    """Runs one plain-SGD step of the loop on one batch; returns (before - after) / rate per
    tensor, which is the gradient the optimizer was given."""
    overrides = ["train.epochs=1", "train.early_stopping.enabled=false"]
    overrides += [f"train.{k}={v}" for k, v in train_overrides.items()]
    cfg = loader.load(None, overrides).train
    strategy = tf.distribute.get_strategy()
    before = model.get_weights()

    def make_train_data(epoch, skip):
        data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(len(labels)).repeat()
        return strategy.distribute_datasets_from_function(lambda context: data)

    optimizer = keras.optimizers.SGD(SGD_RATE)
    training = loop.TrainingLoop(model, optimizer, strategy, cfg, len(labels), CLASSES, run_dir)
    training.fit(make_train_data, 1, None)
    after = model.get_weights()
    return [(b - a) / SGD_RATE for b, a in zip(before, after, strict=True)]


def norm(tensor: np.ndarray) -> float:
    return float(np.linalg.norm(tensor.astype(np.float64)))


def test_clip_norm_bounds_every_tensor_update(tmp_path):
    images, labels = big_batch()
    raw = gradients_of(seeded_model(8), images, labels)
    free = sgd_step_updates(tmp_path / "free", seeded_model(8), images, labels)
    clipped = sgd_step_updates(tmp_path / "clip", seeded_model(8), images, labels, clip_norm=CLIP)

    assert len(raw) == 4  # two kernels, two biases
    # Unclipped, the loop applies exactly the gradient, and some tensor's is far above CLIP.
    for gradient, update in zip(raw, free, strict=True):
        np.testing.assert_allclose(update, gradient, rtol=1e-4, atol=1e-5)
    assert max(norm(update) for update in free) > 10 * CLIP
    # Clipped, every tensor's update is within CLIP: the gradient scaled to CLIP if it was above.
    for gradient, update in zip(raw, clipped, strict=True):
        assert norm(update) <= CLIP * (1 + 1e-4)
        expected = gradient * min(1.0, CLIP / norm(gradient))
        np.testing.assert_allclose(update, expected, rtol=1e-4, atol=1e-5)


def test_clip_norm_scales_each_tensor_alone_and_global_clipping_scales_them_jointly(tmp_path):
    images, labels = big_batch()
    kernel, bias = gradients_of(seeded_model(), images, labels)
    # The kernel sees the large inputs, the bias does not: norms on either side of CLIP.
    assert norm(bias) < CLIP < 10 * CLIP < norm(kernel)
    per_tensor = sgd_step_updates(
        tmp_path / "per-tensor", seeded_model(), images, labels, clip_norm=CLIP
    )
    joint = sgd_step_updates(
        tmp_path / "global", seeded_model(), images, labels, clip_global_norm=CLIP
    )

    # Per tensor: the kernel is scaled down to CLIP, the bias, already below it, is untouched.
    np.testing.assert_allclose(per_tensor[0], kernel * CLIP / norm(kernel), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(per_tensor[1], bias, rtol=1e-4, atol=1e-6)
    # Globally: one factor for both, so the small bias shrinks with the kernel.
    factor = CLIP / math.hypot(norm(kernel), norm(bias))
    np.testing.assert_allclose(joint[0], kernel * factor, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(joint[1], bias * factor, rtol=1e-4, atol=1e-6)
    assert math.hypot(norm(joint[0]), norm(joint[1])) == pytest.approx(CLIP, rel=1e-4)
    assert norm(joint[1]) < norm(per_tensor[1]) / 10


# --- reduce-on-plateau ---

PLATEAU_RATE = 0.1


def fit_with_plateau(run_dir, images, labels, epochs: int, plateau: optim.Plateau, bias=True):
    overrides = [f"train.epochs={epochs}", "train.early_stopping.enabled=false"]
    return fit_full_batch(run_dir, images, labels, overrides, plateau, bias).history


def fit_full_batch(
    run_dir,
    images,
    labels,
    overrides,
    plateau=None,
    bias=True,
    validate=True,
    optimizer=None,
    stop_early=None,
) -> loop.FitResult:
    """Full-batch SGD, one step per epoch, validated on the training examples themselves."""
    cfg = loader.load(None, overrides).train
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES, "softmax", use_bias=bias),
        ]
    )
    strategy = tf.distribute.get_strategy()
    count = len(labels)

    def make_train_data(epoch, skip):
        data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(count).repeat()
        return strategy.distribute_datasets_from_function(lambda context: data)

    val_data = (
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(count) if validate else None
    )
    # runs.create makes this folder in a real run; the best epoch's weights are saved into it.
    (run_dir / run_layout.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    optimizer = optimizer or keras.optimizers.SGD(PLATEAU_RATE)
    training = loop.TrainingLoop(
        model,
        optimizer,
        strategy,
        cfg,
        count,
        CLASSES,
        run_dir,
        plateau=plateau,
        stop_early=stop_early,
    )
    result = training.fit(make_train_data, 1, val_data)
    result.model = model
    return result


def stalled_examples() -> tuple[np.ndarray, np.ndarray]:
    """Blank images: a bias-free linear model's logits stay 0 and its gradients are exactly 0,
    so val_loss is log(3) in every epoch and can never improve."""
    images, labels = examples()
    return np.zeros_like(images), labels


def test_plateau_halves_the_rate_after_each_stalled_epoch_down_to_the_minimum(tmp_path, capsys):
    images, labels = stalled_examples()
    plateau = optim.Plateau("val_loss", 1, 0.5, 0.3 * PLATEAU_RATE, True)
    history = fit_with_plateau(tmp_path, images, labels, 5, plateau, bias=False)

    assert history["val_loss"] == pytest.approx([math.log(CLASSES)] * 5, rel=1e-6)
    assert len(set(history["val_loss"])) == 1
    # Rows record the rate an epoch trained with; a stalled epoch lowers the next one's.
    rate = PLATEAU_RATE
    expected = [rate, rate, rate * 0.5, rate * 0.3, rate * 0.3]
    assert history["learning_rate"] == pytest.approx(expected, rel=1e-6)
    output = capsys.readouterr().out
    assert "train: val_loss stalled; learning rate 0.1 -> 0.05" in output
    assert output.count("stalled") == 2  # at the minimum, nothing more to lower or print


def test_plateau_keeps_the_rate_while_val_loss_improves(tmp_path):
    images, labels = examples()
    plateau = optim.Plateau("val_loss", 1, 0.5, 0.0, True)
    history = fit_with_plateau(tmp_path, images, labels, 5, plateau)

    assert (np.diff(history["val_loss"]) < 0).all(), history["val_loss"]
    assert history["learning_rate"] == pytest.approx([PLATEAU_RATE] * 5, rel=1e-6)


def test_a_resumed_run_continues_the_plateau_sequence_of_an_uninterrupted_one(tmp_path):
    images, labels = stalled_examples()
    plateau = optim.Plateau("val_loss", 2, 0.5, 0.3 * PLATEAU_RATE, True)
    straight = fit_with_plateau(tmp_path / "straight", images, labels, 6, plateau, bias=False)
    rate = PLATEAU_RATE
    expected = [rate, rate, rate, rate * 0.5, rate * 0.5, rate * 0.3]
    assert straight["learning_rate"] == pytest.approx(expected, rel=1e-6)

    # Stopped after epoch 4: the rate was lowered once and one more stalled epoch is counted.
    fit_with_plateau(tmp_path / "resumed", images, labels, 4, plateau, bias=False)
    state = tf.train.load_checkpoint(str(tmp_path / "resumed" / run_layout.CHECKPOINTS))
    assert state.get_tensor("plateau_wait/.ATTRIBUTES/VARIABLE_VALUE") == 1
    best = state.get_tensor("plateau_best/.ATTRIBUTES/VARIABLE_VALUE")
    assert best == pytest.approx(math.log(CLASSES), rel=1e-6)

    # A fresh loop (new model, new optimizer at the initial rate) on the same run folder.
    resumed = fit_with_plateau(tmp_path / "resumed", images, labels, 6, plateau, bias=False)
    assert resumed["learning_rate"] == pytest.approx(straight["learning_rate"], rel=1e-6)


def test_plateau_schedule_with_warmup_is_a_config_error_naming_warmup_epochs(capsys):
    with pytest.raises(loader.ConfigError, match=r"optimizer\.warmup_epochs is not supported"):
        loader.load(None, ["optimizer.schedule=plateau", "optimizer.warmup_epochs=1"])
    # From the command line: one line, exit status 2, before any data is read.
    arguments = ["--set", "optimizer.schedule=plateau", "--set", "optimizer.warmup_epochs=1"]
    assert task.main(flow.run, arguments) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: invalid config: ") and "warmup_epochs" in line


def test_plateau_settings_come_from_the_optimizer_config():
    cfg = loader.load(
        None,
        [
            "optimizer.schedule=plateau",
            "optimizer.decay_rate=0.25",
            "optimizer.plateau={monitor: val_accuracy, patience: 3, min_learning_rate: 0.0001}",
        ],
    ).optimizer
    assert optim.plateau(cfg) == optim.Plateau("val_accuracy", 3, 0.25, 1e-4, False)
    assert optim.build_schedule(cfg, 10, 5) == cfg.learning_rate  # a constant the loop lowers
    assert optim.plateau(loader.load(None, ["optimizer.schedule=cosine"]).optimizer) is None


# --- early stopping ---


def test_early_stopping_follows_the_configured_direction(tmp_path):
    images, labels = examples()
    watch = ["train.epochs=4", "train.early_stopping={enabled: true, patience: 1}"]
    natural = fit_full_batch(tmp_path / "natural", images, labels, watch)
    assert (np.diff(natural.history["val_loss"]) < 0).all()
    assert (natural.epochs_run, natural.best_epoch) == (4, 3)

    # val_loss falls every epoch, so with "higher is better" the first epoch stays the best
    # and the run stops after `patience` epochs without a higher one.
    reversed_ = watch + ["train.early_stopping.direction=max"]
    stopped = fit_full_batch(tmp_path / "reversed", images, labels, reversed_)
    assert (stopped.epochs_run, stopped.best_epoch) == (2, 0)


def test_an_empty_validation_split_says_early_stopping_is_off(tmp_path, capsys):
    images, labels = examples()
    result = fit_full_batch(tmp_path, images, labels, ["train.epochs=2"], validate=False)
    assert result.epochs_run == 2 and result.best_epoch is None
    assert "the validation split is empty, so val_loss is never measured" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "train.early_stopping.monitor=val_acc",
            "train.early_stopping.monitor 'val_acc' is not a history.csv column "
            "(did you mean 'val_accuracy'?)",
        ),
        (
            "optimizer.plateau.monitor=val_los",
            "optimizer.plateau.monitor 'val_los' is not a history.csv column "
            "(did you mean 'val_loss'?)",
        ),
    ],
)
def test_a_monitor_that_is_no_history_column_is_a_config_error(override, expected):
    with pytest.raises(loader.ConfigError) as raised:
        loader.load(None, [override])
    assert expected in str(raised.value)


def test_a_custom_metric_monitor_needs_its_direction(tmp_path):
    custom = [
        "train.metrics=[f1]",
        f"train.custom_objects={tmp_path / 'objects.py'}",
        "train.early_stopping.monitor=val_f1",
    ]
    with pytest.raises(loader.ConfigError, match=r"needs train\.early_stopping\.direction"):
        loader.load(None, custom)
    cfg = loader.load(None, [*custom, "train.early_stopping.direction=max"])
    assert cfg.train.early_stopping.minimizes() is False


# --- soft targets (MixUp, CutMix) ---


def test_one_hot_float_targets_train_exactly_like_class_ids(tmp_path):
    """Labels that are float [batch, classes] are taken as the targets: one-hot ones give the
    very update class ids give, class weights included; mixed ones another."""
    images, labels = examples()
    one_hot = np.eye(CLASSES, dtype=np.float32)[labels]
    weights = [3.0, 1.0, 0.5]
    strategy = tf.distribute.get_strategy()
    by_id = train_on(tmp_path / "ids", strategy, images, labels, weights)
    by_target = train_on(tmp_path / "one-hot", strategy, images, one_hot, weights)
    for a, b in zip(by_id, by_target, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    mixed = 0.7 * one_hot + 0.3 * one_hot[::-1]
    assert not np.allclose(
        train_on(tmp_path / "mixed", strategy, images, mixed, weights)[0], by_id[0]
    )


def train_on(run_dir, strategy, images, targets, class_weights) -> list[np.ndarray]:
    cfg = loader.load(None, ["train.epochs=2"]).train
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(CLASSES, "softmax")]
    )

    def make_train_data(epoch, skip):
        data = tf.data.Dataset.from_tensor_slices((images, targets)).batch(GLOBAL_BATCH).repeat()
        return strategy.distribute_datasets_from_function(lambda context: data)

    training = loop.TrainingLoop(
        model,
        keras.optimizers.SGD(0.5),
        strategy,
        cfg,
        GLOBAL_BATCH,
        CLASSES,
        run_dir,
        class_weights=class_weights,
    )
    training.fit(make_train_data, STEPS, None)
    return model.get_weights()


# --- weight averaging (train.ema) ---


def test_an_ema_run_validates_and_ends_with_the_average_of_its_steps(tmp_path):
    """Keras' EMA starts at the first step's weights, then a <- m a + (1 - m) w per step. With
    one full-batch step per epoch, the weights after k steps are those of a k-epoch run."""
    images, labels = examples()
    overrides = ["train.early_stopping.enabled=false"]
    steps = [
        fit_full_batch(tmp_path / f"plain{k}", images, labels, [f"train.epochs={k}", *overrides])
        for k in range(1, 5)
    ]
    expected = [np.array(w) for w in steps[0].model.get_weights()]
    for result in steps[1:]:
        weights = result.model.get_weights()
        expected = [0.5 * a + 0.5 * w for a, w in zip(expected, weights, strict=True)]
    averaged = fit_full_batch(
        tmp_path / "ema",
        images,
        labels,
        ["train.epochs=4", *overrides],
        optimizer=keras.optimizers.SGD(PLATEAU_RATE, use_ema=True, ema_momentum=0.5),
    )
    for a, b in zip(averaged.model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(expected[0], steps[-1].model.get_weights()[0], atol=1e-4)
    # Each epoch's validation saw the averaged weights: after the first step (average = the
    # weights) the EMA run's val_loss differs from the plain run's.
    assert averaged.history["val_loss"][0] == pytest.approx(steps[0].history["val_loss"][0])
    assert averaged.history["val_loss"][-1] != pytest.approx(steps[-1].history["val_loss"][-1])


def test_ema_momentum_auto_spans_a_tenth_of_the_run():
    assert optim.ema_momentum("auto", 300) == pytest.approx(1 - 10 / 300)
    assert optim.ema_momentum("auto", 20) == 0.9
    assert optim.ema_momentum("auto", 10**7) == 0.9999
    cfg = loader.load(None, ["train.ema.enabled=true"])
    optimizer = optim.build_optimizer(cfg.optimizer, 25, 12, cfg.train.ema)
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(1 - 10 / 300)
    assert not optim.build_optimizer(cfg.optimizer, 25, 12).use_ema


# --- early stopping under a schedule (train.early_stopping.enabled: auto) ---


@pytest.mark.parametrize(
    ("schedule", "active"),
    [
        ("cosine", False),
        ("step", False),
        ("exponential", False),
        ("constant", True),
        ("plateau", True),
    ],
)
def test_auto_early_stopping_is_off_exactly_under_decaying_schedules(schedule, active):
    cfg = loader.load(None, [f"optimizer.schedule={schedule}"])
    assert cfg.train.early_stopping.enabled == "auto"
    assert cfg.train.early_stopping.active(schedule) is active
    forced = loader.load(None, ["train.early_stopping.enabled=true"]).train.early_stopping
    assert forced.active(schedule) is True


def test_a_run_without_early_stopping_trains_every_epoch_and_keeps_the_last_weights(
    tmp_path, capsys
):
    """Training loss watched for a rise never 'improves' after epoch 1: with early stopping
    on, patience 1 stops at epoch 2 and restores epoch 1; off, all epochs run and the last
    epoch's weights stay, while the best epoch is still recorded for the report."""
    images, labels = examples()
    watch = ["train.early_stopping={monitor: loss, direction: max, patience: 1}"]
    stopped = fit_full_batch(
        tmp_path / "on", images, labels, ["train.epochs=4", *watch], stop_early=True
    )
    assert len(stopped.history["loss"]) == 2 and stopped.best_epoch == 0
    kept = fit_full_batch(
        tmp_path / "off", images, labels, ["train.epochs=4", *watch], stop_early=False
    )
    assert len(kept.history["loss"]) == 4 and kept.best_epoch == 0
    plain = fit_full_batch(
        tmp_path / "plain", images, labels, ["train.epochs=4", *watch], stop_early=False
    )
    for a, b in zip(kept.model.get_weights(), plain.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    first = fit_full_batch(
        tmp_path / "first", images, labels, ["train.epochs=1", *watch], stop_early=False
    )
    assert not np.allclose(kept.model.get_weights()[0], first.model.get_weights()[0])
    for a, b in zip(stopped.model.get_weights(), first.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)
    # enabled is auto here and the loop was told off: the run says why it never stops.
    assert "early stopping is off: the learning-rate schedule decays" in capsys.readouterr().out
