"""pipeline: the TFX-style pipeline's metadata store, data validation, infra validation,
push and bulk inference."""

from typing import Literal

from pydantic import Field, field_validator

from configs.schema.base import PathSetting, Section, local_folder

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
