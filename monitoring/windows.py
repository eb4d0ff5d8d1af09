"""Served statistics looked back on: the windows a server wrote, or its JSON route."""

import datetime
import json
import os

import httpx

from core import errors
from monitoring import recorder, stats, storage

MAX_WINDOW_SECONDS = 86400  # serving.monitoring.window_seconds' upper bound


class MonitoringError(errors.UserError):
    """Served statistics that cannot be found or read; the message says where to look."""


def stamp_seconds(name: str) -> float | None:
    """The start time in a window file's name (`<YYYYmmddTHHMMSSZ>-<run id>.json`)."""
    try:
        moment = datetime.datetime.strptime(name.split("-", 1)[0], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.UTC).timestamp()


def read_windows(
    stats_dir: str, model: str, since: float, version: int | None = None
) -> list[stats.Window]:
    """The windows of `model` (one version or all) in `stats_dir` that end after `since`."""
    fs, root = storage.filesystem(stats_dir)
    if not fs.isdir(f"{root}/{model}"):
        found = (
            sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))
            if fs.isdir(root)
            else None
        )
        where = f"it holds {found}" if found is not None else "it does not exist"
        raise MonitoringError(
            f"no statistics of model {model!r} in {stats_dir} ({where}); give the folder "
            "`imgclf serve` writes to (serving.monitoring.dir) with --stats-dir, or --server"
        )
    pattern = recorder.windows_dir(root, model, "*" if version is None else version)
    windows = []
    for path in sorted(fs.glob(f"{pattern}/*.json")):
        start = stamp_seconds(os.path.basename(path))
        if start is None or start + MAX_WINDOW_SECONDS <= since:
            continue
        try:
            window = stats.Window.from_json(json.loads(fs.cat_file(path)))
        except (ValueError, KeyError, TypeError) as error:
            raise MonitoringError(f"{path} is not a statistics window: {error}") from None
        if window.end > since:
            windows.append(window)
    return windows


def fetch_window(
    server: str, model: str, since: float, version: int | None = None, timeout: float = 30
) -> stats.Window | None:
    """The merged window a running server holds in memory for `model` since `since`."""
    url = f"{server.rstrip('/')}/monitoring/models/{model}"
    params = {"since": datetime.datetime.fromtimestamp(since, datetime.UTC).isoformat()}
    if version is not None:
        params["version"] = str(version)
    try:
        response = httpx.get(url, params=params, timeout=timeout)
    except httpx.HTTPError as error:
        raise MonitoringError(
            f"cannot reach {url} ({error}); give the server's REST address, e.g. "
            "http://127.0.0.1:8501"
        ) from None
    if response.status_code != 200:
        raise MonitoringError(f"{url} answered {response.status_code}: {response.text[:300]}")
    merged = response.json().get("stats")
    return None if merged is None else stats.Window.from_json(merged)
