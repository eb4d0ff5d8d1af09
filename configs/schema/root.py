"""The root of the config: its sections, and the rules that join keys of several of
them."""

import difflib

from pydantic import Field, model_validator

from configs.schema.augment import AUGMENT_LAYER_CLASSES, AugmentConfig, keras_error_reason
from configs.schema.backbones import min_image_side
from configs.schema.base import Section
from configs.schema.data import DataConfig
from configs.schema.evaluation import EvaluationConfig
from configs.schema.history import METRIC_DIRECTIONS
from configs.schema.model import ModelConfig
from configs.schema.optimizer import OptimizerConfig
from configs.schema.pipeline import PipelineConfig
from configs.schema.registry import RegistryConfig
from configs.schema.serving import ServingConfig
from configs.schema.tracking import TrackingConfig
from configs.schema.train import TrainConfig
from configs.schema.tuning import TuningConfig
from core import locations


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
        smallest = min_image_side(self.model.backbone)
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
