"""The typed configuration: every field with its default, its bounds and a description."""

import builtins
import difflib
import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from core import locations


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


# A setting used as a local path (or, where it says so, a bucket URL); file:// is stripped.
PathSetting = Annotated[str, BeforeValidator(locations.without_file_scheme)]


def local_folder(path: str, fix: str) -> str:
    if locations.is_url(path):
        raise ValueError(f"needs a local (or mounted) path, not a URL (received {path}): {fix}")
    return path


# --- layer specs declared in YAML as a list of one-key mappings: `- conv: {filters: 32}` ---


class ConvSpec(Section):
    filters: int = Field(gt=0, description="Number of output channels.")
    kernel_size: int = Field(3, gt=0, description="Square kernel side.")
    strides: int = Field(1, gt=0, description="Square stride.")
    activation: str = Field("relu", description="Any keras.activations name.")
    padding: Literal["same", "valid"] = "same"


class PoolSpec(Section):
    pool_size: int = Field(2, gt=0, description="Square pooling window.")


class BatchNormSpec(Section):
    momentum: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Moving-statistics momentum; null = model.batch_norm_momentum.",
    )


class ResidualSpec(Section):
    """A ResNet basic block: conv-BN-act, conv-BN, plus the input (1x1 conv-BN when the shape
    changes), then the activation."""

    filters: int = Field(gt=0, description="Output channels of both convolutions.")
    kernel_size: int = Field(3, gt=0, description="Square kernel side.")
    strides: int = Field(1, gt=0, description="Stride of the first convolution (2 halves the map).")
    activation: str = Field("relu", description="Any keras.activations name.")


class DropoutSpec(Section):
    rate: float = Field(ge=0, lt=1, description="Fraction of units dropped in training.")


CNN_LAYER_SPECS: dict[str, type[Section]] = {
    "conv": ConvSpec,
    "max_pool": PoolSpec,
    "avg_pool": PoolSpec,
    "batch_norm": BatchNormSpec,
    "dropout": DropoutSpec,
    "residual": ResidualSpec,
}


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


# keras.applications backbones trainer/models.py builds (a test keeps the two in step), with the
# smallest image side each accepts.
BACKBONE_MIN_SIDE = {
    "mobilenet_v2": 32,
    "mobilenet_v3_small": 32,
    "mobilenet_v3_large": 32,
    **{f"efficientnet_b{n}": 32 for n in range(8)},
    **{f"efficientnet_v2_b{n}": 32 for n in range(4)},
    "efficientnet_v2_s": 32,
    "resnet50": 32,
    "resnet101": 32,
    "resnet152": 32,
    "resnet50_v2": 32,
    "resnet101_v2": 32,
    "resnet152_v2": 32,
    "vgg16": 32,
    "vgg19": 32,
    "densenet121": 32,
    "xception": 71,
    "convnext_tiny": 32,
}
BACKBONE_NAMES = tuple(BACKBONE_MIN_SIDE)


def validate_layer_list(layers: list[dict[str, Any]], specs: dict[str, type[Section]]):
    """Checks `[{name: {kwargs}}, ...]` against `specs` and returns it with defaults filled in."""
    validated = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict) or len(layer) != 1:
            raise ValueError(
                f"item {index} must be a mapping with exactly one layer name, e.g. "
                f"`- {next(iter(specs))}: {{...}}` (received {layer!r})"
            )
        ((name, kwargs),) = layer.items()
        if name not in specs:
            raise ValueError(f"item {index}: unknown layer {name!r}; accepted: {', '.join(specs)}")
        try:
            spec = specs[name].model_validate(kwargs or {})
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"[{index}].{name}.{'.'.join(map(str, e['loc']))}: {e['msg']} "
                f"(received {e.get('input')!r})"
                for e in error.errors()
            )
            raise ValueError(problems) from None
        validated.append({name: spec.model_dump()})
    return validated


# --- sections ---


class SplitConfig(Section):
    train: float = Field(0.8, gt=0, le=1, description="Fraction of unique images for training.")
    val: float = Field(0.1, ge=0, lt=1, description="Fraction for validation (early stopping).")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction held out for the final report.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + val + test must sum to 1 (received {self.train} + {self.val} + "
                f"{self.test} = {total:g})"
            )
        return self


class StoreConfig(Section):
    max_side: int | None = Field(
        None, gt=0, description="Images with a longer side are downscaled to it; null = never."
    )
    format: Literal["png", "jpeg"] = Field(
        "png", description="Encoding of images ingest rewrites (png is lossless, jpeg smaller)."
    )
    jpeg_quality: int = Field(95, ge=50, le=100, description="Quality when format is jpeg.")


