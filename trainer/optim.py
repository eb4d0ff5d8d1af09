"""Optimizers and learning-rate schedules from config."""

from dataclasses import dataclass

import keras

from configs import schema


@keras.saving.register_keras_serializable(package="imgclf")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to the wrapped schedule's value at `warmup_steps`, then the schedule
    shifted by the warm-up (so its decay starts when warm-up ends)."""

    def __init__(self, after: keras.optimizers.schedules.LearningRateSchedule, warmup_steps: int):
        self.after = after
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.after(0) * step / float(self.warmup_steps)
        return keras.ops.where(step < self.warmup_steps, warm, self.after(step - self.warmup_steps))

    def get_config(self):
        return {
            "after": keras.saving.serialize_keras_object(self.after),
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_config(cls, config):
        after = keras.saving.deserialize_keras_object(config["after"])
        return cls(after, config["warmup_steps"])


def build_schedule(cfg: schema.OptimizerConfig, steps_per_epoch: int, epochs: int):
    """The learning rate as a float (constant) or a schedule over optimizer steps."""
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    decay_steps = max(1, steps_per_epoch * epochs - warmup_steps)
    rate = cfg.learning_rate
    if cfg.schedule == "cosine":
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(rate, decay_steps)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps, warmup_target=rate, warmup_steps=warmup_steps
        )
    if cfg.schedule == "step":
        every = cfg.step_epochs * steps_per_epoch
        boundaries = list(range(every, max(every, steps_per_epoch * epochs) + 1, every))
        values = [rate * cfg.decay_rate**k for k in range(len(boundaries) + 1)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    elif cfg.schedule == "exponential":
        schedule = keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=steps_per_epoch, decay_rate=cfg.decay_rate
        )
    elif cfg.schedule == "plateau":
        return rate  # the training loop lowers this rate when plateau.monitor stalls
    elif warmup_steps:
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [rate, rate])
    else:
        return rate  # constant: a plain float, kept as a variable by the optimizer
    return Warmup(schedule, warmup_steps) if warmup_steps else schedule


OPTIMIZERS = {
    "adam": lambda cfg, lr, **ema: keras.optimizers.Adam(
        lr, weight_decay=cfg.weight_decay or None, **ema
    ),
    "adamw": lambda cfg, lr, **ema: keras.optimizers.AdamW(
        lr, weight_decay=cfg.weight_decay, **ema
    ),
    "sgd": lambda cfg, lr, **ema: keras.optimizers.SGD(
        lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay or None,
        **ema,
    ),
    "rmsprop": lambda cfg, lr, **ema: keras.optimizers.RMSprop(
        lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay or None, **ema
    ),
}


def build_optimizer(
    cfg: schema.OptimizerConfig,
    steps_per_epoch: int,
    epochs: int,
    ema: schema.EmaConfig | None = None,
):
    """The configured optimizer over `epochs` epochs; with `ema` enabled it also keeps an
    exponential moving average of the weights (Keras' use_ema), see ema_momentum."""
    schedule = build_schedule(cfg, steps_per_epoch, epochs)
    if ema is None or not ema.enabled:
        return OPTIMIZERS[cfg.name](cfg, schedule)
    momentum = ema_momentum(ema.momentum, steps_per_epoch * epochs)
    return OPTIMIZERS[cfg.name](cfg, schedule, use_ema=True, ema_momentum=momentum)


def ema_momentum(setting: float | str, total_steps: int) -> float:
    """train.ema.momentum as a number. auto: the average spans about the last tenth of the
    run's steps; Keras starts it from the first step's weights with no bias correction, so a
    fixed 0.999 would still be mostly the random start after a small dataset's 300 steps."""
    if setting != "auto":
        return float(setting)
    return min(0.9999, max(0.9, 1.0 - 10.0 / max(total_steps, 1)))


@dataclass(frozen=True)
class Plateau:
    """Reduce-on-plateau: multiply the rate by `factor` after `patience` epochs without a better
    `monitor`, never going below `min_learning_rate`. Applied by the training loop per epoch."""

    monitor: str
    patience: int
    factor: float
    min_learning_rate: float
    minimize: bool


def plateau(cfg: schema.OptimizerConfig) -> Plateau | None:
    if cfg.schedule != "plateau":
        return None
    return Plateau(
        cfg.plateau.monitor,
        cfg.plateau.patience,
        cfg.decay_rate,
        cfg.plateau.min_learning_rate,
        cfg.plateau.minimizes(),
    )
