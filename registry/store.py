"""The model store: push, list, promote, roll back and archive versions of exported models.

Layout (TF Serving's, so `tensorflow_model_server --model_config_file=<store>/models.config`
serves a store as it is):

    <store>/models.config                generated: every model's active versions and labels
    <store>/state.json                   labels and their history (what rollback walks back)
    <store>/.lock                        flock held by every command that changes the store
    <store>/.staging/<token>/            pushes still copying, each holding <token>.lock
    <store>/<model>/<version>/           the SavedModel as exported, plus registry.json
    <store>/<model>/.archive/<version>/  archived versions, outside what a server scans

A version folder appears by one rename of a complete, fsynced copy, and state.json and
models.config are replaced atomically, so readers see the store before or after a command,
never halfway.
"""

import contextlib
import datetime
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from core import atomic_write, run_layout, saved_models, signatures
from registry import atomic, errors, models_config, sources, staging

logger = logging.getLogger(__name__)

CONFIG_FILE = "models.config"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
STAGING_DIR = ".staging"
ARCHIVE_DIR = ".archive"
RECORD_FILE = "registry.json"  # inside each version folder
FORMAT = 1

ACTIVE, ARCHIVED = "active", "archived"
PRODUCTION, STAGING = "production", "staging"

# One folder name inside the store: no separators, no leading dot, no "..". Dots are allowed
# (serving.model_name allows them), so the store's own files are reserved.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# serving.config: the rebased copy `imgclf registry serving-config` writes for containers.
RESERVED_NAMES = (CONFIG_FILE, STATE_FILE, "serving.config")
LABEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Version:
    """One version of a model, as registry.json recorded it when it was pushed."""

    model: str
    version: int
    path: Path
    status: str  # ACTIVE (served) or ARCHIVED
    labels: tuple[str, ...]
    run_id: str | None
    source: str | None
    dataset_version: str | None
    metrics: dict
    blessing: dict | None  # the blessing.json found at push time; None when there was none
    created: str | None

    @property
    def blessed(self) -> bool:
        """True only for an explicit "blessed": true; no blessing.json counts as not blessed."""
        return self.blessing is not None and self.blessing.get("blessed") is True


def check_model_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not MODEL_NAME.fullmatch(name)
        or ".." in name
        or name in RESERVED_NAMES
    ):
        raise errors.InvalidName(
            "model name must be 1-64 letters, digits, '_', '-' or '.', start with a letter or "
            f"digit, hold no '..' and not be {' or '.join(RESERVED_NAMES)} (received {name!r})"
        )
    return name


def check_label(label: str) -> str:
    if not isinstance(label, str) or not LABEL_NAME.fullmatch(label):
        raise errors.InvalidName(
            "label must be 1-64 of a-z, 0-9, '_' and '-', starting with a letter, "
            f"e.g. {PRODUCTION} or {STAGING} (received {label!r})"
        )
    return label


def check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise errors.InvalidName(f"version must be a positive integer (received {version!r})")
    return version


def push(
    store: str | Path,
    source: str | Path,
    model: str,
    lock_timeout_s: float = atomic.DEFAULT_LOCK_TIMEOUT_S,
) -> Version:
    """Copies a run's SavedModel into the store as `model`'s next version and serves it.

    `source` is a run folder (its newest export/<n>/), an export folder (its newest <n>/) or a
    version folder holding saved_model.pb. The copy runs outside the store lock, so pushes copy
    in parallel; only numbering and the final rename are serialised.
    """
    name = check_model_name(model)
    export_dir = sources.find_export(source)
    metadata = read_json(export_dir / signatures.METADATA_DIR / signatures.METADATA_FILE) or {}
    blessing, blessing_file = sources.read_blessing(export_dir)
    store = absolute(store)
    store.mkdir(parents=True, exist_ok=True)
    incoming = staging.Staging.open(store / STAGING_DIR, store / LOCK_FILE, name, lock_timeout_s)
    try:
        shutil.copytree(export_dir, incoming.path, dirs_exist_ok=True)
        atomic.fsync_tree(incoming.path)
        with changing(store, lock_timeout_s) as state:
            entry = model_state(state, name)
            model_dir = store / name
            model_dir.mkdir(exist_ok=True)
            number = max(entry["last_version"], *version_numbers(model_dir), 0) + 1
            record = {
                "format": FORMAT,
                "model": name,
                "version": number,
                "run_id": metadata.get("run_id") or sources.run_id_from_path(export_dir),
                "source": str(export_dir),
                "dataset_version": metadata.get("dataset_version"),
                "metrics": sources.read_metrics(export_dir, metadata),
                "blessing": blessing,
                "blessing_file": blessing_file,
                "blessed": blessing is not None and blessing["blessed"],
                "created": utc_now(),
                "status": ACTIVE,
            }
            atomic_write.write_json(
                incoming.path / RECORD_FILE, record, sort_keys=True, durable=True
            )
            os.rename(incoming.path, model_dir / str(number))
            atomic_write.fsync_dir(model_dir)
            entry["last_version"] = number
            pushed = load_version(store, name, number, state)
    finally:
        incoming.close()
    logger.info("pushed %s as %s version %d", export_dir, name, number)
    return pushed