class DataConfig(Section):
    source: str = Field(
        "data/digits",
        description="Where ingest reads images: a class-folder tree (optionally under "
        "train/ val/ test/), a .csv or .jsonl manifest, s3://, gs://, http(s):// (image, "
        "manifest, .zip or .tar.gz), or tfds:<name>[:<split>].",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for remote sources, e.g. {endpoint_url: http://127.0.0.1:9000}.",
    )
    read_retries: int = Field(3, ge=0, description="Retries of a failed remote read.")
    retry_backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each time.")
    read_timeout_s: float = Field(60.0, gt=0, description="Timeout of one remote read.")
    classes: list[str] | None = Field(
        None, description="Allowed class names; a label outside them is an error. null = any."
    )
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB that transparent pixels are composited on."
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    leakage: Literal["keep_eval", "drop", "error"] = Field(
        "keep_eval",
        description="Same bytes in two given splits: keep the val/test copy, drop all, or stop.",
    )
    output_dir: PathSetting = Field(
        "data/tfrecords",
        description="Ingest writes <output_dir>/<dataset_version>/ here: a local folder or gs:// "
        "(training reads it with TensorFlow, whose file system has no s3:// in TF 2.21).",
    )

    @field_validator("output_dir")
    @classmethod
    def _tensorflow_can_reach_output_dir(cls, output_dir: str) -> str:
        scheme = locations.scheme_of(output_dir)
        if scheme is not None and scheme not in locations.TF_SCHEMES:
            raise ValueError(
                f"{scheme}:// is not readable by TensorFlow 2.21, which has no {scheme}:// file "
                f"system (received {output_dir}); use a local folder or gs://"
            )
        return output_dir

    version: str = Field(
        "latest", description="Dataset version to train on; 'latest' is the last ingested."
    )
    image_size: tuple[int, int] = Field(
        (32, 32), description="Model input (height, width); images are resized to it."
    )
    resize: Literal["crop", "stretch"] = Field(
        "crop",
        description="How evaluation and serving (and training without random_resized_crop) fit "
        "an image to image_size: crop = scale the shorter side to image_size / crop_fraction "
        "keeping the aspect ratio, then take the centre (timm, Ultralytics); stretch = scale "
        "each side to image_size, distorting the aspect ratio.",
    )
    crop_fraction: float = Field(
        1.0,
        gt=0.05,
        le=1,
        description="crop: the centre fraction of the resized image kept (timm's crop_pct; "
        "0.875 is ImageNet practice with random_resized_crop training, 1.0 keeps the whole "
        "shorter side).",
    )
    channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB model input.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    examples_per_shard: int = Field(1024, gt=0, description="TFRecord shard size.")
    max_pixels: int = Field(
        40_000_000, gt=0, description="Images larger than this are quarantined (bombs)."
    )
    batch_size: int = Field(64, gt=0, description="Global batch size.")
    shuffle_buffer: int = Field(2048, ge=0, description="Training shuffle buffer (examples).")
    beam_runner: str = Field("DirectRunner", description="Apache Beam runner for ingest.")
    beam_direct_mode: Literal["multi_processing", "in_memory", "multi_threading"] = Field(
        "multi_processing", description="DirectRunner mode; multi_processing uses every core."
    )
    beam_workers: int = Field(0, ge=0, description="DirectRunner workers; 0 = one per core.")
    beam_options: list[str] = Field(
        default_factory=list,
        description="Extra Beam pipeline options, e.g. --direct_num_workers=2.",
    )

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size):
        if min(size) <= 0:
            raise ValueError(f"both sides must be > 0 (received {list(size)})")
        return size

    @field_validator("background")
    @classmethod
    def _byte_values(cls, rgb):
        if not all(0 <= value <= 255 for value in rgb):
            raise ValueError(f"each of R, G, B must be in 0..255 (received {list(rgb)})")
        return rgb


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


class HeadConfig(Section):
    pooling: Literal["avg", "max", "flatten"] = Field("avg", description="Feature map reduction.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the classifier.")


DEFAULT_CNN = [
    {"conv": {"filters": 32}},
    {"max_pool": {}},
    {"conv": {"filters": 64}},
    {"max_pool": {}},
]


class ModelConfig(Section):
    backbone: Literal[("cnn", "custom") + BACKBONE_NAMES] = Field(
        "cnn",
        description="'cnn' (layers from model.cnn), 'custom' (model.build_fn) or a "
        "keras.applications backbone.",
    )
    build_fn: str | None = Field(
        None,
        description="backbone custom: 'package.module:function' or 'path/to/file.py:function', "
        "a function (input_shape, num_classes) -> keras.Model from float32 images in [0, 1] "
        "to class probabilities (softmax).",
    )
    weights: str | None = Field(
        None, description="Backbone weights: null (random init), 'imagenet', or a weights file."
    )
    weights_mirror: str | None = Field(
        None,
        description="Base URL standing for Keras' keras-applications/ folder (same relative "
        "paths) that imagenet weights download from, for clusters without internet; null = "
        "$IMGCLF_WEIGHTS_MIRROR, else Keras' own storage.googleapis.com origin.",
    )
    batch_norm_momentum: float | Literal["auto", "keep"] = Field(
        "auto",
        description="Momentum of every BatchNorm layer's moving statistics (a batch_norm spec's "
        "own momentum wins): auto = from steps per epoch, clip(1 - 2 / steps, 0.9, 0.99), so "
        "small datasets don't evaluate with stale statistics; keep = each layer's own "
        "(keras.applications use 0.999); or a number.",
    )

    @field_validator("batch_norm_momentum")
    @classmethod
    def _momentum_in_range(cls, momentum):
        if isinstance(momentum, float) and not 0 < momentum < 1:
            raise ValueError(f"must be in (0, 1), auto or keep (received {momentum})")
        return momentum

    cnn: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(layer) for layer in DEFAULT_CNN],
        description=f"Custom CNN layers in order. Accepted: {', '.join(CNN_LAYER_SPECS)}.",
    )
    head: HeadConfig = Field(default_factory=HeadConfig)

    @field_validator("cnn")
    @classmethod
    def _known_layers(cls, layers):
        return validate_layer_list(layers, CNN_LAYER_SPECS)

    @model_validator(mode="after")
    def _build_fn_with_custom(self):
        if self.backbone == "custom" and not self.build_fn:
            raise ValueError(
                "model.backbone custom needs model.build_fn: 'package.module:function' or "
                "'path/to/file.py:function'"
            )
        if self.build_fn and self.backbone != "custom":
            raise ValueError(
                f"model.build_fn is used with model.backbone: custom (received backbone "
                f"{self.backbone!r}); set backbone: custom or remove build_fn"
            )
        if self.backbone == "custom" and self.weights is not None:
            raise ValueError(
                "model.weights applies to cnn and keras.applications backbones; a custom "
                "build_fn loads its own weights (received model.weights "
                f"{self.weights!r})"
            )
        if self.build_fn and ":" not in self.build_fn.lstrip("/"):
            raise ValueError(
                f"model.build_fn must name module and function as 'module:function' "
                f"(received {self.build_fn!r})"
            )
        return self


# history.csv columns whose better direction is known; val_<name> of each train.metrics entry
# is a column too, and needs its direction stated.
METRIC_DIRECTIONS = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}


