"""Training-only augmentation built from config as Keras preprocessing layers."""

import keras
import tensorflow as tf

from configs import schema

# Keyed like configs.schema.AUGMENT_LAYER_SPECS; a test keeps the two registries in step.
AUGMENT_LAYERS = {
    "random_flip": keras.layers.RandomFlip,
    "random_rotation": keras.layers.RandomRotation,
    "random_zoom": keras.layers.RandomZoom,
    "random_translation": keras.layers.RandomTranslation,
    "random_contrast": keras.layers.RandomContrast,
    "random_brightness": keras.layers.RandomBrightness,
}


def build_augmenter(cfg: schema.AugmentConfig, seed: int) -> keras.Sequential | None:
    """A Sequential of the configured layers, or None when no augmentation is declared.

    Layers get distinct seeds derived from `seed` so that runs repeat but layers don't correlate.
    Inputs are float images in [0, 1]; brightness and contrast keep that range.
    """
    if not cfg.layers:
        return None
    layers = []
    for index, spec in enumerate(cfg.layers):
        ((name, kwargs),) = spec.items()
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if name == "random_brightness":
            kwargs["value_range"] = (0.0, 1.0)
        if name == "random_contrast":
            kwargs["value_range"] = (0.0, 1.0)
        if name in ("random_rotation", "random_zoom", "random_translation"):
            kwargs.setdefault("fill_mode", "nearest")
        layers.append(AUGMENT_LAYERS[name](**kwargs, seed=seed + index))
    return keras.Sequential(layers, name="augment")


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


def augment_batch(augmenter: keras.Sequential, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`augmenter(images, training=True)` with every random draw derived from `seed` (int [2]).

    The same (batch, seed) always gives the same output, whatever order or thread tf.data runs
    batches in; the input pipeline gives each batch its own seed. Consecutive rotation, zoom and
    translation layers are applied as one composed transform: one resampling pass instead of
    one per layer (each pass costs as much as the decode), and one interpolation blur fewer.
    """
    pending: list[tuple[keras.Layer, tf.Tensor]] = []  # spatial layers not yet applied
    for index, layer in enumerate(augmenter.layers):
        transformation = layer.get_random_transformation(
            images, training=True, seed=_SeedsFrom(seed, index)
        )
        if isinstance(layer, SPATIAL_LAYERS):
            if pending and not _same_sampling(pending[0][0], layer):
                images = _apply_spatial(pending, images)
                pending = []
            pending.append((layer, _matrix(layer, transformation, images)))
            continue
        if pending:
            images = _apply_spatial(pending, images)
            pending = []
        images = layer.transform_images(images, transformation, training=True)
    return _apply_spatial(pending, images) if pending else images


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
