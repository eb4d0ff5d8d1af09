"""evaluator.predictions: which wrong predictions are kept for the report's "most confidently
wrong" grid, in which order, with which labels; a real SavedModel supplies the label map."""

import numpy as np
import pytest

from evaluator import data, models, predictions
from tests.conftest import encode, export_dense_model, noise_image

CLASSES = ["cat", "dog", "owl"]
SIDE = 8


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> models.Classifier:
    """A seeded Flatten -> Dense(softmax) SavedModel over CLASSES, loaded as the evaluator does."""
    version = export_dense_model(tmp_path_factory.mktemp("model"), SIDE, 3, CLASSES)
    return models.Classifier(models.resolve(str(version), tmp_path_factory.mktemp("store")))


def example(number: int, label: str) -> data.Example:
    return data.Example(f"/test/{label}/{number}.png", label, f"image {number}".encode())


def expected_entry(number: int, label: str, predicted: str, confidence: float) -> dict:
    return {
        "image": f"image {number}".encode(),
        "true": label,
        "predicted": predicted,
        "confidence": pytest.approx(confidence),
        "name": f"{label}/{number}.png",
    }


# (true label, scores over CLASSES) in the order the images are seen.
SCORED = [
    ("cat", [0.2, 0.7, 0.1]),  # 0: wrong, dog at 0.7
    ("dog", [0.02, 0.98, 0.0]),  # 1: right, and more confident than any wrong one
    ("owl", [0.5, 0.1, 0.4]),  # 2: wrong, cat at 0.5, the least confident mistake
    ("cat", [0.05, 0.05, 0.9]),  # 3: wrong, owl at 0.9
    ("owl", [0.0, 0.0, 1.0]),  # 4: right
    ("dog", [0.6, 0.4, 0.0]),  # 5: wrong, cat at 0.6
    ("owl", [0.1, 0.6, 0.3]),  # 6: wrong, dog at 0.6: ties with 5, which came first
]
# Every mistake of SCORED, most confident first (ties: the earlier image first).
ALL_WRONG = [
    expected_entry(3, "cat", "owl", 0.9),
    expected_entry(0, "cat", "dog", 0.7),
    expected_entry(5, "dog", "cat", 0.6),
    expected_entry(6, "owl", "dog", 0.6),
    expected_entry(2, "owl", "cat", 0.5),
]


def collect(classifier: models.Classifier, keep_wrong: int) -> predictions.Predictions:
    collector = predictions.Collector(classifier, keep_wrong)
    for number, (label, scores) in enumerate(SCORED):
        collector.add(example(number, label), np.array(scores, dtype=np.float32))
    return collector.result()


@pytest.mark.parametrize("keep_wrong", [1, 3, 4])
def test_only_the_most_confident_mistakes_are_kept_most_confident_first(classifier, keep_wrong):
    result = collect(classifier, keep_wrong)
    assert result.wrong == ALL_WRONG[:keep_wrong]
    # Every image still counts towards the metrics, kept for the grid or not.
    assert result.y_true.tolist() == [CLASSES.index(label) for label, _ in SCORED]


def test_room_for_more_mistakes_than_there_are_keeps_every_mistake_and_no_right_answer(
    classifier,
):
    assert collect(classifier, keep_wrong=50).wrong == ALL_WRONG


def test_keeping_no_mistakes_keeps_none(classifier):
    result = collect(classifier, keep_wrong=0)
    assert result.wrong == [] and len(result.uris) == len(SCORED)


def test_predict_keeps_the_model_s_most_confident_mistakes_across_batches(classifier):
    """The real model over noise images: the kept mistakes are the top ones among its own
    predictions, whichever batch they came from."""
    images = [encode(noise_image(seed, (SIDE, SIDE)), "PNG") for seed in range(30)]
    examples = [
        data.Example(f"/test/{CLASSES[i % 3]}/{i}.png", CLASSES[i % 3], image)
        for i, image in enumerate(images)
    ]
    keep = 4

    [result], skipped = predictions.predict([classifier], examples, 7, keep, progress=False)

    assert skipped == []
    predicted = result.probabilities.argmax(axis=1)
    confidence = result.probabilities.max(axis=1)
    mistakes = [i for i in range(len(examples)) if predicted[i] != result.y_true[i]]
    assert len(mistakes) > keep, "the random model must make more mistakes than are kept"
    assert len(mistakes) < len(examples), "and get some right, for the test to mean anything"
    top = sorted(mistakes, key=lambda i: (-confidence[i], i))[:keep]
    assert result.wrong == [
        {
            "image": images[i],
            "true": CLASSES[i % 3],
            "predicted": CLASSES[predicted[i]],
            "confidence": float(confidence[i]),
            "name": f"{CLASSES[i % 3]}/{i}.png",
        }
        for i in top
    ]
    assert [entry["confidence"] for entry in result.wrong] == sorted(
        (float(confidence[i]) for i in mistakes), reverse=True
    )[:keep]
