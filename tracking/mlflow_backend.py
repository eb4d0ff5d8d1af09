"""Optional MLflow tracking of a run: params, per-epoch and test metrics, artefacts and model.

Used only when tracking.mlflow.uri is set; MLflow (the `mlflow` extra) is imported only then.
"""

import logging
import os
import re
import time
import urllib.parse
from pathlib import Path

from configs import schema
from core import errors, run_layout
from tracking import hparams, records

INSTALL_HINT = "pip install imgclf[mlflow]"
MODEL_ARTIFACT_PATH = "model"  # where the exported SavedModel goes among the run's artefacts
# Top-level run files logged as artefacts (PNGs and reports the evaluator writes included).
ARTEFACT_SUFFIXES = (".yaml", ".json", ".csv", ".html", ".png", ".txt", ".md")
# Folders that are not logged: TensorBoard events and checkpoints are large and local-only, the
# export goes under MODEL_ARTIFACT_PATH.
SKIPPED_FOLDERS = (run_layout.TENSORBOARD, run_layout.CHECKPOINTS, run_layout.EXPORT)
# Figures about the run rather than the test split (run.json's "training", copied into
# metrics.json by the evaluator): logged without the test_ prefix.
RUN_METRICS = ("epochs_run", "best_epoch", "train_seconds")
TEST_PREFIX = "test_"
MAX_METRICS_PER_BATCH = 1000  # MLflow's limits on one log_batch call
MAX_PARAMS_PER_BATCH = 100
TAG_RUN_ID = "imgclf.run_id"
TAG_REASON = "imgclf.failure_reason"

logger = logging.getLogger(__name__)


class MlflowError(errors.UserError):
    """MLflow is missing or its store cannot be used; the message says how to fix it."""


class Tracker:
    """One MLflow run mirroring one imgclf run."""

    def __init__(self, client, mlflow_run_id: str, cfg: schema.MlflowConfig):
        self.client = client
        self.run_id = mlflow_run_id
        self.cfg = cfg

    def finish(self, run_dir: Path) -> str:
        """Logs epochs, test metrics, artefacts and the model, marks the run FINISHED and returns
        a line saying where. A failure to log is a warning: the trained run stays complete."""
        try:
            record = records.read(run_dir)
            self._log_metrics(record)
            logged = self._log_artefacts(Path(run_dir), record)
            self.client.set_terminated(self.run_id, "FINISHED")
        except Exception as error:  # any store error: keep the finished training
            logger.warning("MLflow logging of %s failed: %s", run_dir, error)
            self._terminate_quietly("FAILED")
            return f"train: MLflow logging failed ({type(error).__name__}: {first_line(error)})"
        return (
            f"train: logged to MLflow run {self.run_id} (experiment {self.cfg.experiment}, "
            f"{len(logged)} artefact(s)) at {self.cfg.uri}"
        )

    def fail(self, run_dir: Path, error: BaseException) -> None:
        """Logs the epochs finished so far and the reason, and marks the MLflow run FAILED."""
        try:
            record = records.read(run_dir)
            self.client.set_tag(self.run_id, TAG_REASON, (record.get("reason") or "")[:5000])
            self._log_metrics(record)
            self.client.log_artifact(self.run_id, str(Path(run_dir) / run_layout.RECORD))
        except Exception as logging_error:  # the training error matters more
            logger.warning("MLflow logging of the failure of %s failed: %s", run_dir, logging_error)
        self._terminate_quietly("FAILED")

    def _terminate_quietly(self, status: str) -> None:
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as error:
            logger.warning("could not mark MLflow run %s %s: %s", self.run_id, status, error)

    def log_evaluation(self, run_dir: Path) -> list[str]:
        """Test metrics that are new or changed since `finish`, and the run folder's files
        again (report.html, charts, blessing.json appear); the model once, when `finish` came
        before the export (the flow exports after training)."""
        record = records.load(run_dir)  # the folder's metrics.json, not the record's copy
        logged = self.client.get_run(self.run_id).data.metrics
        final = {
            name: value
            for name, value in final_metrics(record).items()
            if logged.get(name) != value
        }
        self._log_batches(self._metrics(final, step=0))
        listed = self.client.list_artifacts(self.run_id)
        model_logged = any(artifact.path == MODEL_ARTIFACT_PATH for artifact in listed)
        return self._log_artefacts(Path(run_dir), record, model=not model_logged)

    def _log_metrics(self, record: dict) -> None:
        entries = [
            metric
            for epoch in record.get("epochs", [])
            for metric in self._metrics(
                {k: v for k, v in epoch.items() if k != "epoch"}, int(epoch["epoch"])
            )
        ]
        self._log_batches(entries + self._metrics(final_metrics(record), step=0))

    def _metrics(self, values: dict, step: int) -> list:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        return [
            Metric(metric_name(key), float(value), stamp, step)
            for key, value in values.items()
            if records.is_number(value)
        ]

    def _log_batches(self, entries: list) -> None:
        for first in range(0, len(entries), MAX_METRICS_PER_BATCH):
            self.client.log_batch(
                self.run_id, metrics=entries[first : first + MAX_METRICS_PER_BATCH]
            )

    def _log_artefacts(self, run_dir: Path, record: dict, model: bool = True) -> list[str]:
        logged = []
        for entry in sorted(run_dir.iterdir()):
            if entry.name.startswith(".") or entry.name in SKIPPED_FOLDERS:
                continue
            if entry.is_file() and entry.suffix in ARTEFACT_SUFFIXES:
                self.client.log_artifact(self.run_id, str(entry))
                logged.append(entry.name)
            elif entry.is_dir():
                self.client.log_artifacts(self.run_id, str(entry), artifact_path=entry.name)
                logged.append(f"{entry.name}/")
        export = record.get("artefacts", {}).get("export")
        if model and self.cfg.log_model and export:
            self.client.log_artifacts(
                self.run_id, str(run_dir / export), artifact_path=MODEL_ARTIFACT_PATH
            )
            logged.append(f"{MODEL_ARTIFACT_PATH}/")
        return logged


