"""Finding runs: every run under a runs folder, one run by id or path, filters and sorting."""

import difflib
import fnmatch
import operator
import re
from dataclasses import dataclass
from pathlib import Path

from core import errors, locations, run_layout
from tracking import records

# Longest operators first, so that `>=` is not read as `>` followed by `=value`.
OPERATORS = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}
FILTER_PATTERN = re.compile(r"^\s*([\w.\-/]+?)\s*(>=|<=|!=|==|>|<|=)\s*(.*?)\s*$")
# Record fields a filter or sort key may name directly; anything else is looked up in the test
# metrics, then in the config (dotted: model.backbone).
RECORD_KEYS = ("run_id", "name", "status", "reason", "started", "ended", "duration_s")
KEY_ALIASES = {"id": "run_id", "dataset": "dataset_version", "duration": "duration_s"}
DEFAULT_SORT = "-started"


class RunNotFound(errors.UserError):
    """No run matches the id or path given."""


class BadQuery(errors.UserError):
    """A --filter or --sort that cannot be read."""


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    value: str

    def matches(self, record: dict) -> bool:
        found = lookup(record, self.key)
        if found is None:
            return self.op == "!=" and self.value.lower() not in ("", "null", "none")
        number = as_number(self.value)
        if number is not None and as_number(found) is not None:
            return OPERATORS[self.op](as_number(found), number)
        text = str(found).lower()
        wanted = self.value.lower()
        if self.op in ("=", "==", "!=") and any(c in wanted for c in "*?["):
            return fnmatch.fnmatchcase(text, wanted) == (self.op != "!=")
        return OPERATORS[self.op](text, wanted)


def parse_filter(text: str) -> Filter:
    """'accuracy>0.9', 'status=completed', 'model.backbone=cnn', 'name=digits*'."""
    match = FILTER_PATTERN.match(text)
    if not match:
        raise BadQuery(
            f"--filter must be KEY OP VALUE with OP one of {', '.join(OPERATORS)}, e.g. "
            f"'accuracy>0.9' or 'model.backbone=cnn' (received {text!r})"
        )
    return Filter(*match.groups())


def lookup(record: dict, key: str):
    """A filter or sort key's value in a record: a record field (status, started, dataset),
    a test metric (accuracy, precision.macro, per_class.cat.recall), a training fact
    (epochs_run, train_seconds) or a config key (model.backbone, optimizer.learning_rate); None
    when the record has none of these."""
    key = KEY_ALIASES.get(key, key)
    if key == "status":
        return records.display_status(record)
    if key in RECORD_KEYS or key == "dataset_version":
        return record.get(key)
    for root in (record.get("metrics"), record.get("training"), record.get("config")):
        value = dotted(root, key)
        if value is not None:
            return value
    return None


def dotted(tree, key: str):
    for part in key.split("."):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return None
    return tree


def as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def refuse_bucket(runs_dir: str | Path) -> None:
    if locations.is_url(str(runs_dir)):
        raise RunNotFound(
            f"runs folder {runs_dir} is a bucket; `imgclf runs` reads local folders: sync it "
            "first (aws s3 sync or gcloud storage rsync into runs/) and pass --runs-dir runs"
        )


def find_runs_dir(runs_dir: str | Path) -> Path:
    """`runs_dir` as a Path, or RunNotFound saying what to pass instead."""
    refuse_bucket(runs_dir)
    if not Path(runs_dir).is_dir():
        raise RunNotFound(
            f"runs folder {runs_dir} does not exist: pass --runs-dir (train.runs_dir of the "
            "training config)"
        )
    return Path(runs_dir)


def find_runs(runs_dir: str | Path) -> list[dict]:
    """Every run folder's record under runs_dir (runs with a run.json or at least a config)."""
    runs_dir = find_runs_dir(runs_dir)
    found = []
    for folder in sorted(runs_dir.iterdir()):
        if (folder / run_layout.RECORD).is_file() or (folder / run_layout.CONFIG).is_file():
            record = records.load(folder)
            record["path"] = str(folder)
            found.append(record)
    return found


def select(
    found: list[dict], filters: list[Filter], sort: str = DEFAULT_SORT, limit: int | None = None
) -> list[dict]:
    """The records passing every filter, sorted by `sort` ('-' first = descending; runs
    without the key last either way), at most `limit` of them."""
    kept = [record for record in found if all(f.matches(record) for f in filters)]
    key, descending = parse_sort(sort)

    def sort_value(record: dict):
        if key == "started":
            return records.started_timestamp(record)
        value = lookup(record, key)
        return as_number(value) if as_number(value) is not None else str(value)

    present = [r for r in kept if lookup(r, key) is not None]
    missing = [r for r in kept if lookup(r, key) is None]
    try:
        present.sort(key=sort_value, reverse=descending)
    except TypeError:  # numbers and text under one key: compare all as text
        present.sort(key=lambda r: str(lookup(r, key)), reverse=descending)
    ordered = present + missing
    return ordered[:limit] if limit is not None else ordered


def parse_sort(sort: str) -> tuple[str, bool]:
    """'-accuracy' or 'accuracy:desc' -> ("accuracy", True); 'started', 'started:asc' -> False.

    The :desc form exists because argparse reads a bare `--sort -accuracy` as an option (write
    `--sort=-accuracy`).
    """
    key, _, order = sort.partition(":")
    if order not in ("", "asc", "desc"):
        raise BadQuery(f"--sort order must be asc or desc (received {sort!r})")
    descending = key.startswith("-") or order == "desc"
    key = key.lstrip("-+").strip()
    if not key:
        raise BadQuery(f"--sort needs a key, e.g. accuracy, -accuracy (received {sort!r})")
    return key, descending


def resolve(ref: str, runs_dir: str | Path) -> Path:
    """A run folder from a path, a run id under runs_dir, or a unique part of an id (its
    timestamp or hex suffix). No match, or several, is a RunNotFound listing candidates."""
    as_path = Path(ref)
    if as_path.is_dir() and (
        (as_path / run_layout.RECORD).is_file() or (as_path / run_layout.CONFIG).is_file()
    ):
        return as_path
    runs_dir = Path(runs_dir)
    ids = (
        sorted(
            p.name
            for p in runs_dir.iterdir()
            if (p / run_layout.RECORD).is_file() or (p / run_layout.CONFIG).is_file()
        )
        if runs_dir.is_dir()
        else []
    )
    if ref in ids:
        return runs_dir / ref
    partial = [run_id for run_id in ids if ref in run_id]
    if len(partial) == 1:
        return runs_dir / partial[0]
    if partial:
        raise RunNotFound(
            f"run {ref!r} matches {len(partial)} runs in {runs_dir}: {', '.join(partial[:8])}; "
            "give more of the id"
        )
    close = difflib.get_close_matches(ref, ids, n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    where = f"{len(ids)} runs in {runs_dir}" if runs_dir.is_dir() else f"no folder {runs_dir}"
    raise RunNotFound(f"no run {ref!r} ({where}){hint}")