class MonitoredMetric(Section):
    """A history.csv column a training run watches, and which way is better."""

    monitor: str = Field("val_loss", description="Metric watched, e.g. val_loss, val_accuracy.")
    direction: Literal["max", "min"] | None = Field(
        None,
        description="max or min: whether a higher monitor value is better; null = the metric's "
        "natural one (needed for train.metrics entries).",
    )

    def minimizes(self) -> bool:
        return (self.direction or METRIC_DIRECTIONS[self.monitor]) == "min"


class PlateauConfig(MonitoredMetric):
    patience: int = Field(2, ge=0, description="Epochs without improvement before a decay.")
    min_learning_rate: float = Field(0.0, ge=0, description="The rate never drops below this.")


class OptimizerConfig(Section):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Optimizer.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(
        0.0, ge=0, description="Decoupled weight decay (AdamW's; applied by every optimizer)."
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum of sgd and rmsprop.")
    nesterov: bool = Field(False, description="Nesterov momentum for sgd.")
    schedule: Literal["cosine", "constant", "step", "exponential", "plateau"] = Field(
        "cosine",
        description="Learning-rate schedule over the run; plateau = constant, multiplied by "
        "decay_rate whenever plateau.monitor stops improving.",
    )
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up before the schedule.")
    decay_rate: float = Field(
        0.1,
        gt=0,
        le=1,
        description="step: factor every step_epochs; exponential: per epoch; plateau: per plateau.",
    )
    step_epochs: int = Field(10, gt=0, description="Epochs between step-schedule decays.")
    plateau: PlateauConfig = Field(default_factory=PlateauConfig)

    @model_validator(mode="after")
    def _plateau_without_warmup(self):
        if self.schedule == "plateau" and self.warmup_epochs:
            raise ValueError(
                "optimizer.warmup_epochs is not supported with schedule: plateau "
                "(use schedule: cosine for warm-up, or set warmup_epochs: 0)"
            )
        return self


# Schedules whose learning rate falls to its end on a fixed plan: the run's length is part of
# the schedule, and an early stop ends it before the rate has come down.
DECAYING_SCHEDULES = ("cosine", "step", "exponential")


class EarlyStoppingConfig(MonitoredMetric):
    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="auto = off when optimizer.schedule decays on a fixed plan (cosine, step, "
        "exponential: stopping early would skip the low-rate epochs that make the model, and a "
        "small validation set is too noisy to judge mid-run), on for constant and plateau.",
    )
    patience: int = Field(5, ge=0, description="Epochs without improvement before stopping.")
    restore_best_weights: bool = Field(
        True, description="When early stopping is on: end with the best epoch's weights."
    )

    def active(self, schedule: str) -> bool:
        """Whether early stopping (and best-epoch restore) runs under `schedule`."""
        if self.enabled == "auto":
            return schedule not in DECAYING_SCHEDULES
        return self.enabled


class FineTuneConfig(Section):
    head_epochs: int = Field(
        0,
        ge=0,
        description="Phase 1: epochs that train only the head, backbone frozen (0 = no phase 1).",
    )
    unfreeze_top_layers: int | None = Field(
        None, gt=0, description="Phase 2 trains only the backbone's last N layers (null = all)."
    )
    unfreeze_from_layer: str | None = Field(
        None, description="Phase 2 trains the backbone from this named layer to its top."
    )
    learning_rate_factor: float = Field(
        0.1, gt=0, le=1, description="Phase 2 learning rate = optimizer.learning_rate x this."
    )
    freeze_batch_norm: bool = Field(
        True, description="BatchNorm layers stay frozen, in inference mode, in phase 2."
    )

    @property
    def enabled(self) -> bool:
        """Fine-tuning is on when any phase setting is given; otherwise every layer trains."""
        return bool(self.head_epochs or self.unfreeze_top_layers or self.unfreeze_from_layer)

    @model_validator(mode="after")
    def _one_unfreeze_point(self):
        if self.unfreeze_top_layers and self.unfreeze_from_layer:
            raise ValueError(
                "set only one of train.fine_tune.unfreeze_top_layers and unfreeze_from_layer"
            )
        return self


# trainer/losses.py LOSSES (a test keeps the two in step); other names come from custom_objects.
BUILTIN_LOSSES = ("categorical_crossentropy", "focal")
FOCAL_FIELDS = ("gamma", "alpha")
# history.csv columns a train.metrics entry would clash with as val_<name>.
RESERVED_METRICS = ("loss", "accuracy", "learning_rate")


class LossConfig(Section):
    """The per-example training loss; train.class_weights and global-batch averaging apply on
    top, and validation reports the same loss."""

    name: str = Field(
        "categorical_crossentropy",
        min_length=1,
        description=f"{', '.join(BUILTIN_LOSSES)}, or a name in the LOSSES dict of "
        "train.custom_objects.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Built-in losses: targets become (1 - e) x one-hot + e / classes.",
    )
    gamma: float = Field(
        2.0,
        ge=0,
        description="focal: the factor (1 - p)^gamma down-weights well-classified examples; "
        "0 = cross-entropy (times alpha).",
    )
    alpha: float | list[float] = Field(
        0.25,
        description="focal: weight of every class (a number, Keras' default 0.25) or one per "
        "class in label order (a list).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of a custom loss: its class's constructor or its "
        "function's extra parameters.",
    )

    @field_validator("alpha")
    @classmethod
    def _non_negative_alpha(cls, alpha):
        if min(alpha if isinstance(alpha, list) else [alpha], default=0) < 0:
            raise ValueError(f"alpha must be >= 0 (received {alpha})")
        if alpha == []:
            raise ValueError("alpha needs one value per class (received [])")
        return alpha

    @model_validator(mode="after")
    def _settings_of_the_named_loss(self):
        # By value, not by the keys given: a dumped config (config.yaml, best.yaml) has them all.
        changed = [
            f for f in FOCAL_FIELDS if getattr(self, f) != type(self).model_fields[f].default
        ]
        if self.name != "focal" and changed:
            field = changed[0]
            raise ValueError(
                f"train.loss.{field} applies to name: focal (received name: {self.name}); "
                f"remove it or set train.loss.name: focal"
            )
        builtin = self.name in BUILTIN_LOSSES
        if builtin and self.options:
            raise ValueError(
                f"train.loss.options are for a custom loss; {self.name} takes label_smoothing"
                f"{' and gamma, alpha' if self.name == 'focal' else ''} (received "
                f"{sorted(self.options)})"
            )
        if not builtin and self.label_smoothing:
            raise ValueError(
                f"train.loss.label_smoothing applies to the built-in losses; pass it to the "
                f"custom loss {self.name!r} in train.loss.options"
            )
        return self


