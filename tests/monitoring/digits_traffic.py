"""Served traffic for the monitoring tests: the ingested digits by split, shifted copies of them,
and a classifier of the train split exported for serving."""

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from transforms import dataset_info

Labelled = list[tuple[str, bytes]]  # (class, encoded PNG)


def by_split(digits_dir: Path, version_dir: str | Path) -> dict[str, Labelled]:
    """The digit PNGs of each split of an ingested version, in file order."""
    index = dataset_info.example_index(str(version_dir))
    splits: dict[str, Labelled] = {}
    for path in sorted(digits_dir.glob("*/*.png")):
        data = path.read_bytes()
        label, split = index[hashlib.sha256(data).hexdigest()]
        splits.setdefault(split, []).append((label, data))
    return splits


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def darker(data: bytes, factor: float = 0.4) -> bytes:
    return to_png(Image.open(io.BytesIO(data)).point(lambda value: int(value * factor)))


def resized(data: bytes, size: tuple[int, int] = (64, 48)) -> bytes:
    return to_png(Image.open(io.BytesIO(data)).resize(size, Image.Resampling.BICUBIC))


def export_classifier(base: Path, train: Labelled, class_names: list[str]) -> Path:
    """A nearest-class-mean classifier of the 32x32 pixels (about 90% accurate on held-out
    digits, fitted in milliseconds) as Flatten -> Dense(softmax), with the project's serving
    signatures: `base/1/`. Its logits are -|x - mean_k|^2 / 2 up to a shared constant."""
    import keras

    from artifacts import export

    pixels = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(data)), np.float32).reshape(-1) / 255
            for _, data in train
        ]
    )
    labels = np.array([class_names.index(label) for label, _ in train])
    means = np.stack([pixels[labels == k].mean(axis=0) for k in range(len(class_names))])
    inputs = keras.Input((32, 32, 1))
    dense = keras.layers.Dense(len(class_names), activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([means.T, -0.5 * (means**2).sum(axis=1)])
    return export.export_saved_model(model, base, 1, (32, 32), 1, class_names, {})
