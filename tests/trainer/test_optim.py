"""Optimizers and learning-rate schedules built from config."""

import typing

import keras
import numpy as np
import pytest

from configs import loader, schema
from trainer import optim

STEPS_PER_EPOCH = 10
EPOCHS = 30


def optimizer_config(*overrides: str) -> schema.OptimizerConfig:
    return loader.load(None, [f"optimizer.{o}" for o in overrides]).optimizer


def rate_at(schedule, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step))) if callable(schedule) else schedule


def test_registry_covers_every_configurable_optimizer():
    names = typing.get_args(schema.OptimizerConfig.model_fields["name"].annotation)
    assert set(optim.OPTIMIZERS) == set(names)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adam", keras.optimizers.Adam),
        ("adamw", keras.optimizers.AdamW),
        ("sgd", keras.optimizers.SGD),
        ("rmsprop", keras.optimizers.RMSprop),
    ],
)
def test_builds_each_optimizer_with_its_settings(name, cls):
    cfg = optimizer_config(f"name={name}", "weight_decay=0.01", "momentum=0.8", "nesterov=true")
    optimizer = optim.build_optimizer(cfg, STEPS_PER_EPOCH, EPOCHS)
    assert type(optimizer) is cls
    assert optimizer.weight_decay == pytest.approx(0.01)
    if name == "sgd":
        assert optimizer.momentum == pytest.approx(0.8) and optimizer.nesterov


def test_cosine_decays_from_the_peak_to_zero():
    schedule = optim.build_schedule(optimizer_config("learning_rate=0.1"), STEPS_PER_EPOCH, EPOCHS)
    assert rate_at(schedule, 0) == pytest.approx(0.1)
    assert rate_at(schedule, 150) == pytest.approx(0.05, abs=1e-6)
    assert rate_at(schedule, 300) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_multiplies_by_decay_rate_every_step_epochs():
    cfg = optimizer_config("learning_rate=0.1", "schedule=step", "step_epochs=10", "decay_rate=0.5")
    schedule = optim.build_schedule(cfg, STEPS_PER_EPOCH, EPOCHS)
    rates = [rate_at(schedule, epoch * STEPS_PER_EPOCH + 1) for epoch in (0, 9, 10, 19, 20, 29)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-6)


def test_exponential_schedule_decays_per_epoch():
    cfg = optimizer_config("learning_rate=0.1", "schedule=exponential", "decay_rate=0.9")
    schedule = optim.build_schedule(cfg, STEPS_PER_EPOCH, EPOCHS)
    assert rate_at(schedule, 2 * STEPS_PER_EPOCH) == pytest.approx(0.1 * 0.81, rel=1e-6)


def test_constant_schedule_is_a_plain_rate():
    cfg = optimizer_config("learning_rate=0.02", "schedule=constant")
    assert optim.build_schedule(cfg, STEPS_PER_EPOCH, EPOCHS) == 0.02


@pytest.mark.parametrize("name", ["constant", "step", "exponential", "cosine"])
def test_warmup_ramps_linearly_then_starts_the_schedule(name):
    cfg = optimizer_config("learning_rate=0.1", f"schedule={name}", "warmup_epochs=2")
    schedule = optim.build_schedule(cfg, STEPS_PER_EPOCH, EPOCHS)
    assert rate_at(schedule, 0) == pytest.approx(0.0, abs=1e-9)
    assert rate_at(schedule, 10) == pytest.approx(0.05, rel=1e-5)
    assert rate_at(schedule, 20) == pytest.approx(0.1, rel=1e-5)


def test_a_model_with_a_warmup_schedule_saves_and_loads(tmp_path):
    cfg = optimizer_config("schedule=step", "warmup_epochs=1")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=optim.build_optimizer(cfg, STEPS_PER_EPOCH, EPOCHS), loss="mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    schedule = loaded.optimizer._learning_rate
    assert isinstance(schedule, optim.Warmup)
    assert rate_at(schedule, 5) == pytest.approx(rate_at(optim.build_schedule(cfg, 10, 30), 5))
