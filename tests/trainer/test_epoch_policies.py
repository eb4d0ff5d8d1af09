"""The end-of-epoch policies fed history rows by hand: reduce-on-plateau and the best epoch.

tests/trainer/test_loop.py runs them inside real training (and a resumed run); these check
their decisions epoch by epoch, in milliseconds.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import schema
from trainer import epoch_policies, optim

RATE = 0.1


def rate_of(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def run_plateau(policy, optimizer, values, key="val_loss", first_epoch=0) -> list[float]:
    """Feeds one row per value; returns the rate each epoch trained with (as history rows do)."""
    rates = []
    for epoch, value in enumerate(values, start=first_epoch):
        rates.append(rate_of(optimizer))
        policy.end_epoch({"epoch": epoch, key: value, "learning_rate": rates[-1]}, optimizer)
    return rates


def test_a_stalled_monitor_lowers_the_rate_after_patience_down_to_the_minimum(capsys):
    policy = epoch_policies.ReduceOnPlateau(optim.Plateau("val_loss", 2, 0.5, 0.3 * RATE, True))
    optimizer = keras.optimizers.SGD(RATE)
    rates = run_plateau(policy, optimizer, [1.0] * 8)

    expected = [RATE] * 3 + [RATE * 0.5] * 2 + [RATE * 0.3] * 3
    assert rates == pytest.approx(expected, rel=1e-6)
    output = capsys.readouterr().out
    assert "train: val_loss stalled; learning rate 0.1 -> 0.05\n" in output
    assert output.count("stalled") == 2  # at the minimum, nothing more to lower or print


@pytest.mark.parametrize(
    ("minimize", "values", "lowered"),
    [
        (True, [1.0, 0.9, 0.8, 0.7], False),
        (False, [0.1, 0.2, 0.3, 0.4], False),
        (True, [0.1, 0.2, 0.3, 0.4], True),  # rising is no progress for a loss
        (False, [1.0, 0.9, 0.8, 0.7], True),
    ],
)
def test_progress_in_the_monitor_s_direction_keeps_the_rate(minimize, values, lowered):
    policy = epoch_policies.ReduceOnPlateau(optim.Plateau("val_loss", 1, 0.5, 0.0, minimize))
    optimizer = keras.optimizers.SGD(RATE)
    run_plateau(policy, optimizer, values)
    assert (rate_of(optimizer) < RATE) is lowered


def test_no_plateau_settings_or_an_unmeasured_monitor_never_touch_the_rate():
    for policy, key in [
        (epoch_policies.ReduceOnPlateau(None), "val_loss"),
        (epoch_policies.ReduceOnPlateau(optim.Plateau("val_loss", 1, 0.5, 0.0, True)), "loss"),
    ]:
        optimizer = keras.optimizers.SGD(RATE)
        assert run_plateau(policy, optimizer, [1.0] * 4, key=key) == pytest.approx([RATE] * 4)
        assert int(policy.wait) == 0
        assert set(policy.checkpointed()) == {"plateau_best", "plateau_wait"}


def test_restart_forgets_the_epochs_counted_so_far():
    settings = optim.Plateau("val_loss", 2, 0.5, 0.0, True)
    kept, restarted = (epoch_policies.ReduceOnPlateau(settings) for _ in range(2))
    for policy in (kept, restarted):
        run_plateau(policy, keras.optimizers.SGD(RATE), [1.0, 1.0])
    restarted.restart()
    assert math.isnan(float(restarted.best)) and int(restarted.wait) == 0

    kept_optimizer, restarted_optimizer = keras.optimizers.SGD(RATE), keras.optimizers.SGD(RATE)
    run_plateau(kept, kept_optimizer, [1.0], first_epoch=2)
    run_plateau(restarted, restarted_optimizer, [1.0], first_epoch=2)
    assert rate_of(kept_optimizer) == pytest.approx(RATE / 2)
    assert rate_of(restarted_optimizer) == pytest.approx(RATE)


def test_restored_plateau_counters_continue_an_uninterrupted_sequence(tmp_path):
    settings = optim.Plateau("val_loss", 3, 0.5, 0.0, True)
    straight = run_plateau(
        epoch_policies.ReduceOnPlateau(settings), keras.optimizers.SGD(RATE), [1.0] * 5
    )
    assert straight == pytest.approx([RATE] * 4 + [RATE / 2])

    before = epoch_policies.ReduceOnPlateau(settings)
    run_plateau(before, keras.optimizers.SGD(RATE), [1.0] * 3)
    saved = tf.train.Checkpoint(**before.checkpointed()).save(str(tmp_path / "ckpt"))
    after = epoch_policies.ReduceOnPlateau(settings)
    tf.train.Checkpoint(**after.checkpointed()).restore(saved).assert_consumed()
    optimizer = keras.optimizers.SGD(RATE)
    assert run_plateau(after, optimizer, [1.0] * 2, first_epoch=3) == pytest.approx(straight[3:])


# --- the best epoch and early stopping ---


def early_stopping(**settings) -> schema.EarlyStoppingConfig:
    return schema.EarlyStoppingConfig(**{"monitor": "val_loss", "patience": 2, **settings})


def small_model() -> keras.Model:
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def set_epoch_weights(model: keras.Model, epoch: int) -> None:
    """Weights that say which epoch they come from."""
    model.set_weights([np.full(w.shape, epoch, np.float32) for w in model.get_weights()])


def run_best(policy, values, model=None, last_phase_start=0, first_epoch=0) -> list[str | None]:
    """Feeds one val_loss row per value (the model holding that epoch's weights); returns each
    epoch's answer."""
    answers = []
    for epoch, value in enumerate(values, start=first_epoch):
        if model is not None:
            set_epoch_weights(model, epoch)
        answers.append(policy.end_epoch({"epoch": epoch, "val_loss": value}, last_phase_start))
    return answers


def best_epoch(weights_dir, stop_early=True, model=None, **settings) -> epoch_policies.BestEpoch:
    weights_dir.mkdir(parents=True, exist_ok=True)  # a run's checkpoints folder
    return epoch_policies.BestEpoch(
        early_stopping(**settings), stop_early, model or small_model(), weights_dir
    )


@pytest.mark.parametrize(("direction", "expected"), [("min", 1), ("max", 0)])
def test_the_best_epoch_follows_the_direction_with_or_without_early_stopping(
    tmp_path, direction, expected
):
    for stop_early in (True, False):
        policy = best_epoch(tmp_path, stop_early, direction=direction, patience=10)
        assert run_best(policy, [1.0, 0.5, 0.8, 0.6]) == [None] * 4
        assert policy.finish() == expected


def test_early_stopping_stops_after_patience_epochs_without_a_better_value(tmp_path):
    values = [1.0, 0.9, 0.95, 0.97]
    stopping = run_best(best_epoch(tmp_path), values)
    assert stopping == [None, None, None, "no val_loss improvement in 2 epochs"]
    assert run_best(best_epoch(tmp_path, stop_early=False), values) == [None] * 4


def test_only_the_last_phase_stops_early_counting_from_its_start(tmp_path):
    policy = best_epoch(tmp_path)
    # A head phase (epochs 0-2) that levels off is never stopped.
    assert run_best(policy, [1.0, 1.1, 1.2], last_phase_start=None) == [None] * 3
    # The last phase starts at epoch 3: patience counts from the epoch before it.
    answers = run_best(policy, [1.3, 1.4], last_phase_start=3, first_epoch=3)
    assert answers == [None, "no val_loss improvement in 2 epochs"]
    assert policy.finish() == 0


def test_the_run_ends_with_the_best_epoch_s_weights(tmp_path, capsys):
    model = small_model()
    policy = best_epoch(tmp_path, model=model, patience=10)
    run_best(policy, [1.0, 0.5, 0.8, 0.6], model)
    assert (tmp_path / epoch_policies.BEST_WEIGHTS).exists()
    assert policy.finish() == 1
    assert all((w == 1).all() for w in model.get_weights())
    assert "train: restored the weights of the best epoch (2)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("stop_early", "restore"), [(False, True), (True, False)], ids=["stop-off", "restore-off"]
)
def test_the_last_epoch_s_weights_stay_when_best_weights_are_not_restored(
    tmp_path, stop_early, restore
):
    model = small_model()
    policy = best_epoch(
        tmp_path, stop_early, model=model, patience=10, restore_best_weights=restore
    )
    run_best(policy, [1.0, 0.5, 0.8, 0.6], model)
    assert policy.finish() == 1
    assert all((w == 3).all() for w in model.get_weights())
    assert not (tmp_path / epoch_policies.BEST_WEIGHTS).exists()


