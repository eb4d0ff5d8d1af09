"""trainer.models: every backbone and CNN layer builds; weights resolve without a network."""

import time
import typing
from pathlib import Path

import keras
import numpy as np
import pytest

from configs import loader, schema
from trainer import models

REPO = Path(__file__).resolve().parents[2]

# The no-top file each keras.applications constructor looks for in <KERAS_HOME>/models/.
KERAS_IMAGENET_FILES = {
    "mobilenet_v2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "mobilenet_v3_small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    "mobilenet_v3_large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    "efficientnet_b0": "efficientnetb0_notop.h5",
    "efficientnet_v2_b0": "efficientnetv2-b0_notop.h5",
}

# One non-default spec per CNN layer kind, and what the built Keras layer must show for it.
CNN_EXAMPLES = {
    "conv": (
        {"filters": 4, "kernel_size": 5, "strides": 2, "activation": "tanh", "padding": "valid"},
        keras.layers.Conv2D,
        {"filters": 4, "kernel_size": (5, 5), "strides": (2, 2), "padding": "valid"},
    ),
    "max_pool": ({"pool_size": 4}, keras.layers.MaxPooling2D, {"pool_size": (4, 4)}),
    "avg_pool": ({"pool_size": 4}, keras.layers.AveragePooling2D, {"pool_size": (4, 4)}),
    "batch_norm": ({"momentum": 0.5}, keras.layers.BatchNormalization, {"momentum": 0.5}),
    "dropout": ({"rate": 0.3}, keras.layers.Dropout, {"rate": 0.3}),
}


def model_config(*overrides: str) -> schema.ModelConfig:
    return loader.load(None, list(overrides)).model


def predict(model: keras.Model, shape: tuple[int, ...]) -> np.ndarray:
    images = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    return np.asarray(model(images, training=False))


# --- backbones ---


@pytest.mark.parametrize("name", sorted(models.BACKBONES))
def test_backbone_builds_and_outputs_probabilities(name):
    model = models.build_model(
        model_config(f"model.backbone={name}", "model.weights=null"), (32, 32, 3), 3
    )
    probs = predict(model, (32, 32, 3))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    low, high = models.BACKBONES[name].input_range
    rescale = model.get_layer(name).get_layer("to_backbone_range")
    np.testing.assert_allclose(
        np.asarray(rescale(np.array([[0.0, 1.0]]))), [[low, high]], rtol=1e-6
    )


def test_every_backbone_has_a_keras_file_name():
    assert set(KERAS_IMAGENET_FILES) == set(models.BACKBONES)


@pytest.mark.parametrize("name", sorted(models.BACKBONES))
def test_imagenet_not_cached_is_config_error_without_download(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cfg = model_config(f"model.backbone={name}", "model.weights=imagenet")
    started = time.monotonic()
    with pytest.raises(loader.ConfigError) as raised:
        models.build_model(cfg, (32, 32, 3), 3)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "Keras cache" in message and str(tmp_path / "models") in message
    assert "model.weights: null" in message


@pytest.mark.parametrize("name", sorted(models.BACKBONES))
def test_imagenet_found_under_keras_file_name(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / KERAS_IMAGENET_FILES[name]).write_bytes(b"")
    assert models.resolve_weights(name, "imagenet") == "imagenet"


def test_imagenet_file_of_another_backbone_does_not_count(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / KERAS_IMAGENET_FILES["mobilenet_v3_large"]).write_bytes(b"")
    with pytest.raises(loader.ConfigError, match="mobilenet_v3_small are not in the Keras cache"):
        models.resolve_weights("mobilenet_v3_small", "imagenet")


def test_null_weights_resolve_to_none():
    assert models.resolve_weights("mobilenet_v2", None) is None


@pytest.mark.parametrize("missing", ["nope.weights.h5", "."], ids=["file", "folder"])
def test_missing_weights_file_is_config_error(missing, tmp_path):
    path = tmp_path / missing
    cfg = model_config("model.backbone=mobilenet_v3_small", f"model.weights={path}")
    with pytest.raises(loader.ConfigError, match="model.weights: file not found"):
        models.build_model(cfg, (32, 32, 3), 3)


def test_local_weights_file_round_trips(tmp_path):
    name = "mobilenet_v3_small"
    backbone = models.BACKBONES[name]
    kwargs = dict(
        include_top=False, weights=None, input_shape=(32, 32, 3), **dict(backbone.extra_kwargs)
    )
    keras.utils.set_random_seed(1)
    saved = backbone.build(**kwargs)
    path = tmp_path / "backbone.weights.h5"
    saved.save_weights(path)

    keras.utils.set_random_seed(2)
    model = models.build_model(
        model_config(f"model.backbone={name}", f"model.weights={path}"), (32, 32, 3), 3
    )
    loaded = model.get_layer(name).get_weights()
    fresh = backbone.build(**kwargs).get_weights()  # what seed 2 alone would have given
    expected = saved.get_weights()
    assert len(loaded) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(fresh, expected, strict=True))


