"""Run folders with hand-written records, for listing and comparison tests without training."""

import json
from pathlib import Path

from core import run_layout
from tracking import records


def write_run(
    runs_dir: Path,
    run_id: str,
    *,
    status: str = records.COMPLETED,
    started: str = "2026-01-01T10:00:00+00:00",
    accuracy: float | None = None,
    per_class: dict | None = None,
    learning_rate: float = 0.003,
    backbone: str = "cnn",
    epochs: list[dict] | None = None,
    **fields,
) -> Path:
    """runs_dir/run_id/ with config.yaml, run.json and (given accuracy) metrics.json."""
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    config = {
        "name": run_id.split("-")[0],
        "model": {"backbone": backbone, "cnn": [{"conv": {"filters": 32}}]},
        "optimizer": {"learning_rate": learning_rate},
        "train": {"epochs": 2},
    }
    (run_dir / run_layout.CONFIG).write_text(json.dumps(config))
    metrics = {}
    if accuracy is not None:
        metrics = {
            "accuracy": accuracy,
            "macro_f1": accuracy - 0.01,
            "calibration": {"ece": 0.1},
            "num_examples": 100,
            "per_class": per_class or {},
            "confusion_matrix": [[1]],
        }
        (run_dir / run_layout.METRICS).write_text(json.dumps(metrics))
    record = {
        "run_id": run_id,
        "name": config["name"],
        "status": status,
        "reason": "TrainingError: boom" if status == records.FAILED else None,
        "started": started,
        "ended": None,
        "duration_s": 65.0,
        "config": config,
        "dataset_version": "v1",
        "git": None,
        "environment": {},
        "epochs": epochs or [],
        "metrics": metrics,
        "artefacts": {},
        **fields,
    }
    records.write(run_dir, record)
    return run_dir