def test_an_unmeasured_monitor_records_no_best_epoch(tmp_path):
    policy = best_epoch(tmp_path, patience=0)
    for epoch in range(3):
        assert policy.end_epoch({"epoch": epoch, "loss": 1.0}, 0) is None
    assert policy.finish() is None


def test_a_resumed_worker_restores_the_chief_s_best_weights(tmp_path):
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    worker_model = small_model()
    worker = best_epoch(worker_dir, model=worker_model)
    worker.adopt(chief_dir)  # the chief has no best weights yet
    assert list(worker_dir.iterdir()) == []

    chief_model = small_model()
    run_best(best_epoch(chief_dir, model=chief_model), [1.0, 0.5], chief_model)
    worker.adopt(chief_dir)
    set_epoch_weights(worker_model, 7)
    worker.epoch.assign(1)  # as the restored checkpoint says
    assert worker.finish() == 1
    assert all((w == 1).all() for w in worker_model.get_weights())


def test_restored_best_epoch_counters_continue_an_uninterrupted_run(tmp_path):
    values = [1.0, 0.5, 0.8, 0.9]
    straight = run_best(best_epoch(tmp_path / "straight"), values)
    assert straight == [None, None, None, "no val_loss improvement in 2 epochs"]

    before = best_epoch(tmp_path)
    # The keys earlier runs' checkpoints hold them under.
    assert set(before.checkpointed()) == {"best", "best_epoch"}
    run_best(before, values[:3])
    saved = tf.train.Checkpoint(**before.checkpointed()).save(str(tmp_path / "ckpt"))
    after = best_epoch(tmp_path)
    tf.train.Checkpoint(**after.checkpointed()).restore(saved).assert_consumed()
    assert run_best(after, values[3:4], first_epoch=3) == straight[3:4]
    assert after.finish() == 1


def test_announce_says_why_the_policy_will_not_act(tmp_path, capsys):
    best_epoch(tmp_path).announce(validated=False, epochs=9)
    assert "the validation split is empty, so val_loss is never measured" in capsys.readouterr().out
    best_epoch(tmp_path, stop_early=False).announce(validated=True, epochs=9)
    said = capsys.readouterr().out
    assert "early stopping is off: the learning-rate schedule decays over all 9 epochs" in said
    # Told off by the config itself, or watching a training column: nothing to explain.
    best_epoch(tmp_path, stop_early=False, enabled=False).announce(validated=True, epochs=9)
    best_epoch(tmp_path, monitor="loss").announce(validated=False, epochs=9)
    assert capsys.readouterr().out == ""
