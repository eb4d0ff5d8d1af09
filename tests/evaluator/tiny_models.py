"""Real SavedModels whose answers are known in advance, and grey test images to ask them about:
a perfect model, a worse one, and one that always answers the same class."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 8
CLASSES = ["dark", "light"]
# Mean brightness of the test images of each class: none within 0.05 of 0.5 or of a threshold.
LEVELS = {
    "dark": [i / 20 for i in range(10)],  # 0.0 .. 0.45
    "light": [0.55 + i / 20 for i in range(10)],  # 0.55 .. 1.0
}
# Logit gap per unit of brightness past the threshold: 0.05 away gives odds of e^2.5.
SHARPNESS = 50.0
# Thresholds: PERFECT is right on every image; WORSE calls dark images from 0.3 up light
# (16 of 20 right, still clearly above the majority rate); ALWAYS_DARK answers dark always.
PERFECT, WORSE, ALWAYS_DARK = 0.5, 0.275, 2.0


def grey_png(level: float) -> bytes:
    pixels = np.full((SIDE, SIDE), round(level * 255), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "PNG")
    return buffer.getvalue()


def write_greys(root: Path, levels: dict[str, list[float]] = LEVELS) -> Path:
    """root/<class>/<n>.png: one solid grey image per level."""
    for name, values in levels.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, level in enumerate(values):
            (root / name / f"{i}.png").write_bytes(grey_png(level))
    return root


def export_threshold_model(
    base: Path, threshold: float, version: int = 1, metadata: dict | None = None
) -> Path:
    """base/<version>/: a SavedModel answering 'light' when an image's mean brightness is above
    `threshold`, else 'dark' (always 'dark' for a threshold above 1)."""
    import keras  # here: collecting the tests needs no Keras

    from artifacts import export

    inputs = keras.Input((SIDE, SIDE, 1))
    dense = keras.layers.Dense(len(CLASSES), activation="softmax")
    outputs = dense(keras.layers.Flatten()(inputs))
    kernel = np.zeros((SIDE * SIDE, len(CLASSES)), np.float32)
    kernel[:, 1] = SHARPNESS / (SIDE * SIDE)  # the light logit: SHARPNESS x mean brightness
    bias = np.array([0.0, -SHARPNESS * threshold], np.float32)
    dense.set_weights([kernel, bias])
    return export.export_saved_model(
        keras.Model(inputs, outputs), base, version, (SIDE, SIDE), 1, CLASSES, metadata or {}
    )
