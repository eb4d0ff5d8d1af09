"""train.loss, class-balanced weights and custom losses and metrics from a user's module."""

import json
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from configs import loader, schema
from core import run_layout, signatures
from tfx_pipeline import flow
from tracking import records
from trainer import losses, task, user_code

CLASSES = 3
TARGETS = np.eye(CLASSES, dtype=np.float32)[[0, 1, 2, 0]]
PROBABILITIES = np.array(
    [[0.95, 0.03, 0.02], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]], np.float32
)


def train_cfg(*overrides: str) -> schema.TrainConfig:
    return loader.load(None, list(overrides)).train


def per_example(loss, targets=TARGETS, probabilities=PROBABILITIES) -> np.ndarray:
    return keras.ops.convert_to_numpy(loss(targets, probabilities))


def test_every_builtin_loss_is_a_schema_name():
    assert set(losses.LOSSES) == set(schema.BUILTIN_LOSSES)
    for name in losses.LOSSES:
        loss = losses.build_loss(train_cfg(f"train.loss.name={name}"), CLASSES)
        assert per_example(loss).shape == (len(TARGETS),)  # per example, for the loop's scaling


def test_focal_is_keras_focal_with_its_alpha_gamma_and_smoothing():
    cfg = train_cfg(
        "train.loss={name: focal, gamma: 1.5, alpha: [0.5, 1, 2], label_smoothing: 0.1}"
    )
    expected = keras.losses.categorical_focal_crossentropy(
        TARGETS, PROBABILITIES, alpha=[0.5, 1.0, 2.0], gamma=1.5, label_smoothing=0.1
    )
    np.testing.assert_allclose(per_example(losses.build_loss(cfg, CLASSES)), expected, rtol=1e-6)
    # By hand, with the targets smoothed first: sum over classes of alpha (1 - p)^gamma CE.
    smoothed = TARGETS * 0.9 + 0.1 / CLASSES
    by_hand = (
        np.array([0.5, 1, 2]) * (1 - PROBABILITIES) ** 1.5 * -smoothed * np.log(PROBABILITIES)
    ).sum(axis=1)
    np.testing.assert_allclose(expected, by_hand, rtol=1e-5)


def test_focal_down_weights_easy_examples():
    crossentropy = per_example(losses.build_loss(train_cfg(), CLASSES))
    focal = per_example(losses.build_loss(train_cfg("train.loss={name: focal, alpha: 1}"), CLASSES))
    ratio = focal / crossentropy
    assert ratio[0] < 0.01 < 0.3 < ratio[1]  # p = 0.95 almost vanishes, p = 0.3 keeps half
    flat = train_cfg("train.loss={name: focal, gamma: 0, alpha: 1}")
    np.testing.assert_allclose(per_example(losses.build_loss(flat, CLASSES)), crossentropy)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_label_smoothing_is_crossentropy_on_smoothed_targets(smoothing):
    loss = losses.build_loss(train_cfg(f"train.loss.label_smoothing={smoothing}"), CLASSES)
    targets = TARGETS * (1 - smoothing) + smoothing / CLASSES
    expected = -(targets * np.log(PROBABILITIES)).sum(axis=1)
    np.testing.assert_allclose(per_example(loss), expected, rtol=1e-5)


def test_old_configs_with_train_label_smoothing_still_load(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"train": {"label_smoothing": 0.1, "epochs": 2}}))
    cfg = loader.load(path)
    assert cfg.train.loss.label_smoothing == 0.1
    assert "label_smoothing" not in loader.to_dict(cfg)["train"]  # saved the new way
    assert loader.validate(loader.to_dict(cfg)) == cfg
    with pytest.raises(loader.ConfigError, match="disagree; keep only train.loss.label_smo"):
        loader.load(path, ["train.loss.label_smoothing=0.2"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.loss.gamma=1"], "train.loss.gamma applies to name: focal"),
        (["train.loss={name: focal, alpha: -1}"], r"alpha must be >= 0 \(received -1.0\)"),
        (["train.loss.options={x: 1}"], "train.loss.options are for a custom loss"),
        (["train.loss.name=mine"], "'mine' is not built in .* set train.custom_objects"),
        (["train.metrics=[f1]"], "train.metrics 'f1' is not built in"),
        (["train.metrics=[loss]", "train.custom_objects=m"], "clashes with .* val_loss"),
        (["train.class_weights={scheme: effective}"], r"class_weights.scheme.scheme: Input"),
        (["train.class_weights={scheme: effective_number, beta: 1}"], "less than 1"),
    ],
)
def test_loss_settings_are_validated_at_load(overrides, message):
    with pytest.raises(loader.ConfigError, match=message):
        loader.load(None, overrides)


def test_focal_alpha_needs_one_value_per_class():
    cfg = train_cfg("train.loss={name: focal, alpha: [1, 2]}")
    with pytest.raises(losses.CustomObjectError, match="alpha has 2 values but the dataset has 3"):
        losses.build_loss(cfg, CLASSES)


def test_effective_number_weights_follow_cui_et_al():
    counts, beta = [10, 100, 1000], 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = [w * len(raw) / sum(raw) for w in raw]
    assert losses.effective_number_weights(counts, beta) == pytest.approx(expected)
    assert np.mean(expected) == pytest.approx(1.0)
    assert losses.effective_number_weights(counts, 0.0) == pytest.approx([1, 1, 1])
    # Towards beta = 1 they approach inverse frequency.
    near_one = losses.effective_number_weights(counts, 1 - 1e-9)
    assert near_one[0] / near_one[2] == pytest.approx(100, rel=1e-3)
    setting = train_cfg("train.class_weights={scheme: effective_number, beta: 0.99}").class_weights
    names = ["a", "b", "c"]
    found = task.class_weights(setting, names, dict(zip(names, counts, strict=True)))
    assert found == pytest.approx(expected)


