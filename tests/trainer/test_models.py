"""trainer.models: every backbone and CNN layer builds; weights resolve without a network."""

import time
import typing
from pathlib import Path

import keras
import numpy as np
import pytest

from configs import loader, schema
from trainer import cnn, models, weights

REPO = Path(__file__).resolve().parents[2]

# The no-top file each keras.applications constructor looks for in <KERAS_HOME>/models/, and the
# keras.applications module whose preprocess_input the backbone's weights expect.
KERAS_APPLICATIONS = {
    "mobilenet_v2": (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        keras.applications.mobilenet_v2,
    ),
    "mobilenet_v3_small": (
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        keras.applications.mobilenet_v3,
    ),
    "mobilenet_v3_large": (
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        keras.applications.mobilenet_v3,
    ),
    **{
        f"efficientnet_b{n}": (f"efficientnetb{n}_notop.h5", keras.applications.efficientnet)
        for n in range(8)
    },
    **{
        f"efficientnet_v2_{size}": (
            f"efficientnetv2-{size}_notop.h5",
            keras.applications.efficientnet_v2,
        )
        for size in ("b0", "b1", "b2", "b3", "s")
    },
    **{
        f"resnet{depth}": (
            f"resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5",
            keras.applications.resnet,
        )
        for depth in (50, 101, 152)
    },
    **{
        f"resnet{depth}_v2": (
            f"resnet{depth}v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            keras.applications.resnet_v2,
        )
        for depth in (50, 101, 152)
    },
    "vgg16": ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", keras.applications.vgg16),
    "vgg19": ("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", keras.applications.vgg19),
    "densenet121": (
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        keras.applications.densenet,
    ),
    "xception": (
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        keras.applications.xception,
    ),
    "convnext_tiny": ("convnext_tiny_notop.h5", keras.applications.convnext),
}
KERAS_IMAGENET_FILES = {name: file for name, (file, _) in KERAS_APPLICATIONS.items()}
# The backbones whose own graph normalises 0-255 input (their preprocess_input is a no-op).
NORMALISE_IN_GRAPH = {"mobilenet_v3", "efficientnet", "efficientnet_v2", "convnext"}


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
    # The image size only has to pass validation for every backbone; tests pick their own shapes.
    return loader.load(None, ["data.image_size=[71, 71]", *overrides]).model


def predict(model: keras.Model, shape: tuple[int, ...]) -> np.ndarray:
    images = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    return np.asarray(model(images, training=False))


# --- backbones ---


def side_for(name: str) -> int:
    return schema.BACKBONES[name].min_side


@pytest.mark.parametrize("name", sorted(schema.BACKBONES))
def test_backbone_builds_and_feeds_its_weights_their_own_preprocessing(name):
    side = side_for(name)
    model = models.build_model(
        model_config(f"model.backbone={name}", "model.weights=null"), (side, side, 3), 3
    )
    probs = predict(model, (side, side, 3))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # Our [0, 1] images through the backbone's first layer equal keras.applications'
    # preprocess_input on the same images in 0-255, the input its ImageNet weights expect.
    images = np.random.default_rng(1).random((2, side, side, 3), dtype=np.float32)
    backbone = model.get_layer(models.BACKBONE)
    ours = np.asarray(backbone.get_layer("to_backbone_input")(images))
    module = KERAS_APPLICATIONS[name][1]
    expected = module.preprocess_input(images * 255.0)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)
    in_graph = module.__name__.rsplit(".", 1)[-1] in NORMALISE_IN_GRAPH
    assert (schema.BACKBONES[name].preprocessing == "raw") == in_graph


def test_caffe_mode_flips_rgb_to_bgr():
    red = np.zeros((1, 1, 1, 3), np.float32)
    red[..., 0] = 1.0
    out = np.asarray(models.BackboneInput("caffe")(red))[0, 0, 0]
    np.testing.assert_allclose(out, [-103.939, -116.779, 255.0 - 123.68], rtol=1e-5)


def test_image_smaller_than_the_backbone_accepts_is_a_config_error():
    with pytest.raises(loader.ConfigError, match=r"'xception' needs images of at least 71x71"):
        loader.load(None, ["model.backbone=xception", "data.image_size=[64, 64]"])


def test_every_backbone_has_a_keras_file_name():
    assert set(KERAS_IMAGENET_FILES) == set(schema.BACKBONES)