class ClassBalanceConfig(Section):
    """Class weights computed from the class counts of the training split."""

    scheme: Literal["effective_number"] = Field(
        description="effective_number (Cui et al. 2019): weight (1 - beta) / (1 - beta^count), "
        "scaled so the class weights average 1."
    )
    beta: float = Field(
        0.999,
        ge=0,
        lt=1,
        description="0 weighs every class 1; towards 1 the weights approach inverse class "
        "frequency (0.9, 0.99, 0.999, 0.9999 are the paper's values).",
    )


def _class_weights_kind(value) -> str:
    if isinstance(value, str):
        return "auto"
    if isinstance(value, ClassBalanceConfig) or (isinstance(value, dict) and "scheme" in value):
        return "scheme"
    return "classes"


# The tag becomes part of an error's key path: train.class_weights.scheme.beta.
ClassWeights = Annotated[
    Annotated[Literal["auto"], Tag("auto")]
    | Annotated[ClassBalanceConfig, Tag("scheme")]
    | Annotated[dict[str, float], Tag("classes")],
    Discriminator(_class_weights_kind),
]


class EmaConfig(Section):
    """An exponential moving average of the weights (Keras optimizers' use_ema), used for
    validation, the best epoch and the final model."""

    enabled: bool = Field(False, description="Keep and use an EMA of the trainable weights.")
    momentum: float | Literal["auto"] = Field(
        "auto",
        description="Per-step decay; auto = clip(1 - 10 / total steps, 0.9, 0.9999), so the "
        "average spans about the last tenth of training (0.999 would still hold the random "
        "start after a small dataset's few hundred steps).",
    )

    @field_validator("momentum")
    @classmethod
    def _momentum_in_range(cls, momentum):
        if isinstance(momentum, float) and not 0 < momentum < 1:
            raise ValueError(f"must be in (0, 1) or auto (received {momentum})")
        return momentum


class TrainConfig(Section):
    epochs: int = Field(20, gt=0, description="Maximum number of epochs.")
    runs_dir: PathSetting = Field("runs", description="Each run writes runs_dir/<run_id>/.")
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Run folder name; null = a new timestamped id. An existing run resumes.",
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = Field(
        "auto",
        description="tf.distribute strategy: auto = multi_worker when TF_CONFIG names several "
        "workers, mirrored with several GPUs, else none.",
    )
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "auto", description="auto = mixed_float16 on GPUs, float32 on CPUs."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches summed per optimizer step (batch = N x micro-batch)."
    )
    loss: LossConfig = Field(default_factory=LossConfig)
    class_weights: ClassWeights | None = Field(
        None,
        description="Loss weight per class: null (all 1), auto (total / (classes x count), from "
        "the training split), {class name: weight} (others 1) or {scheme: effective_number, "
        "beta: 0.999}.",
    )
    custom_objects: str | None = Field(
        None,
        description="A module path (my_package.losses) or .py file whose LOSSES and METRICS "
        "dicts name the custom losses and metrics train.loss.name and train.metrics use; "
        "training-only, the exported model does not need it.",
    )
    metrics: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list,
        description="Extra metrics computed on the validation split each epoch, as val_<name> "
        "in history.csv: names in the METRICS dict of train.custom_objects.",
    )
    clip_global_norm: float | None = Field(
        None, gt=0, description="Clip gradients to this global norm; null = no clipping."
    )
    clip_norm: float | None = Field(
        None, gt=0, description="Clip each gradient tensor to this norm; null = no clipping."
    )
    fine_tune: FineTuneConfig = Field(default_factory=FineTuneConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    deterministic: bool = Field(
        False, description="TF op determinism: repeat runs give identical results (slower)."
    )
    checkpoint_every_steps: int | None = Field(
        None, gt=0, description="Also checkpoint every N optimizer steps (always every epoch)."
    )
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept (the newest).")

    @model_validator(mode="before")
    @classmethod
    def _label_smoothing_moved_to_loss(cls, raw):
        """train.label_smoothing, from before train.loss existed, still loads."""
        if not isinstance(raw, dict) or "label_smoothing" not in raw:
            return raw
        raw = dict(raw)
        smoothing = raw.pop("label_smoothing")
        loss = raw.get("loss") or {}
        if isinstance(loss, dict):
            if "label_smoothing" in loss and loss["label_smoothing"] != smoothing:
                raise ValueError(
                    f"train.label_smoothing ({smoothing}) and train.loss.label_smoothing "
                    f"({loss['label_smoothing']}) disagree; keep only train.loss.label_smoothing"
                )
            raw["loss"] = {**loss, "label_smoothing": smoothing}
        return raw

    @model_validator(mode="after")
    def _custom_names_need_their_module(self):
        needed = (
            [f"train.loss.name {self.loss.name!r}"] if self.loss.name not in BUILTIN_LOSSES else []
        )
        needed += [f"train.metrics {name!r}" for name in self.metrics]
        if needed and self.custom_objects is None:
            raise ValueError(
                f"{needed[0]} is not built in (losses: {', '.join(BUILTIN_LOSSES)}); set "
                "train.custom_objects to the module or .py file whose LOSSES / METRICS dict "
                "defines it"
            )
        clashing = [name for name in self.metrics if name in RESERVED_METRICS]
        if clashing:
            raise ValueError(
                f"train.metrics: {clashing[0]!r} clashes with the history column "
                f"val_{clashing[0]}; give the metric another name in METRICS"
            )
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"train.metrics names a metric twice (received {self.metrics})")
        return self

    input_bound_warning: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Warn once per epoch when waiting for input takes more than this fraction "
        "of step time (1 = never).",
    )


