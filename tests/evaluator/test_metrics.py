"""trainer.evaluate: each metric of metrics.json agrees with scikit-learn on the same scores."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from trainer import evaluate

CLASSES = ["cat", "dog", "fox", "owl", "yak", "emu"]


def random_predictions(seed: int, n: int = 300, num_classes: int = len(CLASSES), skill=2.0):
    """Labels and softmax probabilities that are right more often than chance."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), y_true] += skill
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, probabilities.astype(np.float32)


@pytest.fixture(scope="module")
def predicted():
    y_true, probabilities = random_predictions(0)
    return y_true, probabilities, evaluate.classification_metrics(y_true, probabilities, CLASSES)


def test_counts_accuracy_and_averages_match_sklearn(predicted):
    y_true, probabilities, metrics = predicted
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(len(CLASSES)))
    assert metrics["num_examples"] == len(y_true)
    assert metrics["num_classes"] == len(CLASSES) and metrics["class_names"] == CLASSES
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    assert 0.3 < metrics["accuracy"] < 0.9  # neither trivial nor perfect
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        assert metrics["precision"][average] == pytest.approx(p, abs=1e-12)
        assert metrics["recall"][average] == pytest.approx(r, abs=1e-12)
        assert metrics["f1"][average] == pytest.approx(f, abs=1e-12)
    assert metrics["macro_f1"] == metrics["f1"]["macro"]
    assert metrics["f1"]["micro"] == pytest.approx(metrics["accuracy"], abs=1e-12)


def test_per_class_scores_match_sklearn(predicted):
    y_true, probabilities, metrics = predicted
    y_pred = probabilities.argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    for i, name in enumerate(CLASSES):
        row = metrics["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert row["support"] == s[i]
        expected_auc = skm.roc_auc_score(y_true == i, probabilities[:, i])
        assert row["roc_auc"] == pytest.approx(expected_auc, abs=1e-12)


def test_top_k_only_below_the_number_of_classes(predicted):
    y_true, probabilities, metrics = predicted
    assert set(metrics["top_k_accuracy"]) == {"3", "5"}
    for k in (3, 5):
        expected = skm.top_k_accuracy_score(y_true, probabilities, k=k)
        assert metrics["top_k_accuracy"][str(k)] == pytest.approx(expected, abs=1e-12)
    assert metrics["top_k_accuracy"]["3"] <= metrics["top_k_accuracy"]["5"]
    y4, p4 = random_predictions(1, num_classes=4)
    four = evaluate.classification_metrics(y4, p4, CLASSES[:4], top_k=[2, 3, 4, 10])
    assert set(four["top_k_accuracy"]) == {"2", "3"}


def test_confusion_matrix_raw_and_row_normalised(predicted):
    y_true, probabilities, metrics = predicted
    expected = skm.confusion_matrix(y_true, probabilities.argmax(axis=1))
    assert metrics["confusion_matrix"] == expected.tolist()
    normalized = np.array(metrics["confusion_matrix_normalized"])
    sklearn_normalized = skm.confusion_matrix(
        y_true, probabilities.argmax(axis=1), normalize="true"
    )
    np.testing.assert_allclose(normalized, sklearn_normalized, atol=1e-12)
    np.testing.assert_allclose(normalized.sum(axis=1), 1.0)


def test_roc_auc_averages_match_sklearn_one_vs_rest(predicted):
    y_true, probabilities, metrics = predicted
    # sklearn checks that scores sum to 1; float32 softmax rows do within its tolerance.
    scores = probabilities.astype(np.float64)
    for average in ("macro", "weighted"):
        expected = skm.roc_auc_score(y_true, scores, multi_class="ovr", average=average)
        assert metrics["roc_auc"][average] == pytest.approx(expected, abs=1e-12)


def test_most_confused_pairs_are_the_largest_off_diagonal_cells(predicted):
    _, _, metrics = predicted
    matrix = np.array(metrics["confusion_matrix"])
    pairs = metrics["most_confused"]
    assert len(pairs) == evaluate.DEFAULT_MOST_CONFUSED
    off_diagonal = sorted((matrix - np.diag(np.diag(matrix))).ravel(), reverse=True)
    assert [pair["count"] for pair in pairs] == off_diagonal[: len(pairs)]
    for pair in pairs:
        t, p = CLASSES.index(pair["true"]), CLASSES.index(pair["predicted"])
        assert t != p and matrix[t, p] == pair["count"]
        assert pair["rate"] == pytest.approx(pair["count"] / matrix[t].sum())


def test_the_metrics_are_plain_json(predicted):
    _, _, metrics = predicted
    assert json.loads(json.dumps(metrics)) == metrics


def test_ece_on_a_hand_computed_example():
    # Top probabilities 0.9, 0.8, 0.6, 0.55 in 2 bins: (0, 0.5] is empty, (0.5, 1] holds all four.
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    y_true = np.array([0, 1, 1, 1])  # right, right, wrong, right
    calibration = evaluate.calibration(y_true, probabilities, num_bins=2)
    assert calibration["num_bins"] == 2
    empty, full = calibration["bins"]
    assert empty == {"lower": 0.0, "upper": 0.5, "count": 0, "confidence": None, "accuracy": None}
    assert full["count"] == 4
    assert full["confidence"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.55) / 4)
    assert full["accuracy"] == pytest.approx(0.75)
    assert calibration["ece"] == pytest.approx(abs(0.75 - 0.7125))

    # Four bins: (0.5, 0.75] holds 0.6 (wrong) and 0.55 (right); (0.75, 1] holds 0.9 and 0.8.
    four = evaluate.calibration(y_true, probabilities, num_bins=4)
    assert [b["count"] for b in four["bins"]] == [0, 0, 2, 2]
    expected = 2 / 4 * abs(0.5 - 0.575) + 2 / 4 * abs(1.0 - 0.85)
    assert four["ece"] == pytest.approx(expected)


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    probabilities = np.array([[0.5, 0.5], [1.0, 0.0]])
    calibration = evaluate.calibration(np.array([0, 0]), probabilities, num_bins=2)
    assert [b["count"] for b in calibration["bins"]] == [1, 1]


