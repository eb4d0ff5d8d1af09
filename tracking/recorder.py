"""A run's record from its start to its end: run.json, and MLflow when configured."""

from pathlib import Path

from configs import loader, schema
from tracking import environment, mlflow_backend, records

# The checkout whose git revision a run records: the code that trains, wherever it is run from.
SOURCE_DIR = Path(__file__).resolve().parents[1]


class Recorder:
    """Records one training run: `start` once its folder exists, then `complete` or `fail`.

    Nothing is recorded before `start` (a dry run, or a run stopped by a bad dataset or config
    before its folder exists) nor on multi-worker workers other than the chief.
    """

    def __init__(self, cfg: schema.Config):
        self.cfg = cfg
        self.run_dir: Path | None = None
        self.tracker: mlflow_backend.Tracker | None = None

    def start(self, run_dir: Path, dataset_version: str, chief: bool) -> None:
        """run.json with status running, the config, dataset, git revision and environment;
        opens the MLflow run (a missing MLflow fails here, before any training)."""
        if not chief:
            return
        records.start(
            run_dir,
            loader.to_dict(self.cfg),
            dataset_version,
            environment.git_commit(SOURCE_DIR),
            environment.environment(),
        )
        self.run_dir = run_dir
        self.tracker = mlflow_backend.start(self.cfg.tracking.mlflow, run_dir)

    def complete(self, training: dict, metrics: dict | None = None) -> None:
        """Status completed with epochs, duration, artefacts, the trainer's `training` facts and
        any test `metrics` it scored; MLflow gets them all."""
        if self.run_dir is None:
            return
        records.complete(self.run_dir, training, metrics)
        if self.tracker is not None:
            print(self.tracker.finish(self.run_dir))

    def fail(self, error: BaseException) -> None:
        """Status failed with the exception's type and message; the caller re-raises."""
        if self.run_dir is None:
            return
        records.fail(self.run_dir, error)
        if self.tracker is not None:
            self.tracker.fail(self.run_dir, error)
