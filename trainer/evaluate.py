"""Classification metrics of a model on a labelled dataset."""

import numpy as np
import tensorflow as tf
from sklearn import metrics as skm


def predict(model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(true labels [N], probabilities [N, C]) over a finite (images, labels) dataset."""
    labels, probabilities = [], []
    for images, batch_labels in dataset:
        probabilities.append(np.asarray(model(images, training=False), dtype=np.float32))
        labels.append(batch_labels.numpy())
    return np.concatenate(labels), np.concatenate(probabilities)


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]
) -> dict:
    """accuracy, macro_f1, per_class {precision, recall, f1, support} and confusion_matrix.

    Confusion-matrix rows are true classes, columns predicted ones, both in label-map order.
    """
    labels = list(range(len(class_names)))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "num_examples": int(len(y_true)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