def test_ece_is_zero_for_a_perfectly_calibrated_model():
    probabilities = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    metrics = evaluate.classification_metrics(np.array([0, 1]), probabilities, CLASSES[:3])
    assert metrics["calibration"]["ece"] == 0.0
    assert metrics["accuracy"] == 1.0 and metrics["most_confused"] == []


def test_a_class_absent_from_the_test_data_gets_a_null_auc_not_a_crash():
    y_true, probabilities = random_predictions(2)
    keep = y_true != CLASSES.index("owl")
    metrics = evaluate.classification_metrics(y_true[keep], probabilities[keep], CLASSES)
    owl = metrics["per_class"]["owl"]
    assert owl["roc_auc"] is None and owl["support"] == 0 and owl["recall"] == 0.0
    defined = [row["roc_auc"] for name, row in metrics["per_class"].items() if name != "owl"]
    assert all(auc is not None for auc in defined)
    assert metrics["roc_auc"]["macro"] == pytest.approx(np.mean(defined))
    assert metrics["confusion_matrix_normalized"][CLASSES.index("owl")] == [0.0] * len(CLASSES)


def test_a_single_class_test_set_has_no_auc_at_all():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1]])
    metrics = evaluate.classification_metrics(np.array([0, 0]), probabilities, CLASSES[:3])
    assert metrics["roc_auc"] == {"macro": None, "weighted": None}
    assert metrics["accuracy"] == 0.5


def test_shapes_that_do_not_match_the_class_names_are_an_error():
    with pytest.raises(ValueError, match=r"shape \[2, 3\]"):
        evaluate.classification_metrics(np.array([0, 1]), np.ones((2, 4)) / 4, CLASSES[:3])


@pytest.mark.parametrize("seed, num_bins", [(3, 4), (4, 10), (5, 15), (6, 20)])
def test_calibration_bins_and_ece_match_sklearn_calibration_curve(seed, num_bins):
    y_true, probabilities = random_predictions(seed, n=2000)
    # Top probabilities exactly on bin edges (0.5 of 4, 10 and 20 bins; 0.25 and 0.75 of 4 and
    # 20): both sides put a confidence on an edge into the bin below it.
    for row, top in enumerate((0.25, 0.5, 0.75, 0.75, 1.0)):
        probabilities[row] = (1 - top) / (len(CLASSES) - 1)
        probabilities[row, y_true[row] if row % 2 else (y_true[row] + 1) % len(CLASSES)] = top
    calibration = evaluate.calibration(y_true, probabilities.astype(np.float64), num_bins)
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = (probabilities.argmax(axis=1) == y_true).astype(int)

    accuracy, mean_confidence = calibration_curve(
        correct, confidence, n_bins=num_bins, strategy="uniform"
    )

    # calibration_curve returns only the non-empty bins and no counts; these are its own bin
    # ids (sklearn/calibration.py: np.searchsorted(bins[1:-1], y_prob), upper edges inclusive).
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=num_bins)
    bins = calibration["bins"]
    assert [b["count"] for b in bins] == counts.tolist()
    filled = [b for b in bins if b["count"]]
    assert len(filled) == len(accuracy) >= 3
    assert [b["accuracy"] for b in filled] == pytest.approx(accuracy.tolist(), abs=1e-12)
    assert [b["confidence"] for b in filled] == pytest.approx(mean_confidence.tolist(), abs=1e-12)
    assert all(b["accuracy"] is None and b["confidence"] is None for b in bins if not b["count"])
    expected_ece = np.sum(counts[counts > 0] / len(y_true) * np.abs(accuracy - mean_confidence))
    assert calibration["ece"] == pytest.approx(expected_ece, abs=1e-12)
    assert 0.01 < calibration["ece"] < 0.5
