"""Model construction: keras.applications backbones or a YAML CNN plus a classification head,
or the user's own model; BatchNorm momentum for all of them."""

from pathlib import Path

import keras
from keras import ops

from configs import loader, schema
from trainer import cnn, custom_model
from trainer import weights as imagenet

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="imgclf")
class BackboneInput(keras.layers.Layer):
    """Maps float RGB images in [0, 1] to the input a backbone's weights were trained on (the
    modes: configs/schema/backbones.py)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in schema.PREPROCESSING_MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images * 2.0 - 1.0
        if self.mode == "torch":
            return (images - ops.array(IMAGENET_MEAN_RGB, self.compute_dtype)) / ops.array(
                IMAGENET_STD_RGB, self.compute_dtype
            )
        if self.mode == "caffe":
            return ops.flip(images, axis=-1) * 255.0 - ops.array(CAFFE_MEAN_BGR, self.compute_dtype)
        return images * 255.0

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


POOLING = {
    "avg": keras.layers.GlobalAveragePooling2D,
    "max": keras.layers.GlobalMaxPooling2D,
    "flatten": keras.layers.Flatten,
}


BACKBONE = "backbone"  # the name of the feature-extractor sub-model in every built model


def build_model(
    cfg: schema.ModelConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_norm_momentum: float | None = None,
) -> keras.Model:
    """A feature extractor named `backbone` + pooling + dropout + dense head, or the user's own
    model (backbone custom).

    Takes float32 images in [0, 1]. The backbone is one sub-model for custom CNNs too, so
    fine-tuning, weight files and freezing treat every model alike. `batch_norm_momentum` (see
    resolve_batch_norm_momentum) is set on every BatchNorm layer; None keeps each layer's own.
    """
    if cfg.backbone == "custom":
        model = custom_model.build(cfg.build_fn, input_shape, num_classes)
        set_batch_norm_momentum(model, batch_norm_momentum)
        return model
    inputs = keras.Input(input_shape, name="images")
    features = build_feature_extractor(cfg, input_shape, batch_norm_momentum)(inputs)
    x = POOLING[cfg.head.pooling](name="pool")(features)
    if cfg.head.dropout > 0:
        x = keras.layers.Dropout(cfg.head.dropout, name="head_dropout")(x)
    # The classifier stays float32 so softmax is stable under mixed precision.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(
        x
    )
    return keras.Model(inputs, outputs, name=f"imgclf_{cfg.backbone}")


def resolve_batch_norm_momentum(setting: float | str, steps_per_epoch: int) -> float | None:
    """model.batch_norm_momentum as a number, or None for `keep`.

    auto: BatchNorm's moving statistics must follow the weights within an epoch, or a small
    dataset evaluates with statistics of weights long gone (Keras' 0.99 averages over ~100
    steps, 4 epochs of 25 steps; keras.applications' 0.999 over ~1000). 1 - 2 / steps averages
    over half an epoch, kept within [0.9, 0.99].
    """
    if setting == "keep":
        return None
    if setting == "auto":
        return min(0.99, max(0.9, 1.0 - 2.0 / max(steps_per_epoch, 1)))
    return float(setting)


def set_batch_norm_momentum(model: keras.Model, momentum: float | None) -> int:
    """Sets every BatchNormalization layer's momentum (nested models included); returns how
    many layers it set. Keras reads `momentum` at each call, so built layers follow too."""
    if momentum is None:
        return 0
    layers = [x for x in nested_layers(model) if isinstance(x, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def has_batch_norm(model: keras.Model) -> bool:
    return any(isinstance(x, keras.layers.BatchNormalization) for x in nested_layers(model))


def nested_layers(model: keras.Model):
    """Every layer of `model`, those inside nested models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from nested_layers(layer)


def build_feature_extractor(
    cfg: schema.ModelConfig,
    input_shape: tuple[int, int, int],
    batch_norm_momentum: float | None = None,
) -> keras.Model:
    """The backbone as a model named BACKBONE, with `model.weights` (imagenet or a file) loaded."""
    weights = resolve_weights(cfg.backbone, cfg.weights, input_shape[:2], cfg.weights_mirror)
    inputs = keras.Input(input_shape, name="backbone_input")
    if cfg.backbone == "cnn":
        features = cnn.apply_layers(cfg.cnn, inputs, batch_norm_momentum)
        extractor = keras.Model(inputs, features, name=BACKBONE)
    else:
        x = BackboneInput(schema.BACKBONES[cfg.backbone].preprocessing, name="to_backbone_input")(
            inputs
        )
        # input_tensor makes the application's layers part of one flat graph from our input,
        # so "the top N layers" of the backbone means the application's own layers.
        # ImageNet weights load from the file trainer.weights fetched, as keras.applications
        # loads them: weights="imagenet" would look in the cache folder Keras read at import
        # and download from Keras' own URL whatever that folder lacks.
        base = build_application(cfg.backbone, input_tensor=x)
        if cfg.weights == "imagenet":
            imagenet.load(base, cfg.backbone, weights)
        extractor = keras.Model(inputs, base.output, name=BACKBONE)
        set_batch_norm_momentum(extractor, batch_norm_momentum)
    if weights is not None and cfg.weights != "imagenet":
        load_backbone_weights(extractor, weights)
    return extractor


def build_application(name: str, weights: str | None = None, **inputs) -> keras.Model:
    """The keras.applications backbone `name` (configs' BACKBONES table) without its top;
    `inputs` is input_tensor or input_shape."""
    backbone = schema.BACKBONES[name]
    build = getattr(keras.applications, backbone.application)
    options = {"include_preprocessing": True} if backbone.include_preprocessing else {}
    return build(include_top=False, weights=weights, **options, **inputs)


def load_backbone_weights(extractor: keras.Model, path: str) -> None:
    try:
        extractor.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        raise loader.ConfigError(
            f"model.weights: {path} does not fit the {extractor.name} of this model "
            f"({str(error).splitlines()[0][:200]}); use a file saved from the same model.backbone "
            "(a run's backbone.weights.h5, or Keras' no-top .h5 for it)"
        ) from None


def resolve_weights(
    backbone_name: str, weights: str | None, image_size: tuple[int, int], mirror: str | None
) -> str | None:
    """None, the cached ImageNet file (downloaded when missing; `mirror` is
    model.weights_mirror), or an existing weights file."""
    if weights is None:
        return None
    if weights == "imagenet":
        if backbone_name == "cnn":
            raise loader.ConfigError(
                "model.weights: imagenet needs a keras.applications model.backbone; a custom cnn "
                "takes null or a weights file"
            )

        def build_bare_backbone() -> keras.Model:
            return build_application(backbone_name, input_shape=(*image_size, 3))

        return str(imagenet.fetch(backbone_name, image_size, build_bare_backbone, mirror))
    if not Path(weights).is_file():
        raise loader.ConfigError(
            f"model.weights: file not found: {weights} (use null, imagenet or a file)"
        )
    return weights
