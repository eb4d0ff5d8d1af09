"""The user's own model (`model.backbone: custom`): built by their function, checked against
the contract every imgclf model keeps before any training starts."""

import keras
import numpy as np

from trainer import user_code

KEY = "model.build_fn"


class CustomModelError(user_code.UserCodeError):
    """model.build_fn builds something imgclf cannot train; the message says what to change."""


def build(
    location: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> keras.Model:
    """`function(input_shape, num_classes)` from `module:function` or `file.py:function`, checked:
    a keras.Model taking float32 images [batch, *input_shape] in [0, 1] and returning class
    probabilities [batch, num_classes] that sum to 1 (softmax), as the loss, the evaluator and
    every export expect."""
    build_fn = user_code.load_function(location, KEY)
    try:
        model = build_fn(tuple(input_shape), num_classes)
    except Exception as error:
        raise CustomModelError(
            f"{KEY}: {location}{tuple(input_shape), num_classes} raised "
            f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        ) from None
    if not isinstance(model, keras.Model):
        raise CustomModelError(
            f"{KEY}: {location} must return a keras.Model (received {type(model).__name__})"
        )
    check_contract(model, location, input_shape, num_classes)
    return model


def check_contract(
    model: keras.Model, location: str, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    """One probe batch through the model: input shape, output shape, probabilities."""
    probe = np.random.default_rng(0).random((2, *input_shape), dtype=np.float32)
    try:
        output = keras.ops.convert_to_numpy(model(probe, training=False))
    except Exception as error:
        raise CustomModelError(
            f"{KEY}: the model from {location} cannot take images of shape "
            f"(batch, {', '.join(map(str, input_shape))}) (data.image_size and data.channels): "
            f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        ) from None
    if output.shape != (2, num_classes):
        raise CustomModelError(
            f"{KEY}: the model from {location} must output (batch, {num_classes}) class "
            f"probabilities, one per class of the dataset (received shape {output.shape})"
        )
    sums = output.astype(np.float64).sum(axis=1)
    if output.min() < 0 or not np.allclose(sums, 1.0, atol=1e-3):
        raise CustomModelError(
            f"{KEY}: the model from {location} must end in a softmax: its outputs are "
            f"probabilities that sum to 1 (received sums {np.round(sums, 3).tolist()})"
        )
