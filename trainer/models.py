"""Model construction: keras.applications backbones or a custom CNN, plus a classification head."""

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from configs import loader, schema


@dataclass(frozen=True)
class Backbone:
    """A keras.applications constructor and the pixel range its weights were trained on."""

    build: Callable[..., keras.Model]
    input_range: tuple[float, float]  # our images are [0, 1]; a Rescaling layer maps them here
    imagenet_file: str  # glob of the no-top weights file in the Keras cache
    extra_kwargs: tuple[tuple[str, object], ...] = ()


# Keyed like configs.schema.BACKBONE_NAMES; a test builds every entry.
BACKBONES = {
    "mobilenet_v2": Backbone(
        keras.applications.MobileNetV2, (-1.0, 1.0), "mobilenet_v2_weights_*_no_top.h5"
    ),
    "mobilenet_v3_small": Backbone(
        keras.applications.MobileNetV3Small,
        (0.0, 255.0),
        "weights_mobilenet_v3_small_*_no_top_v2.h5",
        (("include_preprocessing", True),),
    ),
    "mobilenet_v3_large": Backbone(
        keras.applications.MobileNetV3Large,
        (0.0, 255.0),
        "weights_mobilenet_v3_large_*_no_top_v2.h5",
        (("include_preprocessing", True),),
    ),
    "efficientnet_b0": Backbone(
        keras.applications.EfficientNetB0, (0.0, 255.0), "efficientnetb0_notop.h5"
    ),
    "efficientnet_v2_b0": Backbone(
        keras.applications.EfficientNetV2B0,
        (0.0, 255.0),
        "efficientnetv2-b0_notop.h5",
        (("include_preprocessing", True),),
    ),
}

CNN_LAYERS = {
    "conv": lambda spec: keras.layers.Conv2D(
        spec["filters"],
        spec["kernel_size"],
        strides=spec["strides"],
        padding=spec["padding"],
        activation=spec["activation"],
    ),
    "max_pool": lambda spec: keras.layers.MaxPooling2D(spec["pool_size"]),
    "avg_pool": lambda spec: keras.layers.AveragePooling2D(spec["pool_size"]),
    "batch_norm": lambda spec: keras.layers.BatchNormalization(momentum=spec["momentum"]),
    "dropout": lambda spec: keras.layers.Dropout(spec["rate"]),
}

POOLING = {
    "avg": keras.layers.GlobalAveragePooling2D,
    "max": keras.layers.GlobalMaxPooling2D,
    "flatten": keras.layers.Flatten,
}


def build_model(
    cfg: schema.ModelConfig, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """Backbone + pooling + dropout + dense head; takes float32 images in [0, 1]."""
    inputs = keras.Input(input_shape, name="images")
    if cfg.backbone == "cnn":
        features = inputs
        for spec in cfg.cnn:
            ((name, kwargs),) = spec.items()
            features = CNN_LAYERS[name](kwargs)(features)
    else:
        features = build_backbone(cfg, input_shape)(inputs)
    x = POOLING[cfg.head.pooling]()(features)
    if cfg.head.dropout > 0:
        x = keras.layers.Dropout(cfg.head.dropout)(x)
    # The classifier stays float32 so softmax is stable under mixed precision.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(
        x
    )
    return keras.Model(inputs, outputs, name=f"imgclf_{cfg.backbone}")


def build_backbone(cfg: schema.ModelConfig, input_shape: tuple[int, int, int]) -> keras.Model:
    """The named backbone without its top, fed by a rescaling from [0, 1] to its own range."""
    backbone = BACKBONES[cfg.backbone]
    weights = resolve_weights(cfg.backbone, cfg.weights)
    low, high = backbone.input_range
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(high - low, offset=low, name="to_backbone_range")(inputs)
    base = backbone.build(
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
        input_shape=input_shape,
        **dict(backbone.extra_kwargs),
    )
    if weights not in (None, "imagenet"):
        base.load_weights(weights)
    return keras.Model(inputs, base(x), name=cfg.backbone)


def resolve_weights(backbone_name: str, weights: str | None) -> str | None:
    """None, 'imagenet' (only when already cached: there is no network), or an existing file."""
    if weights is None:
        return None
    if weights == "imagenet":
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        if glob.glob(str(cache / BACKBONES[backbone_name].imagenet_file)):
            return "imagenet"
        raise loader.ConfigError(
            f"model.weights: imagenet weights for {backbone_name} are not in the Keras cache "
            f"({cache}) and cannot be downloaded here; copy the no-top .h5 file there or pass its "
            "path as model.weights, or use model.weights: null to train from scratch"
        )
    if not Path(weights).is_file():
        raise loader.ConfigError(
            f"model.weights: file not found: {weights} (use null, imagenet or a file)"
        )
    return weights
