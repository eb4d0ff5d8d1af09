"""Transfer-learning phases: the plan, each phase's trainable flags, the loop across phases."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import loader
from core import run_layout
from trainer import loop, models, task, transfer

# Stable layer names: backbone_input, conv_1, batch_norm_1, conv_2, max_pool_1.
CNN = "model.cnn=[{conv: {filters: 8}}, {batch_norm: {}}, {conv: {filters: 8}}, {max_pool: {}}]"
# The same without the weightless max_pool on top, for counting "the last N layers".
CNN_WEIGHTED_TOP = "model.cnn=[{conv: {filters: 8}}, {batch_norm: {}}, {conv: {filters: 8}}]"
SIDE, CLASSES, BATCH, STEPS = 8, 3, 8, 2
LEARNING_RATE, FACTOR = 0.01, 0.5


def load(*overrides: str):
    return loader.load(
        None, [CNN, f"data.image_size=[{SIDE}, {SIDE}]", "data.channels=1", *overrides]
    )


def build(cfg) -> keras.Model:
    keras.utils.set_random_seed(0)
    return models.build_model(cfg.model, (SIDE, SIDE, cfg.data.channels), CLASSES)


def fine_tune_plan(cfg) -> transfer.PhasePlan:
    [phase] = [p for p in transfer.plan(cfg.train) if p.name == "fine_tune"]
    return phase


def trainable_ids(model: keras.Model) -> set[int]:
    return {id(weight) for weight in model.trainable_weights}


def trained_layers(model: keras.Model) -> list[str]:
    """Backbone layers with at least one weight the optimizer would update, in order."""
    trainable = trainable_ids(model)
    backbone = model.get_layer(models.BACKBONE)
    return [
        layer.name
        for layer in backbone.layers
        if any(id(weight) in trainable for weight in layer.weights)
    ]


def head_trains(model: keras.Model) -> bool:
    trainable = trainable_ids(model)
    return all(id(weight) in trainable for weight in model.get_layer("probs").weights)


# --- plan() ---


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], [transfer.PhasePlan("full", 0, 5)]),
        # Neither the factor nor freeze_batch_norm alone turns fine-tuning on.
        (
            [
                "train.fine_tune.learning_rate_factor=0.25",
                "train.fine_tune.freeze_batch_norm=false",
            ],
            [transfer.PhasePlan("full", 0, 5)],
        ),
        (
            ["train.fine_tune.head_epochs=2", "train.fine_tune.learning_rate_factor=0.25"],
            [transfer.PhasePlan("head", 0, 2), transfer.PhasePlan("fine_tune", 2, 3, 0.25)],
        ),
        (["train.fine_tune.head_epochs=5"], [transfer.PhasePlan("head", 0, 5)]),
        # Without a head phase there is nothing to lower the rate relative to.
        (
            ["train.fine_tune.unfreeze_top_layers=2", "train.fine_tune.learning_rate_factor=0.25"],
            [transfer.PhasePlan("fine_tune", 0, 5, 1.0)],
        ),
        (
            ["train.fine_tune.unfreeze_from_layer=conv_2"],
            [transfer.PhasePlan("fine_tune", 0, 5, 1.0)],
        ),
    ],
)
def test_plan_splits_the_epochs_into_phases(overrides, expected):
    assert transfer.plan(load("train.epochs=5", *overrides).train) == expected


def test_head_epochs_beyond_the_run_is_a_config_error():
    with pytest.raises(loader.ConfigError, match=r"head_epochs \(6\) exceeds train.epochs \(5\)"):
        load("train.epochs=5", "train.fine_tune.head_epochs=6")


def test_build_phases_gives_each_phase_its_own_optimizer_and_rate():
    cfg = load(
        "train.epochs=3",
        "train.fine_tune.head_epochs=1",
        f"train.fine_tune.learning_rate_factor={FACTOR}",
        f"optimizer.learning_rate={LEARNING_RATE}",
        "optimizer.schedule=constant",
    )
    head, fine_tune = task.build_phases(cfg, build(cfg), STEPS, "float32")
    assert (head.name, head.first_epoch, fine_tune.name, fine_tune.first_epoch) == (
        "head",
        0,
        "fine_tune",
        1,
    )
    assert head.optimizer is not fine_tune.optimizer
    rates = [
        float(keras.ops.convert_to_numpy(p.optimizer.learning_rate)) for p in (head, fine_tune)
    ]
    assert rates == pytest.approx([LEARNING_RATE, LEARNING_RATE * FACTOR], rel=1e-6)


# --- trainable flags ---


def test_head_phase_freezes_every_backbone_weight_and_trains_the_head():
    cfg = load("train.epochs=2", "train.fine_tune.head_epochs=1")
    model = build(cfg)
    [head, _] = transfer.plan(cfg.train)
    transfer.trainable_setter(model, head, cfg.train.fine_tune)()

    assert model.get_layer(models.BACKBONE).trainable_weights == []
    assert trained_layers(model) == []
    assert head_trains(model)
    assert trainable_ids(model) == {id(w) for w in model.get_layer("probs").weights}


@pytest.mark.parametrize(
    "top, freeze_batch_norm, expected",
    [
        (1, True, ["conv_2"]),
        (2, True, ["conv_2"]),
        (2, False, ["batch_norm_1", "conv_2"]),
        (3, True, ["conv_1", "conv_2"]),
        (3, False, ["conv_1", "batch_norm_1", "conv_2"]),
    ],
)
def test_unfreeze_top_layers_trains_the_last_n_layers(top, freeze_batch_norm, expected):
    cfg = load(
        CNN_WEIGHTED_TOP,
        "train.epochs=2",
        "train.fine_tune.head_epochs=1",
        f"train.fine_tune.unfreeze_top_layers={top}",
        f"train.fine_tune.freeze_batch_norm={str(freeze_batch_norm).lower()}",
    )
    model = build(cfg)
    head, fine_tune = (
        transfer.trainable_setter(model, p, cfg.train.fine_tune) for p in transfer.plan(cfg.train)
    )
    # The order the loop runs them in, twice: each setter sets every flag, whatever came before.
    for _ in range(2):
        head()
        assert trained_layers(model) == []
        fine_tune()
        assert trained_layers(model) == expected
        assert head_trains(model)
    batch_norm = model.get_layer(models.BACKBONE).get_layer("batch_norm_1")
    assert batch_norm.trainable is (not freeze_batch_norm and "batch_norm_1" in expected)


def test_unfreeze_top_layers_counts_every_layer_and_must_reach_a_weight():
    """Top N counts weightless layers too (Keras' `layers[-N:]`); unfreezing only max_pool_1
    would quietly train nothing, so it is a config error."""
    cfg = load("train.fine_tune.unfreeze_top_layers=1")
    with pytest.raises(loader.ConfigError, match=r"only layers without trainable weights"):
        transfer.trainable_setter(build(cfg), fine_tune_plan(cfg), cfg.train.fine_tune)
    cfg = load("train.fine_tune.unfreeze_top_layers=2")
    model = build(cfg)
    transfer.trainable_setter(model, fine_tune_plan(cfg), cfg.train.fine_tune)()
    assert trained_layers(model) == ["conv_2"]


@pytest.mark.parametrize(
    "layer, freeze_batch_norm, expected",
    [
        ("conv_2", True, ["conv_2"]),
        ("conv_1", True, ["conv_1", "conv_2"]),
        ("conv_1", False, ["conv_1", "batch_norm_1", "conv_2"]),
    ],
)
def test_unfreeze_from_layer_trains_that_layer_onward(layer, freeze_batch_norm, expected):
    cfg = load(
        f"train.fine_tune.unfreeze_from_layer={layer}",
        f"train.fine_tune.freeze_batch_norm={str(freeze_batch_norm).lower()}",
    )
    model = build(cfg)
    transfer.trainable_setter(model, fine_tune_plan(cfg), cfg.train.fine_tune)()
    assert trained_layers(model) == expected
    assert head_trains(model)


def test_an_unknown_layer_name_is_a_config_error_suggesting_close_names():
    cfg = load(
        "train.epochs=2",
        "train.fine_tune.head_epochs=1",
        "train.fine_tune.unfreeze_from_layer=conv2",
    )
    model = build(cfg)
    # Checked when the phases are built, before any training.
    with pytest.raises(loader.ConfigError) as raised:
        task.build_phases(cfg, model, STEPS, "float32")
    message = str(raised.value)
    assert "train.fine_tune.unfreeze_from_layer" in message
    assert "'conv2'" in message
    assert "did you mean conv_2" in message

    far = load("train.fine_tune.unfreeze_from_layer=nothing_like_it")
    with pytest.raises(loader.ConfigError, match="no layer named 'nothing_like_it'") as raised:
        transfer.trainable_setter(model, fine_tune_plan(far), far.train.fine_tune)
    assert "did you mean" not in str(raised.value)


def test_more_top_layers_than_the_backbone_has_is_a_config_error():
    cfg = load("train.fine_tune.unfreeze_top_layers=50")
    with pytest.raises(loader.ConfigError, match=r"train.fine_tune.unfreeze_top_layers: 50 "):
        task.build_phases(cfg, build(cfg), STEPS, "float32")


def test_unfreeze_from_a_named_layer_of_a_keras_applications_backbone():
    cfg = loader.load(
        None,
        [
            "model.backbone=mobilenet_v3_small",
            "model.weights=null",
            "data.image_size=[32, 32]",
            "train.fine_tune.unfreeze_from_layer=expanded_conv_10_expand",
        ],
    )
    model = models.build_model(cfg.model, (32, 32, 3), CLASSES)
    backbone = model.get_layer(models.BACKBONE)
    names = [layer.name for layer in backbone.layers]
    first = names.index("expanded_conv_10_expand")
    transfer.trainable_setter(model, fine_tune_plan(cfg), cfg.train.fine_tune)()

    batch_norm = keras.layers.BatchNormalization
    expected = [
        layer.name
        for layer in backbone.layers[first:]
        if layer.weights and not isinstance(layer, batch_norm)
    ]
    assert trained_layers(model) == expected
    assert expected[0] == "expanded_conv_10_expand" and len(expected) > 5
    assert not any(layer.trainable_weights for layer in backbone.layers[:first])
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, batch_norm))
    assert head_trains(model)


# --- the loop across phases ---

RNG = np.random.default_rng(0)
IMAGES = RNG.random((BATCH * STEPS, SIDE, SIDE, 1), dtype=np.float32)
LABELS = RNG.integers(0, CLASSES, BATCH * STEPS)


def loop_cfg(epochs: int, *overrides: str):
    return load(
        f"train.epochs={epochs}",
        "train.fine_tune.head_epochs=1",
        f"train.fine_tune.learning_rate_factor={FACTOR}",
        "optimizer.name=adam",
        f"optimizer.learning_rate={LEARNING_RATE}",
        "optimizer.schedule=constant",
        "model.head.dropout=0",
        "train.early_stopping.enabled=false",
        *overrides,
    )


def snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}


def fit(run_dir, cfg, stop_after: int | None = None, val_data=None, on_epoch=None):
    """Trains a fresh model on the same 16 examples; the phases follow cfg (all its epochs)
    while the loop stops after `stop_after` epochs, as an interrupted run would."""
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = build(cfg)
        phases = task.build_phases(cfg, model, STEPS, "float32")
    loop_train = cfg.train
    if stop_after is not None:
        loop_train = cfg.train.model_copy(update={"epochs": stop_after})

    def make_train_data(epoch, skip):
        if on_epoch is not None:
            on_epoch(epoch, model)

        def per_pipeline(context):
            data = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS))
            return data.batch(BATCH).repeat().skip(skip)

        return strategy.distribute_datasets_from_function(per_pipeline)

    (run_dir / run_layout.CHECKPOINTS).mkdir(parents=True, exist_ok=True)  # as runs.create does
    training = loop.TrainingLoop(model, phases, strategy, loop_train, BATCH, CLASSES, run_dir)
    return model, training.fit(make_train_data, STEPS, val_data)


def backbone_paths(model: keras.Model, *layers: str) -> list[str]:
    backbone = model.get_layer(models.BACKBONE)
    return [w.path for name in layers for w in backbone.get_layer(name).weights]


def test_head_then_fine_tune_trains_the_right_weights_at_the_right_rate(tmp_path):
    cfg = loop_cfg(2, "train.fine_tune.unfreeze_from_layer=conv_2")
    seen = {}

    def on_epoch(epoch, model):
        # The data of epoch 2 is asked for after epoch 1 trained: the weights at the boundary.
        seen.setdefault("start", snapshot(model))
        if epoch == 1:
            seen["after_head"] = snapshot(model)

    model, result = fit(tmp_path, cfg, on_epoch=on_epoch)
    start, after_head, end = seen["start"], seen["after_head"], snapshot(model)
    head = ["probs/kernel", "probs/bias"]
    backbone = backbone_paths(model, "conv_1", "batch_norm_1", "conv_2")
    assert "batch_norm_1/moving_mean" in backbone and "batch_norm_1/moving_variance" in backbone

    for path in backbone:
        assert np.array_equal(after_head[path], start[path]), f"{path} trained in the head phase"
    for path in head:
        assert not np.array_equal(after_head[path], start[path]), f"{path} did not train"

    for path in backbone_paths(model, "conv_2") + head:
        assert not np.array_equal(end[path], after_head[path]), f"{path} did not fine-tune"
    # conv_1 sits below the unfreeze point; batch_norm_1 stays frozen in inference mode, so its
    # moving statistics do not move either.
    for path in backbone_paths(model, "conv_1", "batch_norm_1"):
        assert np.array_equal(end[path], start[path]), f"{path} changed while frozen"

    assert result.epochs_run == 2
    assert result.history["learning_rate"] == pytest.approx(
        [LEARNING_RATE, LEARNING_RATE * FACTOR], rel=1e-6
    )


def test_unfrozen_batch_norm_updates_its_statistics_in_fine_tune(tmp_path):
    cfg = loop_cfg(
        2,
        "train.fine_tune.unfreeze_from_layer=batch_norm_1",
        "train.fine_tune.freeze_batch_norm=false",
    )
    seen = {}
    model, _ = fit(tmp_path, cfg, on_epoch=lambda e, m: seen.setdefault(e, snapshot(m)))
    end = snapshot(model)
    for path in backbone_paths(model, "batch_norm_1"):
        assert np.array_equal(seen[1][path], seen[0][path]), f"{path} moved in the head phase"
        assert not np.array_equal(end[path], seen[1][path]), f"{path} did not move in phase 2"


@pytest.mark.parametrize("interrupted_after", [1, 2])
def test_a_run_resumed_from_its_checkpoint_continues_in_its_phase(tmp_path, interrupted_after):
    cfg = loop_cfg(3, "train.fine_tune.unfreeze_from_layer=conv_2")
    whole, whole_result = fit(tmp_path / "whole", cfg)

    fit(tmp_path / "resumed", cfg, stop_after=interrupted_after)
    resumed, result = fit(tmp_path / "resumed", cfg)

    assert result.resumed_from is not None
    assert len(result.history["loss"]) == 3
    assert result.history["learning_rate"] == pytest.approx(
        [LEARNING_RATE] + [LEARNING_RATE * FACTOR] * 2, rel=1e-6
    )
    # Same trainable set, and, resumed inside phase 2, the same Adam moments and step count:
    # only possible when the checkpoint holds the phase-2 optimizer.
    whole_weights, resumed_weights = snapshot(whole), snapshot(resumed)
    for path, value in whole_weights.items():
        np.testing.assert_allclose(resumed_weights[path], value, atol=1e-6, err_msg=path)
    assert result.history["loss"] == pytest.approx(whole_result.history["loss"], abs=1e-6)

    saved = {
        name
        for name, _ in tf.train.list_variables(str(tmp_path / "resumed" / run_layout.CHECKPOINTS))
    }
    assert any(name.startswith("optimizer/") for name in saved)
    assert any(name.startswith("optimizer_1/") for name in saved)


def test_early_stopping_waits_for_the_last_phase(tmp_path):
    # Three copies of one image labelled 0, 1 and 2: val_accuracy is 1/3 whatever the model
    # predicts, so it never improves after the first epoch.
    val_data = tf.data.Dataset.from_tensor_slices(
        (np.repeat(IMAGES[:1], CLASSES, axis=0), np.arange(CLASSES))
    ).batch(CLASSES)
    stopping = [
        "train.early_stopping.enabled=true",
        "train.early_stopping.monitor=val_accuracy",
        "train.early_stopping.patience=0",
    ]
    one_phase = load("train.epochs=4", "optimizer.schedule=constant", *stopping)
    _, control = fit(tmp_path / "one-phase", one_phase, val_data=val_data)
    assert len(control.history["loss"]) == 2  # the monitor stalls at once: patience 0 stops

    two_phases = loop_cfg(4, "train.fine_tune.head_epochs=2", *stopping)
    _, result = fit(tmp_path / "two-phases", two_phases, val_data=val_data)
    # Both head epochs run, then the first fine_tune epoch, where stopping is allowed again.
    assert result.history["val_accuracy"] == pytest.approx([1 / 3] * 3)
    assert result.history["learning_rate"] == pytest.approx(
        [LEARNING_RATE, LEARNING_RATE, LEARNING_RATE * FACTOR], rel=1e-6
    )
    assert result.epochs_run == 3
