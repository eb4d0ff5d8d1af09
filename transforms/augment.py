"""Training-only augmentation built from config as Keras preprocessing layers."""

import contextlib

import keras
import tensorflow as tf
from keras.src.layers.preprocessing.image_preprocessing import random_flip as keras_flip

from configs import schema

# Keyed like configs.schema.AUGMENT_LAYER_CLASSES, which names the Keras class of each entry;
# a test keeps the two registries in step. AugMix is left out: it picks its operations with
# Python's `random` while tracing, so inside tf.data every batch would get the same chain.
AUGMENT_LAYERS = {
    name: getattr(keras.layers, class_name)
    for name, class_name in schema.AUGMENT_LAYER_CLASSES.items()
}
LABEL_MIXING = (keras.layers.MixUp, keras.layers.CutMix)


def build_augmenter(
    cfg: schema.AugmentConfig, seed: int, num_classes: int | None = None
) -> keras.Sequential | None:
    """A Sequential of the configured Keras layers, or None when no augmentation is declared.

    Layers get distinct seeds derived from `seed` so that runs repeat but layers don't correlate.
    Inputs are float images in [0, 1] (value_range is set so by the config). With MixUp or
    CutMix, `num_classes` is needed: labels are one-hot encoded before the layers mix them.
    """
    if not cfg.layers:
        return None
    layers = []
    for index, spec in enumerate(cfg.layers):
        ((name, kwargs),) = spec.items()
        layers.append(AUGMENT_LAYERS[name](**kwargs, seed=seed + index))
    augmenter = keras.Sequential(layers, name="augment")
    if mixes_labels(augmenter) and not num_classes:
        raise ValueError("MixUp and CutMix mix labels: build_augmenter needs num_classes")
    # What labels are one-hot encoded to before a label-mixing layer; see augment_batch.
    augmenter.num_classes = num_classes
    return augmenter


def mixes_labels(augmenter: keras.Sequential | None) -> bool:
    """True when a layer mixes pairs of images, so a batch's targets come out soft."""
    return augmenter is not None and any(isinstance(x, LABEL_MIXING) for x in augmenter.layers)


class _SeedsFrom(keras.random.SeedGenerator):
    """A SeedGenerator that derives every draw from one seed tensor instead of a variable.

    Keras layers draw their random numbers through a SeedGenerator, whose state is a variable the
    layer reads and assigns at every call. Inside tf.data that variable makes the augment map
    stateful: calls running in parallel race on it, and under op determinism
    (`train.deterministic`) tf.data makes the whole pipeline sequential and drops its prefetch.
    Seeds computed from the batch's position keep the same layers stateless.
    """

    def __init__(self, seed: tf.Tensor, layer_index: int):  # no state variable: no super().__init__
        self._seed = tf.random.experimental.stateless_fold_in(seed, layer_index)
        self._draws = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        # A new seed per draw: a layer that draws twice (zoom: height, width) gets two streams.
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


# Layers that move pixels through one projective transform each; consecutive ones are fused.
SPATIAL_LAYERS = (
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomTranslation,
)


def augment_batch(
    augmenter: keras.Sequential,
    images: tf.Tensor,
    seed: tf.Tensor | None,
    labels: tf.Tensor | None = None,
):
    """`augmenter(images, training=True)` with every random draw derived from `seed` (int [2]).

    The same (batch, seed) always gives the same output, whatever order or thread tf.data runs
    batches in; the input pipeline gives each batch its own seed. With `seed=None` the layers
    draw from their own seed generators, as a plain Keras call does. Consecutive rotation, zoom
    and translation layers are applied as one composed transform: one resampling pass instead
    of one per layer (each pass costs as much as the decode), and one interpolation blur fewer.

    With `labels` (int class ids), returns (images, targets): one-hot targets, mixed by MixUp
    and CutMix like the images, when a layer mixes labels, else the labels as they came.
    """
    if labels is not None and mixes_labels(augmenter):
        labels = tf.one_hot(labels, augmenter.num_classes)
    pending: list[tuple[keras.Layer, tf.Tensor]] = []  # spatial layers not yet applied
    for index, layer in enumerate(augmenter.layers):
        draws = _SeedsFrom(seed, index) if seed is not None else layer.generator
        # Only label mixers take the labels: some layers (RandomGrayscale) read `data.shape`.
        mixing = labels is not None and isinstance(layer, LABEL_MIXING)
        data = {"images": images, "labels": labels} if mixing else images
        with _drawing_from(layer, draws):
            transformation = layer.get_random_transformation(data, training=True, seed=draws)
            if isinstance(layer, SPATIAL_LAYERS):
                if pending and not _same_sampling(pending[0][0], layer):
                    images = _apply_spatial(pending, images)
                    pending = []
                pending.append((layer, _matrix(layer, transformation, images)))
                continue
            if pending:
                images = _apply_spatial(pending, images)
                pending = []
            if isinstance(layer, keras.layers.RandomFlip):
                images = _flip(layer, transformation, images)
            else:
                images = layer.transform_images(images, transformation, training=True)
            if mixing:
                labels = layer.transform_labels(labels, transformation, training=True)
    if pending:
        images = _apply_spatial(pending, images)
    return images if labels is None else (images, labels)


