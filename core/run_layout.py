"""A run folder's layout: the files and sub-folders a training run and its evaluation write.

Producers (the trainer, the evaluator, the tracker) and consumers (the registry, the server, the
run listings) all take the names from here, so none of them imports another to learn one.
"""

from pathlib import Path

CONFIG = "config.yaml"  # the resolved config the run used
HISTORY = "history.csv"  # one row per epoch
METRICS = "metrics.json"  # the evaluator's figures on the run's test split (its one writer)
BLESSING = "blessing.json"  # {"blessed": bool, ...}: the gate's verdict, beside the metrics
REPORT = "report.html"
PREDICTIONS = "predictions.jsonl"  # one line per evaluated image
RECORD = "run.json"  # the run's record: config digest, epochs, outcome, environment
# What the trainer records about its training (run.json's "training"); the evaluator copies them
# into every metrics.json of the run, beside the test figures.
TRAINING_KEYS = ("epochs_run", "best_epoch", "resumed_from", "train_seconds", "diagnoses")
EVALUATIONS = "evaluations"  # evaluations on other data: <run>/evaluations/<time>-<data>/
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
EXPORT = "export"  # TF Serving layout: export/<version>/saved_model.pb
KERAS_MODEL = "model.keras"
BACKBONE_WEIGHTS = "backbone.weights.h5"  # the feature extractor alone, for model.weights


def next_export_version(run_dir: Path) -> int:
    """1 for a new run; one more than the newest export when a finished run is resumed."""
    numbers = [int(p.name) for p in (run_dir / EXPORT).iterdir() if p.name.isdigit()]
    return max(numbers, default=0) + 1
