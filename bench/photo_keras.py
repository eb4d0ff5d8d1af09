"""The plain-Keras reference of the real-photo benchmark: the model and augmentation layers of an
imgclf config trained with `model.fit` on the same crops, scored on the holdout folder.

What a careful Keras user writes by hand: every file decoded once with Pillow into memory
(EXIF orientation applied, transparency composited on data.background, as imgclf does), fitted
to data.image_size the way data.resize crop does (shorter side scaled to the size, centre crop),
the config's Keras augmentation layers mapped over shuffled batches, and `model.fit` with the
config's optimizer and schedule. With augment.random_resized_crop the crops stay at their own
size in memory and each batch element is a random box of one (tf.image's
sample_distorted_bounding_box, the same area and ratio ranges), resized to data.image_size, as
a Keras user writes it with tf.image. Two models:
- the config's `model.cnn`, built by trainer.models exactly as `imgclf train` builds it (same
  layers, same BatchNorm momentum), trained from scratch in one phase;
- keras.applications.MobileNetV2 with weights from a local .h5 (pretrained on the pretraining
  crops), `[0, 1] -> [-1, 1]` input scaling, pooling, dropout and a softmax head, BatchNorm
  momentum set as model.batch_norm_momentum sets imgclf's: a frozen-
  backbone head phase, then the backbone from `train.fine_tune.unfreeze_from_layer` (or all
  of it) at learning_rate x learning_rate_factor with BatchNorm frozen.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from configs import schema
from trainer import models, optim

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


@dataclass
class Outcome:
    """One contender's run: holdout accuracy and where the time went."""

    holdout_accuracy: float
    train_seconds: float  # model.fit phases, from a built model to the trained one
    load_seconds: float  # decoding and resizing the training crops into memory
    epochs: int


def read_image(path: Path, background: tuple[int, int, int], channels: int) -> np.ndarray:
    """uint8 [H, W, channels]: upright by EXIF, transparency on `background`."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (*background, 255))
            canvas.alpha_composite(rgba)
            image = canvas
        return np.asarray(image.convert("L" if channels == 1 else "RGB")).reshape(
            image.height, image.width, channels
        )


def crop_resize(pixels: np.ndarray, size: tuple[int, int], crop_fraction: float) -> np.ndarray:
    """float32 [height, width, C] in [0, 1]: shorter side scaled to size / crop_fraction with the
    aspect ratio kept, then the centre (data.resize: crop)."""
    height, width = size
    scale = max(height / pixels.shape[0], width / pixels.shape[1]) / crop_fraction
    scaled = (
        max(height, round(pixels.shape[0] * scale)),
        max(width, round(pixels.shape[1] * scale)),
    )
    image = tf.image.resize(
        tf.convert_to_tensor(pixels, tf.float32) / 255.0, scaled, antialias=scale < 1
    )
    top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
    return np.clip(image.numpy()[top : top + height, left : left + width], 0.0, 1.0)


def load_folder(
    folder: Path,
    data: schema.DataConfig,
    class_names: list[str] | None = None,
    fit: bool = True,
):
    """(images, labels int32 [N], class names) of a class-folder tree: float32 [N, H, W, C]
    fitted to data.image_size, or with `fit=False` the uint8 pixels at their own sizes."""
    class_names = class_names or sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(class_names):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            pixels = read_image(path, tuple(data.background), data.channels)
            if fit:
                pixels = crop_resize(pixels, tuple(data.image_size), data.crop_fraction)
            images.append(pixels)
            labels.append(label)
    return (np.stack(images) if fit else images), np.array(labels, np.int32), class_names


def random_resized_crops(
    images: list[np.ndarray], labels, crop: schema.RandomResizedCropConfig, cfg: schema.Config
) -> tf.data.Dataset:
    """(float32 image [height, width, C] in [0, 1], label) with a random box of each image per
    pass: tf.image.sample_distorted_bounding_box over the whole image, sliced and resized."""
    flat = tf.constant(np.concatenate([image.reshape(-1) for image in images]))
    shapes = np.array([image.shape for image in images], np.int64)
    starts = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))[:-1]])

    def crop_one(start, shape, label):
        pixels = tf.reshape(flat[start : start + tf.reduce_prod(shape)], shape)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(pixels),
            bounding_boxes=tf.zeros([1, 0, 4]),
            min_object_covered=0.0,
            aspect_ratio_range=crop.ratio,
            area_range=crop.scale,
            max_attempts=crop.attempts,
            use_image_if_no_bounding_boxes=True,
        )
        box = tf.slice(pixels, begin, size)
        shrink = tf.reduce_any(tf.shape(box)[:2] > 2 * tf.constant(cfg.data.image_size))
        resized = tf.cond(
            shrink,
            lambda: tf.image.resize(box, cfg.data.image_size, antialias=True),
            lambda: tf.image.resize(box, cfg.data.image_size),
        )
        return tf.clip_by_value(resized / 255.0, 0.0, 1.0), label

    return (
        tf.data.Dataset.from_tensor_slices((starts, shapes, labels))
        .shuffle(len(images), seed=cfg.seed, reshuffle_each_iteration=True)
        .map(crop_one, num_parallel_calls=tf.data.AUTOTUNE)
    )


def build_augmenter(cfg: schema.AugmentConfig, seed: int):
    """The config's Keras augmentation layers in order, as a function of a training batch."""
    layers = [
        getattr(keras.layers, schema.AUGMENT_LAYER_CLASSES[name])(**kwargs, seed=seed + index)
        for index, layer in enumerate(cfg.layers)
        for name, kwargs in layer.items()
    ]

    def apply(images, labels):
        for layer in layers:
            images = layer(images, training=True)
        return tf.clip_by_value(images, 0.0, 1.0), labels

    return apply