Fraction = Annotated[float, Field(ge=0, le=1)]


class GateConfig(Section):
    """When a model is blessed: it must beat always answering the majority class, must not be
    worse than the baseline when one exists, and every threshold set here must hold."""

    majority_margin: Fraction = Field(
        0.1,
        description="Always checked: the model must close this fraction of the gap between the "
        "majority-class rate of the evaluated images and perfect accuracy (0.1 with 4 balanced "
        "classes: accuracy >= 0.325), and beat that rate at 1% significance (one-sided "
        "binomial test).",
    )
    min_accuracy: Fraction | None = Field(None, description="Lowest test accuracy blessed.")
    min_macro_f1: Fraction | None = Field(None, description="Lowest macro F1 blessed.")
    min_class_recall: Fraction | None = Field(
        None, description="Recall floor every class must reach."
    )
    class_recall_floors: dict[str, Fraction] = Field(
        default_factory=dict, description="Per-class recall floors, e.g. {cat: 0.9}."
    )
    baseline: str | None = Field(
        "auto",
        description="Model to compare with on the same images: a run, export or SavedModel "
        "folder, 'registry:<model>@<label>' in registry.store, auto = "
        "registry:<pipeline.push.model or serving.model_name>@production when it exists, or "
        "null. Without max_*_drop thresholds a baseline's accuracy must not drop.",
    )
    max_accuracy_drop: Fraction | None = Field(
        None, description="Largest accuracy drop vs. the baseline blessed (0 = no worse)."
    )
    max_macro_f1_drop: Fraction | None = Field(
        None, description="Largest macro-F1 drop vs. the baseline blessed."
    )
    max_class_recall_drop: Fraction | None = Field(
        None, description="Largest recall drop of any class vs. the baseline blessed."
    )

    @model_validator(mode="after")
    def _deltas_need_a_baseline(self):
        deltas = [
            name
            for name in ("max_accuracy_drop", "max_macro_f1_drop", "max_class_recall_drop")
            if getattr(self, name) is not None
        ]
        if deltas and self.baseline is None:
            raise ValueError(
                f"evaluation.gate.{deltas[0]} compares with a baseline: set "
                "evaluation.gate.baseline (a run folder or registry:<model>@production)"
            )
        return self


class EvaluationConfig(Section):
    top_k: list[Annotated[int, Field(ge=2)]] = Field(
        default_factory=lambda: [3, 5],
        description="Top-k accuracies reported (k below the number of classes).",
    )
    calibration_bins: int = Field(15, ge=2, le=100, description="Equal-width bins of the ECE.")
    most_confused: int = Field(10, ge=0, description="Most confused class pairs listed.")
    misclassified_images: int = Field(
        25, ge=0, description="Most confidently wrong test images shown in the report."
    )
    batch_size: int = Field(64, ge=1, description="Images per model call while evaluating.")
    tta: Literal["none", "flip"] = Field(
        "none",
        description="Test-time augmentation: flip = average the scores of each image and its "
        "horizontal mirror.",
    )
    gate: GateConfig = Field(default_factory=GateConfig)


class MlflowConfig(Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI (file:/path, sqlite:///db, http://...); unset = off."
    )
    experiment: str = Field("imgclf", description="MLflow experiment name.")
    log_model: bool = Field(True, description="Log the exported SavedModel as an artefact.")


class TrackingConfig(Section):
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)


class BatchingConfig(Section):
    """Server-side batching: concurrent requests to one model version share one model call."""

    enabled: bool = Field(
        False, description="Batch concurrent requests (TF Serving's --enable_batching)."
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most images in one model call.")
    batch_timeout_ms: float = Field(
        2.0, ge=0, le=10_000, description="Longest a request waits for others to fill a batch."
    )
    max_enqueued_batches: int = Field(
        16,
        ge=1,
        description="Requests waiting while a batch runs, in batches: up to this times "
        "max_batch_size requests queue; one beyond it gets 429 (gRPC RESOURCE_EXHAUSTED).",
    )


class RequestLogConfig(Section):
    """Sampled predictions (and optionally images) written as a dataset source for relabelling."""

    enabled: bool = Field(False, description="Write a sample of requests' predictions.")
    dir: str = Field(
        "request_log",
        description="Folder or bucket: <dir>/<model>/<version>/predictions/*.jsonl and, with "
        "log_images, images/<predicted class>/<sha256>.<ext> (an `imgclf ingest` source).",
    )
    sample_rate: float = Field(
        0.01, ge=0, le=1, description="Fraction of predict requests logged (all their images)."
    )
    log_images: bool = Field(
        False, description="Also write the images' bytes; off, only predictions are written."
    )
    top_k: int = Field(5, ge=1, description="Classes with scores logged per image.")


class MonitoringConfig(Section):
    """Prediction and input statistics per model version over fixed windows, for drift checks."""

    enabled: bool = Field(True, description="Record prediction and input statistics.")
    window_seconds: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="Length of a statistics window; closed windows are written.",
    )
    low_confidence_threshold: float = Field(
        0.5, ge=0, le=1, description="A top-1 probability below this counts as low confidence."
    )
    input_sample_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Fraction of images whose input statistics are computed, off the request "
        "path in a background thread that decodes them again: at 1.0 it competed with requests "
        "for the CPU (REST p50 10 -> 17 ms for MobileNetV2 on 2 cores).",
    )
    queue_size: int = Field(
        1024,
        ge=1,
        description="Requests whose sampled images wait for input statistics; beyond it their "
        "images are dropped and counted.",
    )
    dir: str | None = Field(
        None,
        description="Folder or bucket where each closed window is written as "
        "<dir>/<model>/<version>/windows/<start>-<id>.json, for `imgclf monitor drift "
        "--stats-dir`; null keeps them in memory only (`--server`).",
    )
    memory_windows: int = Field(
        288, ge=1, description="Closed windows per model version kept for the JSON route."
    )
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)


