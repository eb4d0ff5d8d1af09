"""The evaluator's diagnosis in words: one answer for every image."""

from evaluator import diagnose


def test_one_class_for_every_image_is_named():
    metrics = {
        "class_names": ["grass", "moon"],
        "confusion_matrix": [[0, 30], [0, 20]],
        "split": "test",
    }
    assert diagnose.one_class_answers(metrics) == (
        "every one of the 50 test images was predicted as 'moon': the model ignores its input"
    )
    metrics["confusion_matrix"] = [[1, 29], [0, 20]]
    assert diagnose.one_class_answers(metrics) is None
    # Only one true class present: answering it is right, not a collapse.
    assert diagnose.one_class_answers({**metrics, "confusion_matrix": [[0, 0], [0, 20]]}) is None
