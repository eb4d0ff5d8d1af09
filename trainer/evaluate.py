"""Classification metrics of a model on a labelled dataset: accuracy to calibration."""

import numpy as np
import tensorflow as tf
from sklearn import metrics as skm

# Defaults of the evaluation.* keys, for callers without a config (the trainer's own metrics).
DEFAULT_TOP_K = (3, 5)
DEFAULT_CALIBRATION_BINS = 15
DEFAULT_MOST_CONFUSED = 10
AVERAGES = ("macro", "micro", "weighted")


def predict(model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(true labels [N], probabilities [N, C]) over a finite (images, labels) dataset."""
    labels, probabilities = [], []
    for images, batch_labels in dataset:
        probabilities.append(np.asarray(model(images, training=False), dtype=np.float32))
        labels.append(batch_labels.numpy())
    return np.concatenate(labels), np.concatenate(probabilities)


def classification_metrics(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    top_k: tuple[int, ...] | list[int] = DEFAULT_TOP_K,
    calibration_bins: int = DEFAULT_CALIBRATION_BINS,
    most_confused: int = DEFAULT_MOST_CONFUSED,
) -> dict:
    """Every metric of metrics.json for integer labels `y_true` [N] (indices into `class_names`)
    and `probabilities` [N, C] in the same order.

    Confusion-matrix rows are true classes, columns predicted ones, both in label-map order.
    A class without test examples gets support 0, recall 0 and a null ROC-AUC.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = len(class_names)
    if probabilities.shape != (len(y_true), num_classes):
        raise ValueError(
            f"probabilities must have shape [{len(y_true)}, {num_classes}] "
            f"(received {list(probabilities.shape)})"
        )
    if not len(y_true):
        raise ValueError("no examples to evaluate")
    labels = list(range(num_classes))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    averaged = {
        average: skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )[:3]
        for average in AVERAGES
    }
    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    auc = per_class_roc_auc(y_true, probabilities)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(averaged["macro"][2]),
        "num_examples": int(len(y_true)),
        "num_classes": num_classes,
        "class_names": list(class_names),
        "top_k_accuracy": {
            str(k): float(skm.top_k_accuracy_score(y_true, probabilities, k=k, labels=labels))
            for k in sorted(set(top_k))
            if k < num_classes
        },
        **{
            name: {average: float(averaged[average][i]) for average in AVERAGES}
            for i, name in enumerate(("precision", "recall", "f1"))
        },
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "roc_auc": auc[i],
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_normalized": normalize_rows(matrix).tolist(),
        "roc_auc": average_roc_auc(auc, support),
        "calibration": calibration(y_true, probabilities, calibration_bins),
        "most_confused": most_confused_pairs(matrix, class_names, most_confused),
    }


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the fraction of a true class predicted as each class);
    a row without examples stays zero."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def per_class_roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> list[float | None]:
    """One-vs-rest ROC-AUC of each class's score; None where the test data holds only
    positives or only negatives of that class (AUC is undefined there)."""
    aucs: list[float | None] = []
    for index in range(probabilities.shape[1]):
        positives = y_true == index
        if positives.all() or not positives.any():
            aucs.append(None)
        else:
            aucs.append(float(skm.roc_auc_score(positives, probabilities[:, index])))
    return aucs


def average_roc_auc(aucs: list[float | None], support: np.ndarray) -> dict:
    """Macro (mean) and support-weighted one-vs-rest AUC over the classes where it is defined;
    equal to scikit-learn's roc_auc_score(multi_class="ovr") when every class is present."""
    defined = [
        (auc, int(count)) for auc, count in zip(aucs, support, strict=True) if auc is not None
    ]
    if not defined:
        return {"macro": None, "weighted": None}
    values = np.array([auc for auc, _ in defined])
    weights = np.array([count for _, count in defined], dtype=np.float64)
    return {
        "macro": float(values.mean()),
        "weighted": float((values * weights).sum() / weights.sum()),
    }


def calibration(y_true: np.ndarray, probabilities: np.ndarray, num_bins: int) -> dict:
    """Expected calibration error over `num_bins` equal-width bins of the top probability.

    Bin i holds confidences in (i/n, (i+1)/n] (the first bin also holds 0). ECE is the
    count-weighted mean of |accuracy - mean confidence| over the bins; empty bins have null
    confidence and accuracy and weigh nothing.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    # ceil(c * n) - 1 puts a confidence on an upper edge into the bin below it.
    index = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    bins, ece = [], 0.0
    for i in range(num_bins):
        members = index == i
        count = int(members.sum())
        mean_confidence = float(confidence[members].mean()) if count else None
        accuracy = float(correct[members].mean()) if count else None
        if count:
            ece += count / len(y_true) * abs(accuracy - mean_confidence)
        bins.append(
            {
                "lower": i / num_bins,
                "upper": (i + 1) / num_bins,
                "count": count,
                "confidence": mean_confidence,
                "accuracy": accuracy,
            }
        )
    return {"ece": float(ece), "num_bins": num_bins, "bins": bins}


def most_confused_pairs(matrix: np.ndarray, class_names: list[str], limit: int) -> list[dict]:
    """The off-diagonal cells with the most examples: true class, predicted class, count and
    rate (count / the true class's support), most first; ties by rate, then label order."""
    support = matrix.sum(axis=1)
    pairs = [
        {
            "true": class_names[t],
            "predicted": class_names[p],
            "count": int(matrix[t, p]),
            "rate": float(matrix[t, p] / support[t]),
        }
        for t in range(len(class_names))
        for p in range(len(class_names))
        if t != p and matrix[t, p] > 0
    ]
    pairs.sort(key=lambda pair: (-pair["count"], -pair["rate"]))
    return pairs[:limit]
