"""Run directories: their layout, ids and the files every run writes."""

import json
import time
import uuid
from pathlib import Path

from configs import loader, schema
from trainer import mirror

CONFIG = "config.yaml"  # the resolved config the run used
HISTORY = "history.csv"  # one row per epoch
METRICS = "metrics.json"  # test-split evaluation
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
EXPORT = "export"  # TF Serving layout: export/<version>/saved_model.pb
SAVED_MODEL_FILE = "saved_model.pb"  # what makes export/<n>/ a complete SavedModel
KERAS_MODEL = "model.keras"
BACKBONE_WEIGHTS = "backbone.weights.h5"  # the feature extractor alone, for model.weights


def new_run_id(name: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{uuid.uuid4().hex[:6]}"


def create(
    cfg: schema.Config, write: bool = True, run_mirror: mirror.RunMirror | None = None
) -> Path:
    """runs_dir/<run_id>/ with its sub-folders and the resolved config.

    train.run_id names the folder (workers of one multi-worker run share it, and a run started
    again with the same id resumes); without it a new id is made. `write=False` (non-chief
    workers) only computes the path. With `run_mirror` (runs_dir in a bucket) the folder is its
    local staging copy, pulled from the bucket first.
    """
    run_id = cfg.train.run_id or new_run_id(cfg.name)
    runs_dir = run_mirror.pull(run_id) if run_mirror else Path(cfg.train.runs_dir)
    run_dir = runs_dir / run_id
    if write:
        for sub in (TENSORBOARD, CHECKPOINTS, EXPORT):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        loader.save(cfg, run_dir / CONFIG)
    return run_dir


def next_export_version(run_dir: Path) -> int:
    """1 for a new run; one more than the newest export when a finished run is resumed."""
    numbers = [int(p.name) for p in (run_dir / EXPORT).iterdir() if p.name.isdigit()]
    return max(numbers, default=0) + 1


def saved_model_versions(base: Path) -> dict[int, Path]:
    """{n: base/n} for every numbered folder under `base` holding a complete SavedModel, in
    TF Serving's layout (a run's export/, or a model's folder in a store), sorted by n."""
    if not base.is_dir():
        return {}
    found = {
        int(child.name): child
        for child in base.iterdir()
        if child.name.isdigit() and (child / SAVED_MODEL_FILE).is_file()
    }
    return dict(sorted(found.items()))


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
