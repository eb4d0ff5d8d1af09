"""Run directories: their layout, ids and the files every run writes."""

import json
import time
import uuid
from pathlib import Path

from configs import loader, schema

CONFIG = "config.yaml"  # the resolved config the run used
HISTORY = "history.csv"  # one row per epoch
METRICS = "metrics.json"  # test-split evaluation
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
EXPORT = "export"  # TF Serving layout: export/<version>/saved_model.pb
KERAS_MODEL = "model.keras"


def new_run_id(name: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{uuid.uuid4().hex[:6]}"


def create(cfg: schema.Config) -> Path:
    """Makes runs_dir/<run_id>/ with its sub-folders and the resolved config."""
    run_dir = Path(cfg.train.runs_dir) / new_run_id(cfg.name)
    for sub in (TENSORBOARD, CHECKPOINTS, EXPORT):
        (run_dir / sub).mkdir(parents=True)
    loader.save(cfg, run_dir / CONFIG)
    return run_dir


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
