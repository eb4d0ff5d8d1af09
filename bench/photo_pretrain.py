"""Backbone weights "pretrained locally" for the real-photo benchmark, and a weights mirror that
serves them the way Keras' storage serves ImageNet weights.

MobileNetV2 is trained from scratch on the pretraining crops (twelve photos, one class each: which
photo a crop comes from), then its no-top part is saved as a Keras legacy .h5, under the name
keras.applications gives the ImageNet file for that alpha and resolution, in a folder laid out as
Keras' keras-applications/ folder: `<root>/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_
kernels_1.0_96_no_top.h5`. `serve(root)` puts that folder on http://127.0.0.1:<port>/, the URL
imgclf takes as IMGCLF_WEIGHTS_MIRROR; plain Keras loads the same file by path.

Alpha is 1.0 because imgclf's model.backbone mobilenet_v2 builds Keras' default width (the
schema has no alpha setting); 0.35 would train about three times faster.
"""

import contextlib
import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import keras
import numpy as np
import photo_keras
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from configs import schema

ALPHA = 1.0
IMAGE_SIZE = 96
BATCH_SIZE = 32
# From scratch, BatchNorm's moving statistics must follow the weights within an epoch (~38 steps);
# keras.applications' 0.999 would leave them stale and the saved backbone miscalibrated.
BATCH_NORM_MOMENTUM = 0.9
LEARNING_RATE = 2e-3
SIDECAR = "pretraining.json"


def weights_name(alpha: float = ALPHA, rows: int = IMAGE_SIZE) -> str:
    """keras.applications.MobileNetV2's file name for its no-top ImageNet weights."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def weights_path(root: Path) -> Path:
    """Where the file sits under a mirror root (Keras' keras-applications/ layout)."""
    return root / "mobilenet_v2" / weights_name()


def build(classes: int) -> tuple[keras.Model, keras.Model]:
    """(classifier, backbone): [0, 1] images scaled to [-1, 1] as imgclf's mobilenet_v2 input."""
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    scaled = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_tensor=scaled, alpha=ALPHA
    )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs), backbone


def save_no_top(backbone: keras.Model, path: Path) -> None:
    """The backbone as a legacy .h5 of the layout of Keras' own no-top files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    with h5py.File(staging, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, backbone)
    staging.rename(path)


def pretrain(pretrain_dir: Path, root: Path, epochs: int, seed: int = 0) -> Path:
    """Trains MobileNetV2 on `pretrain_dir` (class folders) and saves its backbone under `root`;
    reuses the file when it was made from the same crops, epochs and seed."""
    path = weights_path(root)
    wanted = {"source": str(pretrain_dir), "epochs": epochs, "seed": seed, "alpha": ALPHA}
    sidecar = root / SIDECAR
    if path.is_file() and sidecar.is_file():
        recorded = json.loads(sidecar.read_text())
        if {key: recorded.get(key) for key in wanted} == wanted:
            return path
    data = schema.DataConfig(image_size=(IMAGE_SIZE, IMAGE_SIZE), resize="crop")
    images, labels, class_names = photo_keras.load_folder(pretrain_dir, data)
    keras.utils.set_random_seed(seed)
    model, backbone = build(len(class_names))
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images), seed=seed)
        .batch(BATCH_SIZE)
        .map(flip, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    steps = int(dataset.cardinality())
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps * epochs)
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(
        f"pretrain: MobileNetV2 (alpha {ALPHA}) from scratch on {len(images)} crops of "
        f"{len(class_names)} photos, {epochs} epochs"
    )
    started = time.perf_counter()
    history = model.fit(dataset, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - started
    # Accuracy of the saved weights in inference mode (moving statistics), not the running mean.
    probabilities = model.predict(images, batch_size=64, verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == labels))
    save_no_top(backbone, path)
    sidecar.write_text(
        json.dumps(
            {
                **wanted,
                "classes": class_names,
                "images": len(images),
                "seconds": round(seconds, 1),
                "train_accuracy_inference": accuracy,
                "last_epoch_accuracy": float(history.history["accuracy"][-1]),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"pretrain: {path.name} in {seconds:.0f}s, accuracy on its crops {accuracy:.3f}")
    return path


def flip(images, labels):
    return tf.image.random_flip_left_right(images), labels


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's parameter name
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """A weights mirror on 127.0.0.1 serving `root`; yields its base URL (ends with /)."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
