"""model.backbone custom: the user's own build function is checked, then trains, resumes,
exports to every format and serves like a built-in model."""

import json
import textwrap
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf

import cli
from artifacts import formats
from configs import loader
from core import run_layout, signatures
from serving.server import server
from tests.serving.conftest import serving_config
from tfx_pipeline import flow
from trainer import models, user_code

REPO = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPO / "configs" / "digits.yaml"

USER_MODULE = '''
import keras


def build(input_shape, num_classes):
    """A small residual net of the user's own, with a sub-model named backbone."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    y = keras.layers.Conv2D(32, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    features = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(features)
    return keras.Model(inputs, outputs, name="my_net")


def logits(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def wrong_classes(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


def fixed_shape(input_shape, num_classes):
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def not_a_model(input_shape, num_classes):
    return "a model"


def broken(input_shape, num_classes):
    raise RuntimeError("no GPU here")
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "my_models.py"
    path.write_text(textwrap.dedent(USER_MODULE))
    return path


def custom_config(module: Path, function: str = "build", *overrides: str):
    return loader.load(
        DIGITS_CONFIG, ["model.backbone=custom", f"model.build_fn={module}:{function}", *overrides]
    )


def test_the_built_model_is_the_users_with_the_model_momentum(user_module):
    cfg = custom_config(user_module)
    model = models.build_model(cfg.model, (16, 16, 1), 10, batch_norm_momentum=0.9)
    assert model.name == "my_net"
    norms = [
        x for x in models.nested_layers(model) if isinstance(x, keras.layers.BatchNormalization)
    ]
    assert [x.momentum for x in norms] == [0.9]


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("logits", "must end in a softmax: its outputs are probabilities that sum to 1"),
        ("wrong_classes", "must output (batch, 10) class probabilities, one per class of the"),
        ("fixed_shape", "cannot take images of shape (batch, 16, 16, 1) (data.image_size and"),
        ("not_a_model", "must return a keras.Model (received str)"),
        ("broken", "raised RuntimeError: no GPU here"),
        ("missing", "has no function 'missing' (found nothing)"),
    ],
)
def test_a_model_breaking_the_contract_is_one_line_before_training(user_module, function, message):
    cfg = custom_config(user_module, function)
    with pytest.raises(user_code.UserCodeError) as caught:
        models.build_model(cfg.model, (16, 16, 1), 10)
    assert message in str(caught.value)
    assert str(caught.value).startswith("model.build_fn: ")
    assert "\n" not in str(caught.value)


def test_config_rules_for_custom_models(user_module):
    with pytest.raises(loader.ConfigError, match="model.backbone custom needs model.build_fn"):
        loader.load(None, ["model.backbone=custom"])
    with pytest.raises(loader.ConfigError, match="model.build_fn is used with model.backbone"):
        loader.load(None, [f"model.build_fn={user_module}:build"])
    with pytest.raises(loader.ConfigError, match="a custom build_fn loads its own weights"):
        custom_config(user_module, "build", "model.weights=imagenet")


def test_fine_tuning_a_model_without_a_backbone_is_a_config_error(user_module, tmp_path):
    module = tmp_path / "flat.py"
    module.write_text(textwrap.dedent(USER_MODULE).replace('name="backbone"', 'name="trunk"'))
    from trainer import transfer

    cfg = custom_config(module, "build", "train.fine_tune.head_epochs=1")
    model = models.build_model(cfg.model, (16, 16, 1), 10)
    with pytest.raises(loader.ConfigError, match="needs a sub-model named 'backbone'"):
        transfer.trainable_setter(model, transfer.plan(cfg.train)[0], cfg.train.fine_tune)


# --- end to end: train, resume, export every format, serve ---


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory, user_module, digits_dir, ingested_digits):
    """Three epochs of the user's model on the digits: two, then the same run resumed for the
    third (a run_id whose folder holds checkpoints resumes)."""
    root = tmp_path_factory.mktemp("custom_run")
    settings = [
        "model.backbone=custom",
        f"model.build_fn={user_module}:build",
        f"data.source={digits_dir}",
        f"data.output_dir={ingested_digits.path.parent}",
        "data.image_size=[16, 16]",
        "optimizer.warmup_epochs=0",
        f"train.runs_dir={root}",
        "train.run_id=custom",
    ]
    first = flow.train_and_export(loader.load(DIGITS_CONFIG, [*settings, "train.epochs=2"]))
    resumed = flow.run(loader.load(DIGITS_CONFIG, [*settings, "train.epochs=3"]))
    return first, resumed


@pytest.mark.slow
def test_a_custom_model_trains_and_resumes(custom_run):
    first, resumed = custom_run
    assert first.run_dir == resumed.run_dir
    metrics = json.loads((resumed.run_dir / run_layout.METRICS).read_text())
    assert metrics["epochs_run"] == 3
    assert first.training["epochs_run"] == 2
    assert "ckpt-" in metrics["resumed_from"]  # the second call went on from the first's end
    assert metrics["accuracy"] > 0.5  # 10 classes: a model that learnt
    assert (resumed.run_dir / run_layout.KERAS_MODEL).is_file()


@pytest.mark.slow
def test_a_custom_model_exports_every_format_matching_its_saved_model(custom_run, capsys):
    _, resumed = custom_run
    assert cli.main(["export", "--run", str(resumed.run_dir)]) == 0
    out = resumed.run_dir / formats.FORMATS_DIR / resumed.export_dir.name
    for name in ("model.keras", "model.onnx", "model.tflite"):
        parity = json.loads((out / f"{name}.parity.json").read_text())
        assert parity["passed"] and parity["top1_agreement"] == 1.0, (name, parity)
        assert parity["max_abs_diff"] <= 1e-5
    assert "file(s) match the SavedModel" in capsys.readouterr().out


@pytest.mark.slow
def test_a_custom_model_serves_over_rest(custom_run, digits_dir):
    _, resumed = custom_run
    config = serving_config(model_name="custom")
    manager = server.build_manager(config, resumed.export_dir.parent, None, "custom")
    running = server.ModelServer(manager, config).start()
    try:
        image = next((digits_dir / "3").glob("*.png")).read_bytes()
        reply = httpx.post(
            f"{running.rest_url}/v1/models/custom:classify-images",
            files=[("files", ("three.png", image, "image/png"))],
            timeout=30,
        )
    finally:
        running.stop()
    assert reply.status_code == 200, reply.text
    top = reply.json()["results"][0]["top"]
    signature = tf.saved_model.load(str(resumed.export_dir)).signatures[signatures.SERVING_DEFAULT]
    local = signature(**{signatures.IMAGE_BYTES: tf.constant([image])})
    scores = local[signatures.SCORES].numpy()[0]
    names = [name.decode() for name in local[signatures.CLASSES].numpy()[0]]
    order = np.argsort(-scores)[:5]
    assert [entry["label"] for entry in top] == [names[index] for index in order]
    np.testing.assert_allclose([entry["score"] for entry in top], scores[order], atol=1e-5)