class ServingConfig(Section):
    model_name: str = Field(
        "model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Served name."
    )
    host: str = Field("127.0.0.1", description="Address the REST and gRPC servers bind.")
    port: int = Field(8501, ge=0, le=65535, description="REST port (0 = any free port).")
    grpc_port: int | None = Field(
        8500, ge=0, le=65535, description="gRPC port (0 = any free port, null = no gRPC)."
    )
    poll_seconds: float = Field(
        2.0,
        ge=0,
        description="How often model folders and models.config are rescanned (0 = never).",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body; larger ones get 413."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Longest a predict request may take; then 504 / DEADLINE_EXCEEDED."
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="Predict requests in progress at once; more get 429 / RESOURCE_EXHAUSTED.",
    )
    top_k: int = Field(5, ge=1, description="Classes returned per image by :classify-images.")
    runtime: Literal["auto", "savedmodel", "onnx"] = Field(
        "auto",
        description=(
            "What runs the model of serving_default and predict_images: the SavedModel, or "
            "onnxruntime on the export's parity-checked assets.extra/model.onnx; auto picks the "
            "faster one per version at load."
        ),
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)


class RegistryConfig(Section):
    store: PathSetting = Field(
        "model_store",
        description="Model store folder (TF Serving layout plus models.config); local or "
        "mounted, since updates are locked with flock.",
    )

    @field_validator("store")
    @classmethod
    def _store_is_a_folder(cls, store: str) -> str:
        return local_folder(store, "mount the bucket (gcsfuse, mountpoint-s3) or use a volume")


SPACE_KINDS = ("choice", "uniform", "log_uniform", "int")


# Per-epoch metrics of history.csv a search can optimise, and their natural direction.
class SpaceSpec(Section):
    """The values one config key takes in a search: exactly one of choice, uniform,
    log_uniform or int, optionally a step, and `when` to make the key conditional."""

    choice: list[Any] | None = Field(
        None, description="Values tried as they are (any YAML: numbers, names, lists, null)."
    )
    uniform: tuple[float, float] | None = Field(None, description="[low, high], linear scale.")
    log_uniform: tuple[float, float] | None = Field(
        None, description="[low, high] with 0 < low, sampled on a log scale."
    )
    step: float | None = Field(
        None,
        gt=0,
        description="int/uniform: spacing of the values; log_uniform: factor between them (> 1).",
    )
    when: dict[str, Any] | None = Field(
        None,
        description="Only tuned when every named key of the space (a choice) has this value or "
        "one of these values, e.g. {optimizer.name: sgd}; otherwise the key keeps its value.",
    )
    # builtins.int: inside this class body the name `int` is this field.
    int: tuple[builtins.int, builtins.int] | None = Field(
        None, description="[low, high] integers, both included."
    )

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler):
        # {log_uniform: [0.0001, 0.1]} rather than every kind with null beside it.
        dumped = handler(self)
        if self.int is not None and self.step is not None and self.step == round(self.step):
            dumped["step"] = round(self.step)
        order = [self.kind, "step", "when"]
        return {key: dumped[key] for key in order if dumped.get(key) is not None}

    @property
    def kind(self) -> str:
        return next(kind for kind in SPACE_KINDS if getattr(self, kind) is not None)

    @model_validator(mode="after")
    def _one_kind_with_a_valid_range(self):
        given = [kind for kind in SPACE_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(SPACE_KINDS)} "
                f"(received {', '.join(given) if given else 'none'})"
            )
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice needs at least one value (received [])")
            if self.step is not None:
                raise ValueError("step applies to int, uniform and log_uniform, not to choice")
            return self
        low, high = getattr(self, kind)
        if low >= high:
            raise ValueError(f"{kind} needs low < high (received [{low}, {high}])")
        if kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform needs 0 < low (received [{low}, {high}])")
        if kind == "log_uniform" and self.step is not None and self.step <= 1:
            raise ValueError(
                f"log_uniform's step is a factor and must be > 1 (received {self.step})"
            )
        if kind == "int" and self.step is not None and self.step != round(self.step):
            raise ValueError(f"int's step must be a whole number (received {self.step})")
        return self


SPEC_FIELDS = set(SpaceSpec.model_fields)


class ObjectiveSpec(Section):
    """One objective of a search: a history.csv column and whether higher is better."""

    name: str = Field(
        description=f"{', '.join(METRIC_DIRECTIONS)}, or val_<name> of a train.metrics entry."
    )
    direction: Literal["max", "min"] | None = Field(
        None, description="null = the metric's natural one (needed for train.metrics entries)."
    )

    @model_validator(mode="after")
    def _direction_known(self):
        if self.direction is None and self.name not in METRIC_DIRECTIONS:
            raise ValueError(
                f"{self.name!r} needs a direction: {{name: {self.name}, direction: max}} or min"
            )
        return self


def _objective_kind(value) -> str:
    if isinstance(value, str):
        return "name"
    return "list" if isinstance(value, list) else "spec"


# Tagged, so a bad item gets one error (key path tuning.objective.list.<i>.spec), not one per
# alternative.
Objective = Annotated[
    Annotated[str, Tag("name")] | Annotated[ObjectiveSpec, Tag("spec")],
    Discriminator(_objective_kind),
]
Objectives = Annotated[
    Annotated[str, Tag("name")]
    | Annotated[ObjectiveSpec, Tag("spec")]
    | Annotated[list[Objective], Tag("list")],
    Discriminator(_objective_kind),
]


