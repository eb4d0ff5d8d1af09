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


def augment_batch(augmenter: keras.Sequential, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`augmenter(images, training=True)` with every random draw derived from `seed` (int [2]).

    The same (batch, seed) always gives the same output, whatever order or thread tf.data runs
    batches in; the input pipeline gives each batch its own seed.
    """
    for index, layer in enumerate(augmenter.layers):
        transformation = layer.get_random_transformation(
            images, training=True, seed=_SeedsFrom(seed, index)
        )
        images = layer.transform_images(images, transformation, training=True)
    return images