@contextlib.contextmanager
def _drawing_from(layer: keras.Layer, draws: keras.random.SeedGenerator):
    """Makes `layer` draw from `draws` even where Keras ignores the `seed` argument: RandAugment
    and RandomColorJitter (and their inner layers) ask the layer's own generator."""
    own = layer.generator
    # object.__setattr__: Keras would otherwise track the stand-in as a new layer variable.
    object.__setattr__(layer, "generator", draws)
    try:
        yield
    finally:
        object.__setattr__(layer, "generator", own)


def _flip(layer: keras.layers.RandomFlip, transformation: dict, images: tf.Tensor) -> tf.Tensor:
    """What RandomFlip.transform_images returns, from the same draws, about 2x faster on CPU:
    Keras selects between the batch and its mirror with a where() broadcast over every pixel;
    gathering each image's columns (and rows) in flipped or kept order is one pass."""
    flips = tf.reshape(transformation["flips"], [-1])
    images = tf.cast(images, layer.compute_dtype)
    horizontal, vertical = (2, 1) if layer.data_format == "channels_last" else (3, 2)
    for axis, mode in ((horizontal, keras_flip.HORIZONTAL), (vertical, keras_flip.VERTICAL)):
        if layer.mode not in (mode, keras_flip.HORIZONTAL_AND_VERTICAL):
            continue
        size = tf.shape(images)[axis]
        kept, mirrored = tf.range(size), tf.range(size - 1, -1, -1)
        order = tf.where(flips[:, tf.newaxis], mirrored[tf.newaxis], kept[tf.newaxis])
        images = tf.gather(images, order, axis=axis, batch_dims=1)
    return images


def _same_sampling(first: keras.Layer, other: keras.Layer) -> bool:
    return all(
        getattr(first, name) == getattr(other, name)
        for name in ("fill_mode", "interpolation", "fill_value", "data_format")
    )


def _matrix(layer: keras.Layer, transformation: dict, images: tf.Tensor) -> tf.Tensor:
    """The layer's [batch, 8] projective transform (output pixel -> input pixel), as it builds
    it for `affine_transform`."""
    if isinstance(layer, keras.layers.RandomRotation):
        return transformation["rotation_matrix"]
    if isinstance(layer, keras.layers.RandomZoom):
        zooms = tf.cast(
            tf.concat([transformation["width_zoom"], transformation["height_zoom"]], axis=1),
            tf.float32,
        )
        height, width = (1, 2) if layer.data_format == "channels_last" else (2, 3)
        shape = tf.shape(images)
        return layer._get_zoom_matrix(zooms, shape[height], shape[width])
    return layer._get_translation_matrix(transformation["translations"])


def _apply_spatial(pending: list[tuple[keras.Layer, tf.Tensor]], images: tf.Tensor) -> tf.Tensor:
    """Applies the layers' transforms in order as one: a later layer's output pixel p reads the
    earlier output at M_later p, which reads the input at M_earlier M_later p."""
    first = pending[0][0]
    composed = None
    for _, matrix in pending:
        square = tf.reshape(
            tf.concat([tf.cast(matrix, tf.float32), tf.ones_like(matrix[:, :1], tf.float32)], 1),
            (-1, 3, 3),
        )
        composed = square if composed is None else tf.matmul(composed, square)
    composed = tf.reshape(composed, (-1, 9))[:, :8]
    return keras.ops.image.affine_transform(
        tf.cast(images, first.compute_dtype),
        composed,
        interpolation=first.interpolation,
        fill_mode=first.fill_mode,
        fill_value=first.fill_value,
        data_format=first.data_format,
    )
