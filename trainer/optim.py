"""Optimizer and learning-rate schedule from config."""

import keras

from configs import schema


def build_schedule(cfg: schema.OptimizerConfig, steps_per_epoch: int, epochs: int):
    """A constant rate, or cosine decay to zero over the run after an optional linear warm-up."""
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "constant":
        return cfg.learning_rate
    total_steps = max(1, steps_per_epoch * epochs)
    decay_steps = max(1, total_steps - warmup_steps)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=decay_steps,
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup_steps,
    )


def build_optimizer(cfg: schema.OptimizerConfig, steps_per_epoch: int, epochs: int):
    schedule = build_schedule(cfg, steps_per_epoch, epochs)
    return keras.optimizers.Adam(learning_rate=schedule)