def list_versions(
    store: str | Path,
    model: str | None = None,
    lock_timeout_s: float = atomic.DEFAULT_LOCK_TIMEOUT_S,
) -> list[Version]:
    """Every version of `model` (or of every model), archived ones included, in order."""
    name = None if model is None else check_model_name(model)
    store = existing_store(store)
    with atomic.locked(store / LOCK_FILE, exclusive=False, timeout_s=lock_timeout_s):
        state = read_state(store)
        if name is not None and not (store / name).is_dir():
            raise errors.NotFound(
                f"no model {name!r} in {store} (models: {model_names(store) or 'none'})"
            )
        names = [name] if name is not None else model_names(store)
        return [
            load_version(store, n, number, state)
            for n in names
            for number in sorted(version_dirs(store / n))
        ]


def promote(
    store: str | Path,
    model: str,
    version: int,
    label: str,
    force: bool = False,
    lock_timeout_s: float = atomic.DEFAULT_LOCK_TIMEOUT_S,
) -> Version:
    """Points `label` at `version`; production takes only blessed versions unless `force`."""
    name, number, label = check_model_name(model), check_version(version), check_label(label)
    store = existing_store(store)
    with changing(store, lock_timeout_s) as state:
        found = load_version(store, name, number, state)
        if found.status != ACTIVE:
            raise errors.RegistryError(
                f"{name} version {number} is archived; only active versions can take the "
                f"label {label!r}"
            )
        needs_force = label == PRODUCTION and not found.blessed
        if needs_force and not force:
            raise errors.NotBlessed(
                f"{name} version {number} is not blessed ({describe_blessing(found)}); bless "
                f'it (evaluate its run so that {run_layout.BLESSING} says "blessed": true, then '
                "push that run) or pass --force to promote it anyway"
            )
        entry = model_state(state, name)
        if entry["labels"].get(label) != number:
            entry["labels"][label] = number
            entry["history"].setdefault(label, []).append(
                {"version": number, "at": utc_now(), "forced": needs_force}
            )
        promoted = load_version(store, name, number, state)
    logger.info("%s: %s -> version %d", name, label, number)
    return promoted


def rollback(
    store: str | Path,
    model: str,
    label: str = PRODUCTION,
    lock_timeout_s: float = atomic.DEFAULT_LOCK_TIMEOUT_S,
) -> Version:
    """Moves `label` back to the version it pointed at before; repeated calls walk further back."""
    name, label = check_model_name(model), check_label(label)
    store = existing_store(store)
    with changing(store, lock_timeout_s) as state:
        entry = model_state(state, name)
        current = entry["labels"].get(label)
        if current is None:
            raise errors.NothingToRollBack(
                f"{name} has no {label!r} label; promote a version first"
            )
        history = entry["history"].setdefault(label, [])
        if not history or history[-1]["version"] != current:
            history.append({"version": current, "at": None, "forced": False})
        if len(history) < 2:
            raise errors.NothingToRollBack(
                f"the {label!r} label of {name} has only ever pointed at version {current}; "
                "there is no earlier version to roll back to"
            )
        previous = history[-2]["version"]
        if load_version(store, name, previous, state).status != ACTIVE:
            raise errors.RegistryError(
                f"cannot roll the {label!r} label of {name} back to version {previous}: it is "
                f"archived; promote another version with `imgclf registry promote`"
            )
        history.pop()
        entry["labels"][label] = previous
        restored = load_version(store, name, previous, state)
    logger.info("%s: %s rolled back from version %d to %d", name, label, current, previous)
    return restored


def archive(
    store: str | Path,
    model: str,
    version: int,
    lock_timeout_s: float = atomic.DEFAULT_LOCK_TIMEOUT_S,
) -> Version:
    """Takes `version` out of the served set into <model>/.archive/; its number is never reused."""
    name, number = check_model_name(model), check_version(version)
    store = existing_store(store)
    with changing(store, lock_timeout_s) as state:
        found = load_version(store, name, number, state)
        if found.status != ACTIVE:
            raise errors.RegistryError(f"{name} version {number} is already archived")
        if found.labels:
            raise errors.VersionLabelled(
                f"{name} version {number} holds the label(s) {', '.join(found.labels)}; move "
                "them first (promote another version to them, or roll them back), then archive"
            )
        atomic.remove_temp_files(found.path)  # left by an archive killed midway
        record = read_json(found.path / RECORD_FILE) or {}
        atomic_write.write_json(
            found.path / RECORD_FILE,
            {**record, "status": ARCHIVED, "archived": utc_now()},
            sort_keys=True,
            durable=True,
        )
        # Stop serving it before its files move, so a server never sees a listed version vanish.
        write_models_config(store, state)
        archive_dir = store / name / ARCHIVE_DIR
        archive_dir.mkdir(exist_ok=True)
        os.rename(found.path, archive_dir / str(number))
        atomic_write.fsync_dir(archive_dir)
        atomic_write.fsync_dir(store / name)
        archived = load_version(store, name, number, state)
    logger.info("%s: archived version %d", name, number)
    return archived