def test_every_backbone_file_name_is_the_one_trainer_weights_fetches():
    for name, file_name in KERAS_IMAGENET_FILES.items():
        assert weights.keras_file(name, (224, 224)).name == file_name


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty Keras cache (returned) and a weights mirror that refuses every connection."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv(weights.MIRROR_ENV, "http://127.0.0.1:1")  # nothing listens on port 1
    return tmp_path / "models"


@pytest.mark.parametrize("name", sorted(schema.BACKBONES))
def test_imagenet_not_cached_and_unreachable_is_one_line_config_error(name, offline):
    cfg = model_config(f"model.backbone={name}", "model.weights=imagenet")
    started = time.monotonic()
    with pytest.raises(loader.ConfigError) as raised:
        models.build_model(cfg, (32, 32, 3), 3)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "\n" not in message and f"needs {KERAS_IMAGENET_FILES[name]}," in message
    assert "Keras cache" in message and str(offline) in message
    assert "model.weights: null" in message


@pytest.mark.parametrize("name", sorted(schema.BACKBONES))
def test_imagenet_found_under_keras_file_name_is_not_downloaded(name, offline):
    offline.mkdir()
    cached = offline / KERAS_IMAGENET_FILES[name]
    cached.write_bytes(b"")  # resolving finds the file; it loads when the model is built
    assert models.resolve_weights(name, "imagenet", (224, 224), None) == str(cached)


def test_imagenet_file_of_another_backbone_does_not_count(offline):
    offline.mkdir()
    (offline / KERAS_IMAGENET_FILES["mobilenet_v3_large"]).write_bytes(b"")
    with pytest.raises(
        loader.ConfigError, match="mobilenet_v3_small needs weights_mobilenet_v3_small_224"
    ):
        models.resolve_weights("mobilenet_v3_small", "imagenet", (224, 224), None)


def test_null_weights_resolve_to_none():
    assert models.resolve_weights("mobilenet_v2", None, (224, 224), None) is None


@pytest.mark.parametrize("missing", ["nope.weights.h5", "."], ids=["file", "folder"])
def test_missing_weights_file_is_config_error(missing, tmp_path):
    path = tmp_path / missing
    cfg = model_config("model.backbone=mobilenet_v3_small", f"model.weights={path}")
    with pytest.raises(loader.ConfigError, match="model.weights: file not found"):
        models.build_model(cfg, (32, 32, 3), 3)


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"], ids=["keras3", "legacy_h5"])
def test_a_bare_keras_applications_weights_file_loads_into_the_backbone(suffix, tmp_path):
    """Keras' own no-top files (legacy .h5) and files saved from the bare application load."""
    name = "mobilenet_v3_small"
    keras.utils.set_random_seed(1)
    saved = models.build_application(name, input_shape=(32, 32, 3))
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".h5":
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_weights_to_hdf5_group(h5py_file(path), saved)
    else:
        saved.save_weights(path)

    keras.utils.set_random_seed(2)
    model = models.build_model(
        model_config(f"model.backbone={name}", f"model.weights={path}"), (32, 32, 3), 3
    )
    loaded = model.get_layer(models.BACKBONE).get_weights()
    # What seed 2 alone would have given.
    fresh = models.build_application(name, input_shape=(32, 32, 3)).get_weights()
    expected = saved.get_weights()
    assert len(loaded) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(fresh, expected, strict=True))


def h5py_file(path: Path):
    import h5py

    return h5py.File(path, "w")


def test_a_weights_file_of_another_backbone_is_a_config_error(tmp_path):
    path = tmp_path / "cnn.weights.h5"
    models.build_model(model_config(), (32, 32, 3), 3).get_layer(models.BACKBONE).save_weights(path)
    cfg = model_config("model.backbone=mobilenet_v3_small", f"model.weights={path}")
    with pytest.raises(loader.ConfigError, match="does not fit the backbone"):
        models.build_model(cfg, (32, 32, 3), 3)


