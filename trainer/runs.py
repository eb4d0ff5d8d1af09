"""Creating run folders: their ids, sub-folders and the resolved config (the layout is
core/run_layout.py)."""

import time
import uuid
from pathlib import Path

from configs import loader, schema
from core import run_layout
from trainer import mirror


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
        for sub in (run_layout.TENSORBOARD, run_layout.CHECKPOINTS, run_layout.EXPORT):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        loader.save(cfg, run_dir / run_layout.CONFIG)
    return run_dir
