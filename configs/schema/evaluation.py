"""evaluation: the report on the test split and the gate that blesses a model."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from configs.schema.base import Section

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