def test_cnn_backbone_weights_round_trip_through_a_file(tmp_path):
    keras.utils.set_random_seed(1)
    trained = models.build_model(model_config(), (32, 32, 3), 3)
    path = tmp_path / "backbone.weights.h5"
    trained.get_layer(models.BACKBONE).save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = models.build_model(model_config(f"model.weights={path}"), (32, 32, 3), 5)
    for a, b in zip(
        trained.get_layer(models.BACKBONE).get_weights(),
        loaded.get_layer(models.BACKBONE).get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_imagenet_for_a_custom_cnn_is_a_config_error():
    with pytest.raises(loader.ConfigError, match="imagenet needs a keras.applications"):
        models.build_model(model_config("model.weights=imagenet"), (32, 32, 3), 3)


# --- custom CNN and head ---


def test_digits_yaml_cnn_builds_for_grayscale():
    cfg = loader.load(REPO / "configs" / "digits.yaml").model
    model = models.build_model(cfg, (32, 32, 1), 10)
    probs = predict(model, (32, 32, 1))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    kinds = [type(layer).__name__ for layer in model.get_layer(models.BACKBONE).layers]
    assert kinds.count("Conv2D") == 4 and kinds.count("BatchNormalization") == 2


def test_default_cnn_builds():
    model = models.build_model(model_config(), (32, 32, 3), 4)
    assert predict(model, (32, 32, 3)).shape == (2, 4)


def test_every_cnn_layer_has_an_example():
    assert set(CNN_EXAMPLES) | {"residual"} == set(cnn.CNN_LAYERS)  # residual: test_cnn.py


@pytest.mark.parametrize("name", sorted(CNN_EXAMPLES))
def test_cnn_layer_built_from_its_spec(name):
    spec, layer_class, expected = CNN_EXAMPLES[name]
    cfg = model_config(
        f"model.cnn=[{{conv: {{filters: 8}}}}, {{{name}: {spec}}}]", "model.head.dropout=0"
    )
    model = models.build_model(cfg, (32, 32, 3), 3)
    backbone_layers = model.get_layer(models.BACKBONE).layers
    layer = [layer for layer in backbone_layers if type(layer) is layer_class][-1]
    assert layer.name == (f"{name}_2" if name == "conv" else f"{name}_1")  # after conv_1
    assert {key: getattr(layer, key) for key in expected} == expected
    assert predict(model, (32, 32, 3)).shape == (2, 3)


def test_conv_activation_comes_from_spec():
    cfg = model_config("model.cnn=[{conv: {filters: 8, activation: tanh}}]")
    conv = next(
        layer
        for layer in models.build_model(cfg, (16, 16, 1), 2).get_layer(models.BACKBONE).layers
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


# --- BatchNorm momentum (model.batch_norm_momentum) ---


@pytest.mark.parametrize(
    ("setting", "steps", "expected"),
    [
        ("auto", 25, 0.92),  # half an epoch of 25 steps
        ("auto", 10, 0.9),  # floor: fewer samples would make the statistics noisy
        ("auto", 1000, 0.99),  # ceiling: Keras' own default for large datasets
        ("keep", 25, None),
        (0.5, 25, 0.5),
    ],
)
def test_batch_norm_momentum_rule(setting, steps, expected):
    assert models.resolve_batch_norm_momentum(setting, steps) == pytest.approx(expected)


def batch_norm_momenta(model: keras.Model) -> set[float]:
    return {
        layer.momentum
        for layer in models.nested_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def test_a_backbone_takes_the_model_momentum_on_all_its_batch_norm_layers():
    cfg = model_config("model.backbone=mobilenet_v2")
    assert batch_norm_momenta(models.build_model(cfg, (32, 32, 3), 3)) == {0.999}  # Keras' own
    model = models.build_model(cfg, (32, 32, 3), 3, batch_norm_momentum=0.92)
    assert batch_norm_momenta(model) == {0.92}
    assert len([x for x in models.nested_layers(model) if "BatchNorm" in type(x).__name__]) == 52


def test_a_batch_norm_spec_momentum_wins_over_the_model_momentum():
    cfg = model_config(
        "model.cnn=[{conv: {filters: 4}}, {batch_norm: {momentum: 0.5}}, {conv: {filters: 4}}, "
        "{batch_norm: {}}]"
    )
    backbone = models.build_model(cfg, (8, 8, 1), 2, batch_norm_momentum=0.9).get_layer(
        models.BACKBONE
    )
    assert backbone.get_layer("batch_norm_1").momentum == 0.5
    assert backbone.get_layer("batch_norm_2").momentum == 0.9


def test_batch_norm_momentum_applies_in_training_updates():
    """Keras reads `momentum` at each call: one training step moves the moving mean by
    (1 - momentum) of the way to the batch mean."""
    cfg = model_config("model.cnn=[{batch_norm: {}}]", "model.head.dropout=0")
    model = models.build_model(cfg, (4, 4, 1), 2, batch_norm_momentum=0.75)
    layer = model.get_layer(models.BACKBONE).get_layer("batch_norm_1")
    model(np.full((2, 4, 4, 1), 8.0, np.float32), training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [2.0])  # 0.75 * 0 + 0.25 * 8
