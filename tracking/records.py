"""run.json: one run's record (config, dataset, source, environment, epochs, metrics, status)."""

import csv
import datetime
import json
import math
import os
import socket
import time
from pathlib import Path

from core import atomic_write, run_layout, saved_models

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
# Shown for a "running" record whose process is gone (killed): no code path wrote its end.
STALE = "running?"
# A folder with a config.yaml but no run.json, e.g. trained before runs were recorded.
UNRECORDED = "unrecorded"

# Artefact names of the files every run may write; any other entry is listed by its file name.
ARTEFACT_NAMES = {
    run_layout.CONFIG: "config",
    run_layout.HISTORY: "history",
    run_layout.METRICS: "metrics",
    run_layout.TENSORBOARD: "tensorboard",
    run_layout.CHECKPOINTS: "checkpoints",
    run_layout.KERAS_MODEL: "keras_model",
    run_layout.BACKBONE_WEIGHTS: "backbone_weights",
    "report.html": "report",
    "blessing.json": "blessing",
}


def missing_record(run_dir: Path) -> str:
    return f"{Path(run_dir) / run_layout.RECORD} does not exist; records.start writes it"


def start(
    run_dir: Path,
    config: dict,
    dataset_version: str,
    git: dict | None,
    environment: dict,
) -> dict:
    """Writes the record of a run that starts now: status running, what it runs on and with.

    A run started again with the same id (a resume) keeps counting in `attempts`.
    """
    previous = read(run_dir) or {}
    record = {
        "run_id": run_dir.name,
        "name": config.get("name"),
        "status": RUNNING,
        "reason": None,
        "started": now(),
        "ended": None,
        "duration_s": None,
        "attempts": previous.get("attempts", 0) + 1,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "config": config,
        "dataset_version": dataset_version,
        "git": git,
        "environment": environment,
        "epochs": read_epochs(run_dir),
        "training": {},
        "metrics": {},
        "artefacts": scan_artefacts(run_dir),
    }
    write(run_dir, record)
    return record


def complete(run_dir: Path, training: dict | None = None, metrics: dict | None = None) -> dict:
    """Marks the run completed, with its epochs, duration and artefacts, what the trainer found
    (`training`: run_layout.TRAINING_KEYS) and test metrics: metrics.json's once the evaluator
    wrote it, until then `metrics` (a trainer that scored the test split itself, as a tuning
    trial does)."""
    return _end(run_dir, COMPLETED, None, training, metrics)


def fail(run_dir: Path, error: BaseException) -> dict:
    """Marks the run failed; the reason is the exception's type and message."""
    message = str(error).strip()
    reason = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return _end(run_dir, FAILED, reason)


def update(run_dir: Path, **fields) -> dict:
    """Adds or replaces top-level fields of the record (e.g. the MLflow run it was logged to)."""
    record = read(run_dir)
    if record is None:
        raise FileNotFoundError(missing_record(run_dir))
    record.update(fields)
    write(run_dir, record)
    return record


def _end(
    run_dir: Path,
    status: str,
    reason: str | None,
    training: dict | None = None,
    metrics: dict | None = None,
) -> dict:
    record = read(run_dir)
    if record is None:
        raise FileNotFoundError(missing_record(run_dir))
    ended = now()
    record.update(
        status=status,
        reason=reason,
        ended=ended,
        duration_s=round(seconds_between(record["started"], ended), 1),
        epochs=read_epochs(run_dir),
        training=training or {},
        metrics=read_json(run_dir / run_layout.METRICS) or metrics or {},
        artefacts=scan_artefacts(run_dir),
    )
    write(run_dir, record)
    return record


def refresh(run_dir: Path) -> dict:
    """Rewrites the record's metrics and artefacts from the run folder, keeping its status: for
    steps after training that add to the folder (the evaluator's metrics.json, report.html)."""
    record = read(run_dir)
    if record is None:
        raise FileNotFoundError(missing_record(run_dir))
    record.update(
        metrics=read_json(Path(run_dir) / run_layout.METRICS) or record.get("metrics") or {},
        artefacts=scan_artefacts(run_dir),
    )
    write(run_dir, record)
    return record


