"""Custom CNNs declared in YAML (`model.cnn`): one builder per layer name, the residual block
included, applied in order to a tensor."""

import keras

KERAS_BATCH_NORM_MOMENTUM = 0.99  # Keras' own default, when neither spec nor model sets one


def conv(spec: dict, name: str, momentum: float | None):
    return keras.layers.Conv2D(
        spec["filters"],
        spec["kernel_size"],
        strides=spec["strides"],
        padding=spec["padding"],
        activation=spec["activation"],
        name=name,
    )


def batch_norm(spec: dict, name: str, momentum: float | None):
    # A momentum in the spec wins over model.batch_norm_momentum.
    chosen = spec["momentum"] if spec["momentum"] is not None else momentum
    return keras.layers.BatchNormalization(
        momentum=chosen if chosen is not None else KERAS_BATCH_NORM_MOMENTUM, name=name
    )


def residual(spec: dict, name: str, momentum: float | None):
    """ResNet's basic block (He et al. 2016): conv-BN-act, conv-BN, plus the input (through a
    1x1 conv-BN when stride or width change), then the activation. The second BatchNorm starts
    with gamma 0, so each block begins as the identity (Goyal et al. 2017): deep stacks then
    train as stably as shallow ones."""
    momentum = momentum if momentum is not None else KERAS_BATCH_NORM_MOMENTUM
    filters, kernel, strides = spec["filters"], spec["kernel_size"], spec["strides"]

    def block(inputs):
        x = keras.layers.Conv2D(
            filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv1"
        )(inputs)
        x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn1")(x)
        x = keras.layers.Activation(spec["activation"], name=f"{name}_act1")(x)
        x = keras.layers.Conv2D(
            filters, kernel, padding="same", use_bias=False, name=f"{name}_conv2"
        )(x)
        x = keras.layers.BatchNormalization(
            momentum=momentum, gamma_initializer="zeros", name=f"{name}_bn2"
        )(x)
        shortcut = inputs
        if strides != 1 or inputs.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(
                filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut"
            )(inputs)
            shortcut = keras.layers.BatchNormalization(
                momentum=momentum, name=f"{name}_shortcut_bn"
            )(shortcut)
        x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
        return keras.layers.Activation(spec["activation"], name=f"{name}_out")(x)

    return block


# Keyed like configs.schema.CNN_LAYER_SPECS (a test keeps the two in step). Each entry takes
# (spec, name, batch-norm momentum or None) and returns something to call on a tensor.
CNN_LAYERS = {
    "conv": conv,
    "max_pool": lambda spec, name, momentum: keras.layers.MaxPooling2D(
        spec["pool_size"], name=name
    ),
    "avg_pool": lambda spec, name, momentum: keras.layers.AveragePooling2D(
        spec["pool_size"], name=name
    ),
    "batch_norm": batch_norm,
    "dropout": lambda spec, name, momentum: keras.layers.Dropout(spec["rate"], name=name),
    "residual": residual,
}


def apply_layers(layers: list[dict], inputs, batch_norm_momentum: float | None):
    """`model.cnn` applied in order to `inputs`. Layers get stable names (conv_1, max_pool_1,
    residual_1_conv1, ...) so weight files and unfreeze_from_layer can refer to them."""
    features = inputs
    counts: dict[str, int] = {}
    for spec in layers:
        ((name, kwargs),) = spec.items()
        counts[name] = counts.get(name, 0) + 1
        features = CNN_LAYERS[name](kwargs, f"{name}_{counts[name]}", batch_norm_momentum)(features)
    return features
