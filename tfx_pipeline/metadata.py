"""The pipeline's metadata store (SQLite): runs, executions, artifacts and events linking them."""

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from core import errors

# Execution states. A cached execution reuses the outputs of the completed one it names.
RUNNING, COMPLETED, CACHED, FAILED, SKIPPED = "running", "completed", "cached", "failed", "skipped"
INPUT, OUTPUT = "input", "output"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, started REAL NOT NULL, ended REAL, status TEXT NOT NULL,
    config_hash TEXT NOT NULL, config TEXT NOT NULL, no_cache INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(id),
    component TEXT NOT NULL, cache_key TEXT NOT NULL, config_hash TEXT NOT NULL,
    status TEXT NOT NULL, started REAL NOT NULL, ended REAL, error TEXT,
    reused_execution_id INTEGER REFERENCES executions(id)
);
CREATE INDEX IF NOT EXISTS executions_by_key ON executions(component, cache_key, status);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, uri TEXT,
    fingerprint TEXT NOT NULL, properties TEXT NOT NULL, created REAL NOT NULL,
    producer_execution_id INTEGER REFERENCES executions(id)
);
CREATE TABLE IF NOT EXISTS events (
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    kind TEXT NOT NULL, name TEXT NOT NULL
);
"""


class NotFound(errors.UserError):
    """No run, execution or artifact matches what was asked for."""


@dataclass
class Artifact:
    """A typed output: a location (uri, may be None for a pure record) and its properties."""

    type: str
    uri: str | None
    properties: dict = field(default_factory=dict)
    fingerprint: str = ""
    id: int | None = None
    producer_execution_id: int | None = None


@dataclass(frozen=True)
class Execution:
    id: int
    run_id: str
    component: str
    cache_key: str
    config_hash: str
    status: str
    started: float
    ended: float | None
    error: str | None
    reused_execution_id: int | None

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


class Store:
    """One SQLite file; every write commits at once so a crash leaves a consistent record."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Runs ------------------------------------------------------------------------------------
    def start_run(self, config_hash: str, config: dict, no_cache: bool) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with self.db:
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, NULL, ?, ?, ?, ?)",
                (run_id, time.time(), RUNNING, config_hash, json.dumps(config), int(no_cache)),
            )
        return run_id

    def end_run(self, run_id: str, status: str) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET ended = ?, status = ? WHERE id = ?", (time.time(), status, run_id)
            )

    def run(self, run_id: str | None = None) -> dict:
        """A pipeline run (the last one when run_id is None) as a dict."""
        if run_id is None:
            row = self.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT 1").fetchone()
            if row is None:
                raise NotFound(f"no pipeline run recorded in {self.path} yet")
        else:
            row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"no pipeline run {run_id!r} in {self.path}")
        return {**dict(row), "config": json.loads(row["config"])}

    # Executions ------------------------------------------------------------------------------
    def start_execution(self, run_id: str, component: str, cache_key: str, config_hash: str) -> int:
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO executions (run_id, component, cache_key, config_hash, status, "
                "started) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, component, cache_key, config_hash, RUNNING, time.time()),
            )
        return cursor.lastrowid

    def end_execution(
        self, execution_id: int, status: str, error: str | None = None, reused: int | None = None
    ) -> None:
        with self.db:
            self.db.execute(
                "UPDATE executions SET status = ?, ended = ?, error = ?, reused_execution_id = ? "
                "WHERE id = ?",
                (status, time.time(), error, reused, execution_id),
            )

    def execution(self, execution_id: int) -> Execution:
        row = self.db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
        if row is None:
            raise NotFound(f"no execution {execution_id} in {self.path}")
        return Execution(**dict(row))

    def executions(self, run_id: str) -> list[Execution]:
        rows = self.db.execute(
            "SELECT * FROM executions WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
        return [Execution(**dict(row)) for row in rows]

    def cached_execution(self, component: str, cache_key: str) -> Execution | None:
        """The newest completed execution of `component` with this cache key."""
        row = self.db.execute(
            "SELECT * FROM executions WHERE component = ? AND cache_key = ? AND status = ? "
            "ORDER BY id DESC LIMIT 1",
            (component, cache_key, COMPLETED),
        ).fetchone()
        return None if row is None else Execution(**dict(row))

    # Artifacts and events --------------------------------------------------------------------
    def put_artifact(self, artifact: Artifact, producer: int | None) -> Artifact:
        """Records an output of `producer`, or an input found outside the DAG (None)."""
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO artifacts (type, uri, fingerprint, properties, created, "
                "producer_execution_id) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    artifact.type,
                    artifact.uri,
                    artifact.fingerprint,
                    json.dumps(artifact.properties, sort_keys=True, default=str),
                    time.time(),
                    producer,
                ),
            )
        artifact.id, artifact.producer_execution_id = cursor.lastrowid, producer
        return artifact

    def find_artifact(self, type_: str, fingerprint: str) -> Artifact | None:
        """The oldest artifact of this type and fingerprint (external inputs are stored once)."""
        row = self.db.execute(
            "SELECT * FROM artifacts WHERE type = ? AND fingerprint = ? ORDER BY id LIMIT 1",
            (type_, fingerprint),
        ).fetchone()
        return None if row is None else to_artifact(row)

    def add_event(self, execution_id: int, artifact_id: int, kind: str, name: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?)", (execution_id, artifact_id, kind, name)
            )

    def artifact(self, artifact_id: int) -> Artifact:
        row = self.db.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        if row is None:
            raise NotFound(f"no artifact {artifact_id} in {self.path}")
        return to_artifact(row)

    def artifacts(self, type_: str | None = None) -> list[Artifact]:
        """Every artifact (of one type), newest first."""
        if type_ is None:
            rows = self.db.execute("SELECT * FROM artifacts ORDER BY id DESC").fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM artifacts WHERE type = ? ORDER BY id DESC", (type_,)
            ).fetchall()
        return [to_artifact(row) for row in rows]

    def events(self, execution_id: int, kind: str) -> dict[str, Artifact]:
        """An execution's input or output artifacts by name."""
        rows = self.db.execute(
            "SELECT events.name, artifacts.* FROM events JOIN artifacts "
            "ON artifacts.id = events.artifact_id "
            "WHERE events.execution_id = ? AND events.kind = ? ORDER BY events.rowid",
            (execution_id, kind),
        ).fetchall()
        return {row["name"]: to_artifact(row) for row in rows}


def to_artifact(row: sqlite3.Row) -> Artifact:
    return Artifact(
        type=row["type"],
        uri=row["uri"],
        properties=json.loads(row["properties"]),
        fingerprint=row["fingerprint"],
        id=row["id"],
        producer_execution_id=row["producer_execution_id"],
    )
