"""augment: training-only augmentation, the random-resized crop and Keras preprocessing
layers checked by building them."""

import difflib
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from configs.schema.base import Section

# Training augmentation: YAML name -> the keras.layers class it builds. Every keyword argument of
# the class may be given; the layer itself checks them when the config loads (a test keeps this
# registry in step with transforms/augment.py).
AUGMENT_LAYER_CLASSES = {
    "random_flip": "RandomFlip",
    "random_rotation": "RandomRotation",
    "random_zoom": "RandomZoom",
    "random_translation": "RandomTranslation",
    "random_shear": "RandomShear",
    "random_contrast": "RandomContrast",
    "random_brightness": "RandomBrightness",
    "random_color_jitter": "RandomColorJitter",
    "random_hue": "RandomHue",
    "random_saturation": "RandomSaturation",
    "random_sharpness": "RandomSharpness",
    "random_grayscale": "RandomGrayscale",
    "random_gaussian_blur": "RandomGaussianBlur",
    "random_erasing": "RandomErasing",
    "rand_augment": "RandAugment",
    "mix_up": "MixUp",
    "cut_mix": "CutMix",
}
# Layers that mix two images of a batch, and so their labels: training targets become soft.
LABEL_MIXING_LAYERS = ("mix_up", "cut_mix")
# Keyword arguments imgclf sets itself: images are float in [0, 1], seeds come from `seed`.
AUGMENT_FIXED_KWARGS = ("seed", "data_format", "name", "dtype")
# Values Keras accepts without a word and then ignores (RandomFlip(mode="diagonal") never flips).
AUGMENT_CHOICES = {("random_flip", "mode"): ("horizontal", "vertical", "horizontal_and_vertical")}


def validate_augment_layers(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Checks `[{name: {kwargs}}, ...]` by building each Keras layer (imported only when layers
    are given); returns the list with the kwargs imgclf adds (value_range) filled in."""
    validated = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict) or len(layer) != 1:
            raise ValueError(
                f"item {index} must be a mapping with exactly one layer name, e.g. "
                f"`- random_flip: {{mode: horizontal}}` (received {layer!r})"
            )
        ((name, kwargs),) = layer.items()
        if name not in AUGMENT_LAYER_CLASSES:
            close = difflib.get_close_matches(str(name), AUGMENT_LAYER_CLASSES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"item {index}: unknown layer {name!r}{hint}; accepted: "
                f"{', '.join(AUGMENT_LAYER_CLASSES)}"
            )
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise ValueError(
                f"[{index}].{name}: takes a mapping of keyword arguments (received {kwargs!r})"
            )
        fixed = sorted(set(kwargs) & set(AUGMENT_FIXED_KWARGS))
        if fixed:
            raise ValueError(
                f"[{index}].{name}.{fixed[0]}: set by imgclf (seeds derive from the top-level "
                "seed; images are channels_last float32); remove it"
            )
        validated.append({name: augment_layer_kwargs(index, name, kwargs)})
    return validated


def keras_error_reason(error: Exception) -> str:
    """The reason in a Keras call error, without its colour codes, graph-node names, op name
    and the arguments it echoes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    text = re.sub(r"Exception encountered when calling \S+\.", "", text)
    text = re.split(r"\[Op:|Arguments received", text)[0]
    return " ".join(text.split())[:300]


def augment_layer_kwargs(index: int, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    import inspect

    import keras

    layer_class = getattr(keras.layers, AUGMENT_LAYER_CLASSES[name])
    accepted = [
        p for p in inspect.signature(layer_class.__init__).parameters if p not in ("self", "kwargs")
    ]
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        settable = [p for p in accepted if p not in AUGMENT_FIXED_KWARGS]
        close = difflib.get_close_matches(str(unknown[0]), settable, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"[{index}].{name}.{unknown[0]}: not a keyword argument of keras.layers."
            f"{layer_class.__name__}{hint}; it takes {', '.join(settable)}"
        )
    for key, value in kwargs.items():
        choices = AUGMENT_CHOICES.get((name, key))
        if choices and value not in choices:
            raise ValueError(
                f"[{index}].{name}.{key}: must be one of {', '.join(choices)} (received {value!r})"
            )
    full = dict(kwargs)
    if "value_range" in accepted:
        # Images reach augmentation as float32 in [0, 1], not Keras' default 0-255.
        full.setdefault("value_range", [0.0, 1.0])
    try:
        layer_class(**full)
    except Exception as error:  # Keras raises ValueError, TypeError or NotImplementedError
        raise ValueError(
            f"[{index}].{name}: keras.layers.{layer_class.__name__} refused {kwargs}: "
            f"{keras_error_reason(error)}"
        ) from None
    return full


class RandomResizedCropConfig(Section):
    """Inception-style random-resized crop at decode time (tf.image.sample_distorted_bounding_box;
    JPEGs decode only the crop): training only, replacing the resize of data.resize."""

    scale: tuple[float, float] = Field(
        (0.08, 1.0), description="[min, max] fraction of the image area a crop covers."
    )
    ratio: tuple[float, float] = Field(
        (0.75, 4 / 3), description="[min, max] aspect ratio (width / height) of a crop."
    )
    attempts: int = Field(
        10, ge=1, description="Tries to find a crop within scale and ratio; then the centre."
    )

    @model_validator(mode="after")
    def _ordered_ranges(self):
        for key in ("scale", "ratio"):
            low, high = getattr(self, key)
            if not 0 < low <= high:
                raise ValueError(f"{key} needs 0 < min <= max (received [{low}, {high}])")
        if self.scale[1] > 1:
            raise ValueError(f"scale max must be <= 1 (received {self.scale[1]})")
        return self


class AugmentConfig(Section):
    random_resized_crop: RandomResizedCropConfig | None = Field(
        None,
        description="Training crops of random area and aspect ratio, resized to image_size "
        "({} for Inception's scale [0.08, 1], ratio [3/4, 4/3]); null = data.resize.",
    )
    layers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Training-only Keras preprocessing layers with any of their keyword "
        "arguments, e.g. `- random_rotation: {factor: 0.05, fill_mode: reflect}`; Keras' own "
        "defaults apply, value_range is [0, 1]. Accepted: "
        f"{', '.join(AUGMENT_LAYER_CLASSES)}.",
    )

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, layers):
        return validate_augment_layers(layers)

    def mixes_labels(self) -> bool:
        """True when a layer mixes images, so training targets are soft (one-hot mixtures)."""
        return any(next(iter(layer)) in LABEL_MIXING_LAYERS for layer in self.layers)