@contextlib.contextmanager
def changing(store: Path, lock_timeout_s: float):
    """Under the store's exclusive lock: yields state.json, then saves it and models.config.

    Nothing is saved when the block raises.
    """
    with atomic.locked(store / LOCK_FILE, timeout_s=lock_timeout_s):
        atomic.remove_temp_files(store)
        state = read_state(store)
        yield state
        state["updated"] = utc_now()
        atomic_write.write_json(store / STATE_FILE, state, sort_keys=True, durable=True)
        write_models_config(store, state)


def write_models_config(store: Path, state: dict) -> None:
    """models.config: each model's active versions and the labels pointing at them."""
    served = []
    for name in model_names(store):
        active = [n for n, path in version_dirs(store / name).items() if status(path) == ACTIVE]
        labels = model_state(state, name)["labels"] if name in state["models"] else {}
        dangling = {label: n for label, n in labels.items() if n not in active}
        if dangling:
            # TF Serving refuses a label on a version it does not load; better unlabelled.
            logger.warning("%s: labels %s point at no active version; left out", name, dangling)
        if active:
            labels = {label: n for label, n in labels.items() if label not in dangling}
            served.append(models_config.ServedModel(name, store / name, tuple(active), labels))
    models_config.write(store / CONFIG_FILE, served)


def describe_blessing(version: Version) -> str:
    if version.blessing is None:
        return f"no {run_layout.BLESSING} was found when it was pushed"
    reason = version.blessing.get("reason")
    return f'its {run_layout.BLESSING} says "blessed": false' + (f": {reason}" if reason else "")


def load_version(store: Path, name: str, number: int, state: dict) -> Version:
    path = version_dirs(store / name).get(number)
    if path is None:
        known = sorted(version_dirs(store / name))
        raise errors.NotFound(
            f"{name} has no version {number} in {store} (versions: {known or 'none'})"
        )
    record = read_json(path / RECORD_FILE) or {}
    labels = model_state(state, name)["labels"] if name in state["models"] else {}
    return Version(
        model=name,
        version=number,
        path=path,
        status=status(path),
        labels=tuple(sorted(label for label, n in labels.items() if n == number)),
        run_id=record.get("run_id"),
        source=record.get("source"),
        dataset_version=record.get("dataset_version"),
        metrics=record.get("metrics") or {},
        blessing=record.get("blessing"),
        created=record.get("created"),
    )


def status(version_dir: Path) -> str:
    # An archive killed between its two steps leaves an archived record outside .archive/.
    if version_dir.parent.name == ARCHIVE_DIR:
        return ARCHIVED
    return (read_json(version_dir / RECORD_FILE) or {}).get("status", ACTIVE)


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """{number: folder} of every complete version, active and archived."""
    found = {
        **saved_models.saved_model_versions(model_dir),
        **saved_models.saved_model_versions(model_dir / ARCHIVE_DIR),
    }
    return dict(sorted(found.items()))


def version_numbers(model_dir: Path) -> list[int]:
    """Every number in use, complete or not, so a new version never reuses one."""
    bases = (model_dir, model_dir / ARCHIVE_DIR)
    return [int(c.name) for b in bases if b.is_dir() for c in b.iterdir() if c.name.isdigit()]


def model_names(store: Path) -> list[str]:
    return sorted(
        child.name
        for child in store.iterdir()
        if child.is_dir() and MODEL_NAME.fullmatch(child.name) and ".." not in child.name
    )


def read_state(store: Path) -> dict:
    path = store / STATE_FILE
    if not path.is_file():
        return {"format": FORMAT, "models": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise errors.RegistryError(
            f"{path} is not valid JSON ({error}); it is only ever replaced whole, so something "
            "else wrote it: restore it from a backup"
        ) from None


def model_state(state: dict, name: str) -> dict:
    return state["models"].setdefault(name, {"last_version": 0, "labels": {}, "history": {}})


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def existing_store(store: str | Path) -> Path:
    store = absolute(store)
    if not store.is_dir():
        raise errors.NotFound(f"no model store at {store}; push a model into it first")
    return store


def absolute(path: str | Path) -> Path:
    # abspath, not resolve: a store reached through a symlink keeps that path in models.config.
    return Path(os.path.abspath(path))


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
