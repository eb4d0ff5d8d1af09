"""train: the run (length, folder, distribution, precision, checkpoints) and what it
optimises: loss, metrics, early stopping, fine-tuning phases, weight averaging."""

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from configs.schema.base import PathSetting, Section
from configs.schema.history import RESERVED_METRICS, MonitoredMetric
from configs.schema.loss import BUILTIN_LOSSES, ClassWeights, LossConfig
from configs.schema.optimizer import DECAYING_SCHEDULES


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