def start(cfg: schema.MlflowConfig, run_dir: Path) -> Tracker | None:
    """Opens an MLflow run for the imgclf run at run_dir (its run.json must exist) and logs the
    flattened config as params; None when tracking.mlflow.uri is unset."""
    if cfg.uri is None:
        return None
    client_class = import_client()
    if is_file_store(cfg.uri):
        # MLflow 3 refuses its file store unless opted in; a file: uri in the config is that
        # choice made explicitly (the store works, it only gets no new features).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    record = records.read(run_dir)
    tags = {
        TAG_RUN_ID: run_dir.name,
        "imgclf.dataset_version": str(record.get("dataset_version")),
        "imgclf.attempt": str(record.get("attempts", 1)),
    }
    if record.get("git"):
        tags["mlflow.source.git.commit"] = record["git"]["commit"]
    try:
        client = client_class(tracking_uri=cfg.uri)
        experiment = client.get_experiment_by_name(cfg.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(cfg.experiment)
        )
        mlflow_run = client.create_run(experiment_id, run_name=run_dir.name, tags=tags)
    except Exception as error:  # MLflow raises many kinds for a store it cannot use
        raise MlflowError(
            f"tracking.mlflow.uri={cfg.uri}: MLflow could not open the store "
            f"({type(error).__name__}: {first_line(error)}){store_hint(cfg.uri)}"
        ) from None
    tracker = Tracker(client, mlflow_run.info.run_id, cfg)
    log_params(client, tracker.run_id, record["config"])
    records.update(
        run_dir,
        mlflow={
            "uri": cfg.uri,
            "experiment": cfg.experiment,
            "experiment_id": experiment_id,
            "run_id": tracker.run_id,
        },
    )
    return tracker


def log_evaluation(cfg: schema.MlflowConfig, run_dir: Path) -> str | None:
    """For steps after training that add to the run folder (`imgclf train`'s evaluation): logs
    their metrics and files to the run's MLflow run, named in its run.json. None when the run
    was not tracked with MLflow."""
    record = records.read(run_dir) or {}
    linked = record.get("mlflow")
    if cfg.uri is None or not linked:
        return None
    client_class = import_client()
    if is_file_store(linked["uri"]):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    tracker = Tracker(client_class(tracking_uri=linked["uri"]), linked["run_id"], cfg)
    try:
        logged = tracker.log_evaluation(Path(run_dir))
    except Exception as error:  # as in Tracker.finish: the run itself is done
        logger.warning("MLflow logging of the evaluation of %s failed: %s", run_dir, error)
        return f"evaluate: MLflow logging failed ({type(error).__name__}: {first_line(error)})"
    return f"evaluate: logged {len(logged)} artefact(s) to MLflow run {tracker.run_id}"


def final_metrics(record: dict) -> dict[str, float]:
    """The record's test metrics as MLflow metric names (test_accuracy, test_per_class.cat.f1),
    with the run's own figures (epochs_run, train_seconds, duration_s) unprefixed."""
    training = record.get("training") or {}
    final = {key: training[key] for key in RUN_METRICS if records.is_number(training.get(key))}
    final.update(
        {
            key if key in RUN_METRICS else TEST_PREFIX + key: value
            for key, value in records.flat_metrics(record.get("metrics") or {}).items()
        }
    )
    if record.get("duration_s") is not None:
        final["duration_s"] = record["duration_s"]
    return {metric_name(key): value for key, value in final.items()}


def log_params(client, mlflow_run_id: str, config: dict) -> None:
    """The config flattened as in TensorBoard's HParams view: {"optimizer.learning_rate": ...}."""
    from mlflow.entities import Param

    params = [Param(key, str(value)) for key, value in hparams.flatten_hparams(config).items()]
    for first in range(0, len(params), MAX_PARAMS_PER_BATCH):
        client.log_batch(mlflow_run_id, params=params[first : first + MAX_PARAMS_PER_BATCH])


def import_client():
    """mlflow.tracking.MlflowClient, or an error naming the extra to install."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MlflowError(
            f"tracking.mlflow.uri is set but MLflow is not installed: {INSTALL_HINT} "
            "(or unset tracking.mlflow.uri)"
        ) from None
    return MlflowClient


def is_file_store(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in ("", "file")


def store_hint(uri: str) -> str:
    scheme = urllib.parse.urlparse(uri).scheme.split("+")[0]
    if scheme in ("sqlite", "postgresql", "mysql", "mssql"):
        return (
            "; database stores need SQLAlchemy and Alembic, which mlflow-skinny lacks: "
            "pip install mlflow, or use a file: uri or an MLflow server (http://...)"
        )
    return ""


def metric_name(key: str) -> str:
    """MLflow accepts letters, digits, _ - . / and spaces in names; anything else becomes _."""
    return re.sub(r"[^\w\-./ ]", "_", key)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
