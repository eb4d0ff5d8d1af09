"""Training-only augmentation built from config as Keras preprocessing layers."""

import keras

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