def training_data(images, labels, classes: int, cfg: schema.Config) -> tf.data.Dataset:
    one_hot = tf.one_hot(labels, classes)
    crop = cfg.augment.random_resized_crop
    if crop is not None:
        examples = random_resized_crops(images, one_hot, crop, cfg)
    else:
        examples = tf.data.Dataset.from_tensor_slices((images, one_hot)).shuffle(
            len(images), seed=cfg.seed, reshuffle_each_iteration=True
        )
    return (
        examples.batch(cfg.data.batch_size)
        .map(build_augmenter(cfg.augment, cfg.seed), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def compile_model(model: keras.Model, cfg: schema.Config, lr_factor: float, steps, epochs):
    optimizer_cfg = cfg.optimizer.model_copy(
        update={"learning_rate": cfg.optimizer.learning_rate * lr_factor}
    )
    model.compile(
        optimizer=optim.build_optimizer(optimizer_cfg, steps, epochs),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.loss.label_smoothing),
        metrics=["accuracy"],
    )


def build_cnn(cfg: schema.Config, steps_per_epoch: int, classes: int) -> keras.Model:
    """model.cnn as `imgclf train` builds it, BatchNorm momentum resolved the same way."""
    momentum = models.resolve_batch_norm_momentum(cfg.model.batch_norm_momentum, steps_per_epoch)
    input_shape = (*cfg.data.image_size, cfg.data.channels)
    return models.build_model(cfg.model, input_shape, classes, momentum)


def build_mobilenet(cfg: schema.Config, weights: Path, alpha: float, classes: int):
    """(model, backbone): MobileNetV2 from a no-top .h5, [0, 1] input scaled to [-1, 1]."""
    inputs = keras.Input((*cfg.data.image_size, 3))
    scaled = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=str(weights), input_tensor=scaled, alpha=alpha
    )
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    x = keras.layers.Dropout(cfg.model.head.dropout)(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs), backbone


def unfreeze_for_fine_tuning(backbone: keras.Model, fine_tune: schema.FineTuneConfig) -> None:
    """Backbone layers from unfreeze_from_layer (or the last unfreeze_top_layers, or all) train;
    BatchNorm stays frozen when freeze_batch_norm, as Keras' transfer-learning guide does."""
    backbone.trainable = True
    names = [layer.name for layer in backbone.layers]
    first = 0
    if fine_tune.unfreeze_from_layer:
        first = names.index(fine_tune.unfreeze_from_layer)
    elif fine_tune.unfreeze_top_layers:
        first = max(0, len(names) - fine_tune.unfreeze_top_layers)
    for index, layer in enumerate(backbone.layers):
        frozen_bn = fine_tune.freeze_batch_norm and isinstance(
            layer, keras.layers.BatchNormalization
        )
        layer.trainable = index >= first and not frozen_bn


def run(
    cfg: schema.Config,
    train_dir: Path,
    holdout_dir: Path,
    pretrained: Path | None = None,
    alpha: float = 1.0,
) -> Outcome:
    """Trains the config's model (the CNN, or MobileNetV2 from `pretrained`) with model.fit on
    `train_dir` for train.epochs, then scores it on `holdout_dir`."""
    keras.utils.set_random_seed(cfg.seed)
    started = time.perf_counter()
    fit = cfg.augment.random_resized_crop is None
    images, labels, class_names = load_folder(train_dir, cfg.data, fit=fit)
    holdout_images, holdout_labels, _ = load_folder(holdout_dir, cfg.data, class_names)
    load_seconds = time.perf_counter() - started
    classes = len(class_names)
    data = training_data(images, labels, classes, cfg)
    steps = int(data.cardinality())

    started = time.perf_counter()
    if pretrained is None:
        model = build_cnn(cfg, steps, classes)
        compile_model(model, cfg, 1.0, steps, cfg.train.epochs)
        model.fit(data, epochs=cfg.train.epochs, verbose=0)
    else:
        model, backbone = build_mobilenet(cfg, pretrained, alpha, classes)
        # The momentum imgclf gives the same backbone (model.batch_norm_momentum).
        models.set_batch_norm_momentum(
            model, models.resolve_batch_norm_momentum(cfg.model.batch_norm_momentum, steps)
        )
        fine_tune = cfg.train.fine_tune
        head_epochs = fine_tune.head_epochs
        if head_epochs:
            backbone.trainable = False
            compile_model(model, cfg, 1.0, steps, head_epochs)
            model.fit(data, epochs=head_epochs, verbose=0)
        if head_epochs < cfg.train.epochs:
            unfreeze_for_fine_tuning(backbone, fine_tune)
            factor = fine_tune.learning_rate_factor if head_epochs else 1.0
            compile_model(model, cfg, factor, steps, cfg.train.epochs - head_epochs)
            model.fit(data, epochs=cfg.train.epochs - head_epochs, verbose=0)
    train_seconds = time.perf_counter() - started

    probabilities = model.predict(holdout_images, batch_size=64, verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == holdout_labels))
    return Outcome(accuracy, train_seconds, load_seconds, cfg.train.epochs)
