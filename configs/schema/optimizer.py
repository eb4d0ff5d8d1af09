"""optimizer: the optimizer and its learning-rate schedule."""

from typing import Literal

from pydantic import Field, model_validator

from configs.schema.base import Section
from configs.schema.history import MonitoredMetric


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
