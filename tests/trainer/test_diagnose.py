"""The trainer's diagnosis in words: validation at chance while training learns."""

from trainer import diagnose

BALANCED_VAL = {"moon": 25, "grass": 25, "brick": 25, "gravel": 25}


def history(accuracy: list[float], val_accuracy: list[float]) -> dict[str, list[float]]:
    return {"accuracy": accuracy, "val_accuracy": val_accuracy}


def test_validation_at_chance_while_training_learns_is_named_with_the_batch_norm_fix():
    note = diagnose.chance_validation(
        history([0.5, 0.9, 0.98], [0.25, 0.25, 0.26]), BALANCED_VAL, True, 0.999
    )
    assert note.startswith(
        "validation accuracy stayed at chance (0.26 in the last 3 epoch(s); always answering "
        "'moon' scores 0.25) while training accuracy reached 0.98: the model does not generalise"
    )
    assert "momentum 0.999" in note and "model.batch_norm_momentum: auto" in note


def test_without_batch_norm_the_note_points_elsewhere():
    note = diagnose.chance_validation(history([0.9, 0.99], [0.25, 0.24]), BALANCED_VAL, False, None)
    assert "BatchNorm" not in note and "optimizer.learning_rate" in note


def test_the_majority_class_sets_chance():
    skewed = {"a": 80, "b": 20}
    # 0.8 is what always answering 'a' scores: chance here, however high it looks.
    assert diagnose.chance_validation(history([0.99], [0.8]), skewed, True, 0.99)
    assert diagnose.chance_validation(history([0.99], [0.95]), skewed, True, 0.99) is None


def test_no_note_when_validation_learns_or_training_did_not():
    assert diagnose.chance_validation(history([0.9], [0.6]), BALANCED_VAL, True, 0.9) is None
    # Training at chance too: nothing was learnt, which the metrics already say.
    assert diagnose.chance_validation(history([0.3], [0.25]), BALANCED_VAL, True, 0.9) is None
    # An early epoch at chance is normal once the last epochs are above it.
    assert (
        diagnose.chance_validation(
            history([0.4, 0.9, 0.95], [0.25, 0.8, 0.9]), BALANCED_VAL, True, 0.9
        )
        is None
    )
    assert diagnose.chance_validation({"accuracy": [0.9]}, BALANCED_VAL, True, 0.9) is None