# --- custom losses and metrics from a user's module ---

CUSTOM_MODULE = """
    import keras


    def scaled_crossentropy(y_true, y_pred, scale=1.0):
        return scale * keras.losses.categorical_crossentropy(y_true, y_pred)


    def top_probability(y_true, y_pred):
        return keras.ops.max(y_pred, axis=-1)


    class Brier(keras.metrics.Mean):
        def update_state(self, y_true, y_pred, sample_weight=None):
            squared = keras.ops.sum(keras.ops.square(y_true - y_pred), axis=-1)
            return super().update_state(squared, sample_weight)


    def no_arguments():
        return 0.0


    def per_class(y_true, y_pred):
        return y_true * y_pred


    LOSSES = {
        "scaled_crossentropy": scaled_crossentropy,
        "kl_divergence": keras.losses.KLDivergence,
        "dice": keras.losses.Dice,
        "no_arguments": no_arguments,
        "per_class": per_class,
    }
    METRICS = {"top_probability": top_probability, "brier": Brier}
"""


@pytest.fixture
def custom_module(tmp_path) -> Path:
    path = tmp_path / "my_losses.py"
    path.write_text(textwrap.dedent(CUSTOM_MODULE))
    return path


def test_a_custom_loss_function_gets_its_options_and_a_loss_class_is_built(custom_module):
    module = f"train.custom_objects={custom_module}"
    scaled = train_cfg(module, "train.loss={name: scaled_crossentropy, options: {scale: 3}}")
    plain = per_example(losses.build_loss(train_cfg(), CLASSES))
    np.testing.assert_allclose(per_example(losses.build_loss(scaled, CLASSES)), 3 * plain)
    divergence = losses.build_loss(train_cfg(module, "train.loss.name=kl_divergence"), CLASSES)
    assert isinstance(divergence, keras.losses.KLDivergence)
    assert per_example(divergence).shape == (len(TARGETS),)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.custom_objects=no_such_package.losses", "train.loss.name=x"],
            "train.custom_objects: no module named 'no_such_package.losses'; give a module",
        ),
        (
            ["train.custom_objects=missing.py", "train.loss.name=x"],
            "train.custom_objects: file not found: missing.py",
        ),
        (["train.loss.name=nope"], r"train.loss.name: 'nope' is not in LOSSES of .*my_losses.py"),
        (["train.loss.name=no_arguments"], r"must take \(y_true, y_pred\): too many positional"),
        (
            ["train.loss={name: scaled_crossentropy, options: {factor: 2}}"],
            r"keyword arguments \['factor'\] \(train.loss.options\)",
        ),
        (["train.loss.name=per_class"], r"one loss per example, shape \(batch,\) \(received"),
        (["train.loss.name=dice"], r"shape \(batch,\) \(received shape \(\) for a batch of 2"),
        (["train.metrics=[f1]"], "train.metrics: 'f1' is not in METRICS .* top_probability"),
    ],
)
def test_unusable_custom_objects_are_one_line_user_errors(custom_module, overrides, message):
    cfg = train_cfg(f"train.custom_objects={custom_module}", *overrides)
    with pytest.raises(user_code.UserCodeError, match=message) as caught:
        losses.build_loss(cfg, CLASSES)
        losses.build_metrics(cfg, CLASSES)
    assert "\n" not in str(caught.value)


def test_a_module_path_is_imported_by_name(custom_module, monkeypatch):
    monkeypatch.syspath_prepend(str(custom_module.parent))
    cfg = train_cfg("train.custom_objects=my_losses", "train.metrics=[brier]")
    (metric,) = losses.build_metrics(cfg, CLASSES).values()
    metric.update_state(TARGETS, PROBABILITIES)
    expected = ((TARGETS - PROBABILITIES) ** 2).sum(axis=1).mean()
    assert float(metric.result()) == pytest.approx(expected)


@pytest.mark.slow
@pytest.mark.beam
def test_a_custom_loss_and_metrics_train_the_digits_and_the_export_serves_without_them(
    tmp_path, custom_module, ingested_digits, digits_dir
):
    cfg = loader.load(
        None,
        [
            f"data.source={digits_dir}",
            f"data.output_dir={ingested_digits.path.parent}",
            "data.image_size=[8, 8]",
            "data.channels=1",
            "model.cnn=[{conv: {filters: 4}}]",
            "train.epochs=1",
            f"train.runs_dir={tmp_path / 'runs'}",
            f"train.custom_objects={custom_module}",
            "train.loss={name: scaled_crossentropy, options: {scale: 2.0}}",
            "train.metrics=[top_probability, brier]",
            "train.class_weights={scheme: effective_number, beta: 0.99}",
        ],
    )
    result = flow.train_and_export(cfg)
    header = (result.run_dir / run_layout.HISTORY).read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "loss", "accuracy"]  # the usual columns first, then the extra
    assert header[-2:] == ["val_top_probability", "val_brier"]
    (epoch,) = records.read(result.run_dir)["epochs"]
    assert 0 < epoch["val_top_probability"] <= 1 and 0 < epoch["val_brier"] < 2
    assert json.loads(json.dumps(epoch)) == epoch
    # Serving loads the SavedModel with no trace of the training-only module.
    custom_module.unlink()
    serve = tf.saved_model.load(str(result.export_dir)).signatures[signatures.SERVING_DEFAULT]
    png = tf.io.encode_png(tf.zeros((8, 8, 1), tf.uint8))
    scores = serve(**{signatures.IMAGE_BYTES: tf.stack([png])})[signatures.SCORES].numpy()
    assert scores.shape == (1, 10) and scores.sum() == pytest.approx(1, abs=1e-5)