def load(run_dir: Path) -> dict:
    """The record as it stands now. The run folder's files are the truth where they changed
    after the record was written: artefacts are re-scanned (report.html written after training
    appears), metrics re-read from metrics.json (the evaluator rewrites it with more metrics),
    and a running run gets the epochs finished so far.

    A folder with a config but no run.json gives a record of status `unrecorded` built from its
    files.
    """
    run_dir = Path(run_dir)
    record = read(run_dir)
    if record is None:
        if not (run_dir / run_layout.CONFIG).is_file():
            raise FileNotFoundError(
                f"{run_dir} holds neither {run_layout.RECORD} nor {run_layout.CONFIG}"
            )
        record = _unrecorded(run_dir)
    record["artefacts"] = scan_artefacts(run_dir)
    record["metrics"] = read_json(run_dir / run_layout.METRICS) or record.get("metrics") or {}
    if record["status"] == RUNNING:
        record["epochs"] = read_epochs(run_dir)
    return record


def _unrecorded(run_dir: Path) -> dict:
    import yaml

    config = yaml.safe_load((run_dir / run_layout.CONFIG).read_text()) or {}
    metrics = read_json(run_dir / run_layout.METRICS) or {}
    started = datetime.datetime.fromtimestamp((run_dir / run_layout.CONFIG).stat().st_mtime)
    return {
        "run_id": run_dir.name,
        "name": config.get("name"),
        "status": UNRECORDED,
        "reason": f"no {run_layout.RECORD} (trained before runs were recorded?)",
        "started": started.astimezone().isoformat(timespec="seconds"),
        "ended": None,
        "duration_s": metrics.get("train_seconds"),
        "config": config,
        "dataset_version": metrics.get("dataset_version"),
        "git": None,
        "environment": None,
        "epochs": read_epochs(run_dir),
        # Runs of before run.json kept their training facts in metrics.json.
        "training": {key: metrics[key] for key in run_layout.TRAINING_KEYS if key in metrics},
        "metrics": metrics,
        "artefacts": {},
    }


def display_status(record: dict) -> str:
    """The status to show: `running?` for a running record whose process on this host is gone.

    Only the host that ran it can tell; elsewhere a killed run stays `running`.
    """
    status = record.get("status", UNRECORDED)
    if status != RUNNING or record.get("host") != socket.gethostname() or not record.get("pid"):
        return status
    return status if _process_alive(int(record["pid"])) else STALE


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def read(run_dir: Path) -> dict | None:
    """run.json as written, or None when the run has none."""
    return read_json(Path(run_dir) / run_layout.RECORD)


def write(run_dir: Path, record: dict) -> None:
    """Writes run.json atomically: a reader never sees half a file."""
    atomic_write.write_json(Path(run_dir) / run_layout.RECORD, record)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def read_epochs(run_dir: Path) -> list[dict]:
    """history.csv as one dict per epoch: {"epoch": 0, "loss": ..., "val_accuracy": ...}."""
    path = Path(run_dir) / run_layout.HISTORY
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return [
            {
                key: int(value) if key == "epoch" else float(value)
                for key, value in row.items()
                if value not in ("", None)
            }
            for row in csv.DictReader(file)
        ]


def scan_artefacts(run_dir: Path) -> dict[str, str]:
    """{name: path relative to the run folder} of what the run folder holds now.

    `export` is the newest complete SavedModel version; run.json itself is not listed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {}
    artefacts = {}
    for entry in sorted(run_dir.iterdir()):
        if entry.name == run_layout.RECORD or entry.name.startswith(".") or entry.suffix == ".tmp":
            continue
        if entry.name == run_layout.EXPORT:
            versions = saved_models.saved_model_versions(entry)
            if versions:
                artefacts["export"] = str(list(versions.values())[-1].relative_to(run_dir))
            continue
        artefacts[ARTEFACT_NAMES.get(entry.name, entry.name)] = entry.name
    return artefacts


def flat_metrics(metrics: dict, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """{dotted key: number} of every finite number in nested metrics (lists such as the
    confusion matrix are left out): {"accuracy": 0.9, "precision.macro": 0.9, ...}."""
    flat: dict[str, float] = {}

    def visit(value, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if not prefix and key in skip:
                    continue
                visit(item, f"{prefix}.{key}" if prefix else str(key))
        elif is_number(value) and prefix:
            flat[prefix] = value

    visit(metrics, "")
    return flat


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def now() -> str:
    """The current time, local, ISO 8601 with its UTC offset (sorts and parses back)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def seconds_between(start: str, end: str) -> float:
    delta = datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)
    return delta.total_seconds()


def started_timestamp(record: dict) -> float:
    """Seconds since the epoch of the record's start (0 when unknown), for sorting."""
    try:
        return datetime.datetime.fromisoformat(record["started"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


def elapsed_s(record: dict) -> float | None:
    """duration_s, or for a running run the time since it started."""
    if record.get("duration_s") is not None:
        return record["duration_s"]
    if record.get("status") == RUNNING and record.get("started"):
        return time.time() - started_timestamp(record)
    return None
