"""model: the backbone (a YAML CNN, a keras.applications backbone or the user's own
model), its CNN layer specs and the classification head."""

from typing import Any, Literal

import pydantic
from pydantic import Field, field_validator, model_validator

from configs.schema.backbones import BACKBONE_NAMES
from configs.schema.base import Section

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