# --- custom CNN and head ---


def test_digits_yaml_cnn_builds_for_grayscale():
    cfg = loader.load(REPO / "configs" / "digits.yaml").model
    model = models.build_model(cfg, (32, 32, 1), 10)
    probs = predict(model, (32, 32, 1))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 4 and kinds.count("BatchNormalization") == 2


def test_default_cnn_builds():
    model = models.build_model(model_config(), (32, 32, 3), 4)
    assert predict(model, (32, 32, 3)).shape == (2, 4)


def test_every_cnn_layer_has_an_example():
    assert set(CNN_EXAMPLES) == set(models.CNN_LAYERS)


@pytest.mark.parametrize("name", sorted(CNN_EXAMPLES))
def test_cnn_layer_built_from_its_spec(name):
    spec, layer_class, expected = CNN_EXAMPLES[name]
    cfg = model_config(
        f"model.cnn=[{{conv: {{filters: 8}}}}, {{{name}: {spec}}}]", "model.head.dropout=0"
    )
    model = models.build_model(cfg, (32, 32, 3), 3)
    layer = [layer for layer in model.layers if type(layer) is layer_class][-1]
    assert {key: getattr(layer, key) for key in expected} == expected
    assert predict(model, (32, 32, 3)).shape == (2, 3)


def test_conv_activation_comes_from_spec():
    cfg = model_config("model.cnn=[{conv: {filters: 8, activation: tanh}}]")
    conv = next(
        layer
        for layer in models.build_model(cfg, (16, 16, 1), 2).layers
        if isinstance(layer, keras.layers.Conv2D)
    )
    assert conv.activation is keras.activations.tanh


def test_pooling_registry_matches_schema():
    assert set(typing.get_args(schema.HeadConfig.model_fields["pooling"].annotation)) == set(
        models.POOLING
    )


@pytest.mark.parametrize("pooling", sorted(models.POOLING))
def test_head_pooling_builds(pooling):
    cfg = model_config("model.cnn=[{conv: {filters: 8}}]", f"model.head.pooling={pooling}")
    model = models.build_model(cfg, (8, 8, 1), 5)
    assert isinstance(model.layers[2], models.POOLING[pooling])
    assert predict(model, (8, 8, 1)).shape == (2, 5)


@pytest.mark.parametrize("rate", [0.0, 0.4])
def test_head_dropout_only_when_rate_positive(rate):
    cfg = model_config("model.cnn=[{conv: {filters: 8}}]", f"model.head.dropout={rate}")
    dropouts = [
        layer
        for layer in models.build_model(cfg, (8, 8, 1), 2).layers
        if isinstance(layer, keras.layers.Dropout)
    ]
    assert [layer.rate for layer in dropouts] == ([rate] if rate else [])


def test_classifier_is_float32_softmax():
    cfg = model_config("model.cnn=[{conv: {filters: 8}}]")
    probs = models.build_model(cfg, (8, 8, 1), 2).get_layer("probs")
    assert probs.dtype_policy.compute_dtype == "float32"
    assert probs.activation is keras.activations.softmax