class TuningConfig(Section):
    """`imgclf tune`: a KerasTuner search over config keys, every trial a recorded run."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Search name: trials are runs <name>-trial-<id>; null = <name>-tune.",
    )
    algorithm: Literal["random", "grid", "bayesian", "hyperband"] = Field(
        "random", description="KerasTuner oracle: random, grid, bayesian (GP) or hyperband."
    )
    objective: Objectives = Field(
        "val_accuracy",
        description="Per-epoch metric optimised (its best epoch counts): "
        f"{', '.join(METRIC_DIRECTIONS)}, or {{name: val_<name>, direction: max}} for a "
        "train.metrics entry. A list optimises their sum as KerasTuner does: the min "
        "objectives minus the max ones, unweighted.",
    )
    direction: Literal["max", "min"] | None = Field(
        None,
        description="Of a single named objective: max or min; null = min for losses, max for "
        "accuracies.",
    )
    max_trials: int = Field(10, ge=1, description="Most trials the search runs (any algorithm).")
    executions_per_trial: int = Field(
        1, ge=1, description="Runs per trial (seeds seed, seed+1, ...); the objective is averaged."
    )
    max_epochs: int | None = Field(
        None, ge=1, description="hyperband: most epochs a trial trains; null = train.epochs."
    )
    factor: int = Field(3, ge=2, description="hyperband: reduction factor between rounds.")
    num_initial_points: int | None = Field(
        None, ge=1, description="bayesian: random trials before the GP; null = 3 x parameters."
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=0,
        description="Per-trial early stopping: stop a trial after N epochs without a better "
        "objective (sets train.early_stopping); null = train.early_stopping as configured.",
    )
    time_budget_minutes: float | None = Field(
        None,
        gt=0,
        description="No trial starts after this much search time (running ones finish); "
        "a resumed search counts its earlier time. null = no limit.",
    )
    max_consecutive_failed_trials: int = Field(
        3, ge=1, description="The search stops after this many failed trials in a row."
    )
    seed: int | None = Field(
        None, ge=0, description="Seed of the oracle; null = the config's seed."
    )
    directory: PathSetting | None = Field(
        None,
        description="Search state, results and best.yaml; null = <train.runs_dir>/tuning/<name>.",
    )
    space: dict[str, SpaceSpec] = Field(
        default_factory=dict,
        description="Config key path -> values, e.g. optimizer.learning_rate: "
        "{log_uniform: [1e-4, 1e-1]}, data.batch_size: {choice: [16, 32, 64]}.",
    )

    @field_validator("objective")
    @classmethod
    def _known_objectives(cls, objective):
        items = objective if isinstance(objective, list) else [objective]
        if not items:
            raise ValueError("give at least one objective (received [])")
        names = [item if isinstance(item, str) else item.name for item in items]
        if len(set(names)) != len(names):
            raise ValueError(f"an objective is listed twice (received {names})")
        for name in (item for item in items if isinstance(item, str)):
            if name not in METRIC_DIRECTIONS:
                raise ValueError(
                    f"Input should be {', '.join(repr(n) for n in METRIC_DIRECTIONS)} "
                    f"(received {name!r}); for a train.metrics entry give its direction: "
                    f"{{name: {name}, direction: max}}"
                )
        return objective

    @model_validator(mode="after")
    def _direction_of_one_name(self):
        if self.direction is not None and not isinstance(self.objective, str):
            raise ValueError(
                "tuning.direction applies to a single named objective; give each objective "
                "its own instead, e.g. {name: val_loss, direction: min}"
            )
        return self

    def objectives(self) -> list[ObjectiveSpec]:
        """Every objective, each with its direction."""
        if isinstance(self.objective, str):
            direction = self.direction or METRIC_DIRECTIONS[self.objective]
            return [ObjectiveSpec(name=self.objective, direction=direction)]
        items = self.objective if isinstance(self.objective, list) else [self.objective]
        specs = [ObjectiveSpec(name=item) if isinstance(item, str) else item for item in items]
        return [
            spec.model_copy(update={"direction": spec.direction or METRIC_DIRECTIONS[spec.name]})
            for spec in specs
        ]

    @field_validator("space", mode="before")
    @classmethod
    def _dotted_keys(cls, space):
        """Nested mappings become dotted keys, so `--set tuning.space.optimizer.momentum=...`
        and `space: {optimizer: {momentum: {uniform: [0.5, 0.9]}}}` mean the same."""
        if not isinstance(space, dict):
            return space

        def flatten(tree: dict, prefix: str) -> dict:
            flat = {}
            for key, value in tree.items():
                path = f"{prefix}{key}"
                if isinstance(value, dict) and value and not set(value) & SPEC_FIELDS:
                    flat.update(flatten(value, f"{path}."))
                else:
                    flat[path] = value
            return flat

        return flatten(space, "")

    @field_validator("space")
    @classmethod
    def _conditions_and_grid(cls, space: dict[str, SpaceSpec], info: ValidationInfo):
        for key, spec in space.items():
            for parent, wanted in (spec.when or {}).items():
                if parent not in space:
                    raise ValueError(
                        f"{key}.when names {parent!r}, which is not a key of tuning.space "
                        f"(keys: {', '.join(space)})"
                    )
                if space[parent].choice is None or parent == key:
                    raise ValueError(
                        f"{key}.when: {parent} must be another key of the space with a choice "
                        f"(received {space[parent].kind})"
                    )
                for value in wanted if isinstance(wanted, list) else [wanted]:
                    if value not in space[parent].choice:
                        raise ValueError(
                            f"{key}.when: {value!r} is not one of {parent}'s choices "
                            f"{space[parent].choice}"
                        )
        if info.data.get("algorithm") == "grid":
            for key, spec in space.items():
                if spec.kind in ("uniform", "log_uniform") and spec.step is None:
                    raise ValueError(
                        f"{key}: grid search needs a finite set of values; give {spec.kind} "
                        "a step, or use choice"
                    )
        return space


Severity = Literal["error", "warn", "ignore"]


class ValidationConfig(Section):
    """ExampleValidator: the new dataset version against the previous one."""

    new_classes: Severity = Field("error", description="A class the previous version lacked.")
    missing_classes: Severity = Field("error", description="A class the new version lacks.")
    class_share_shift: float = Field(
        0.1, ge=0, le=1, description="Largest change of any class's share of the images."
    )
    class_share_severity: Severity = "warn"
    image_size_shift: float = Field(
        0.25, ge=0, description="Largest relative change of the median image height or width."
    )
    image_size_severity: Severity = "warn"
    channel_mean_shift: float = Field(
        0.1, ge=0, le=1, description="Largest change of any channel's mean (pixels in [0, 1])."
    )
    channel_mean_severity: Severity = "warn"


class InfraValidationConfig(Section):
    """InfraValidator: the exported model served on a free local port before it is pushed."""

    enabled: bool = True
    requests: int = Field(20, ge=1, description="Warm-up requests replayed, in a loop.")
    latency_budget_ms: float = Field(
        1000.0, gt=0, description="Largest p99 request latency accepted."
    )


class PushConfig(Section):
    model: str | None = Field(None, description="Registry model name (default serving.model_name).")
    label: str | None = Field(
        "production", description="Label given to a pushed version (null: push unlabelled)."
    )


class BulkInferenceConfig(Section):
    source: str | None = Field(
        None, description="Images to classify after a push (folder, manifest, bucket); null = off."
    )
    output: str | None = Field(
        None, description="Where predictions go: <dir>/predictions-*.jsonl (default in the run)."
    )
    format: Literal["jsonl", "tfrecord"] = "jsonl"
    batch_size: int = Field(32, ge=1)


class PipelineConfig(Section):
    metadata: PathSetting = Field(
        "pipeline/metadata.sqlite",
        description="The metadata store (SQLite, a local file) of every execution.",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_is_a_file(cls, metadata: str) -> str:
        return local_folder(metadata, "SQLite needs a local file")

    tune: bool = Field(False, description="Run the Tuner component before the Trainer.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    infra_validation: InfraValidationConfig = Field(default_factory=InfraValidationConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    bulk_inference: BulkInferenceConfig = Field(default_factory=BulkInferenceConfig)


class Config(Section):
    name: str = Field("imgclf", description="Experiment name, part of every run id.")
    seed: int = Field(42, ge=0, description="Seed for shuffling, initialisation and augmentation.")
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @model_validator(mode="after")
    def _head_epochs_within_run(self):
        if self.train.fine_tune.head_epochs > self.train.epochs:
            raise ValueError(
                f"train.fine_tune.head_epochs ({self.train.fine_tune.head_epochs}) exceeds "
                f"train.epochs ({self.train.epochs})"
            )
        return self

    @model_validator(mode="after")
    def _image_big_enough_for_backbone(self):
        smallest = BACKBONE_MIN_SIDE.get(self.model.backbone, 1)
        if min(self.data.image_size) < smallest:
            raise ValueError(
                f"model.backbone {self.model.backbone!r} needs images of at least "
                f"{smallest}x{smallest}; set data.image_size to [{smallest}, {smallest}] or more "
                f"(received {list(self.data.image_size)})"
            )
        return self

    def history_columns(self) -> list[str]:
        """The per-epoch metrics a run records, and so what can be monitored or tuned for."""
        return [*METRIC_DIRECTIONS, *(f"val_{name}" for name in self.train.metrics)]

    @model_validator(mode="after")
    def _objectives_are_history_columns(self):
        columns = self.history_columns()
        unknown = [o.name for o in self.tuning.objectives() if o.name not in columns]
        if unknown:
            raise ValueError(
                f"tuning.objective {unknown[0]!r} is not a history.csv column; objectives: "
                f"{', '.join(columns)} (val_<name> for each train.metrics entry)"
            )
        return self

    @model_validator(mode="after")
    def _monitors_are_history_columns(self):
        """A misspelt monitor would otherwise never be seen: no early stop, no best epoch."""
        columns = self.history_columns()
        watched = {
            "train.early_stopping": self.train.early_stopping,
            "optimizer.plateau": self.optimizer.plateau,
        }
        for key, section in watched.items():
            if section.monitor not in columns:
                close = difflib.get_close_matches(section.monitor, columns, n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"{key}.monitor {section.monitor!r} is not a history.csv column{hint}; "
                    f"columns: {', '.join(columns)} (val_<name> for each train.metrics entry)"
                )
            if section.direction is None and section.monitor not in METRIC_DIRECTIONS:
                raise ValueError(
                    f"{key}.monitor {section.monitor!r} needs {key}.direction: max or min"
                )
        return self

    @model_validator(mode="after")
    def _pipeline_tuner_needs_local_runs(self):
        """Caught here, before the pipeline ingests; `imgclf tune` checks as its search starts."""
        if self.pipeline.tune and locations.is_url(self.train.runs_dir):
            raise ValueError(
                f"pipeline.tune needs a local train.runs_dir (received {self.train.runs_dir}): "
                "a search reads every trial's run folder; use a local or mounted folder"
            )
        return self

    @model_validator(mode="after")
    def _augment_layers_take_the_images(self):
        """Each layer runs once on a tiny batch of data.channels images, so a layer that needs
        colour (hue, saturation) on grayscale data fails here, not in the input pipeline."""
        if not self.augment.layers:
            return self
        import keras
        import numpy as np

        batch = np.full((2, 16, 16, self.data.channels), 0.5, np.float32)
        for index, spec in enumerate(self.augment.layers):
            ((name, kwargs),) = spec.items()
            layer_class = getattr(keras.layers, AUGMENT_LAYER_CLASSES[name])
            try:
                layer_class(**kwargs)(batch, training=True)
            except Exception as error:  # whatever Keras raises, the user gets one line
                message = keras_error_reason(error)
                raise ValueError(
                    f"augment.layers[{index}].{name}: keras.layers.{layer_class.__name__} cannot "
                    f"augment {self.data.channels}-channel images (data.channels): {message}"
                ) from None
        return self

    @model_validator(mode="after")
    def _backbones_need_rgb(self):
        if self.model.backbone not in ("cnn", "custom") and self.data.channels != 3:
            raise ValueError(
                f"model.backbone {self.model.backbone!r} needs data.channels: 3 "
                f"(received {self.data.channels})"
            )
        return self
