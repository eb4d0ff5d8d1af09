"""train.loss and train.class_weights: the per-example loss and the weight of each
class."""

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from configs.schema.base import Section

# trainer/losses.py LOSSES (a test keeps the two in step); other names come from custom_objects.
BUILTIN_LOSSES = ("categorical_crossentropy", "focal")
FOCAL_FIELDS = ("gamma", "alpha")


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
