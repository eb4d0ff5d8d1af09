"""Where dataset versions are kept: data.output_dir, a local folder or a bucket (s3://, gs://),
and the local copy of a bucket's version that every reader reads.

TensorFlow 2.21's file system has no s3:// and its gs:// cannot be pointed at an emulator or
another endpoint, so a bucket is reached through fsspec only, with the sources' settings
(transforms/sources/storage.py: data.storage_options per protocol, timeouts, retries), as
train.runs_dir mirrors run folders (trainer/mirror.py):

* Publish: ingest stages a version in a local folder (the DirectRunner's workers share this
  machine's disk), then every file goes to <output_dir>/<version>/ with dataset.json last.
  dataset.json is the commit marker: a folder without it is an interrupted upload, which nothing
  reads and the next publish completes. A complete version already there is kept (versions are
  content hashes), and `latest` is pointed at it. On a cluster runner the workers stage in the
  bucket itself (gs://), and publishing copies within it.
* Read: `local_copy` turns a bucket's version into a folder on this machine, downloaded once into
  the cache, $IMGCLF_CACHE (default ~/.cache/imgclf)/datasets/<scheme>/<bucket>/<path>/<version>/,
  through a temporary folder renamed into place when complete. A version never changes, so a
  cached copy is never stale. Ingest leaves what it uploaded there as the cached copy.
* Locations stay as given: artifact URIs, metrics and messages name the bucket URL; only the
  code that reads files turns it into the cached folder, and never through pathlib.
"""

import functools
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from typing import TypeVar

import fsspec
from fsspec.callbacks import TqdmCallback

from configs import schema
from core import errors, locations
from transforms import dataset_info
from transforms.sources import storage

log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_ENV = "IMGCLF_CACHE"
PARTIAL = ".partial-"  # a download in progress: .<version>.partial-<random>, beside the copy


class DatasetStoreError(errors.UserError):
    """A bucket of dataset versions could not be read or written; the message says which."""


def cache_root() -> str:
    """$IMGCLF_CACHE, else $XDG_CACHE_HOME/imgclf, else ~/.cache/imgclf."""
    if os.environ.get(CACHE_ENV):
        return os.path.expanduser(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "imgclf")


def cache_dir(url: str) -> str:
    """The local folder that stands for the bucket folder `url`: <cache>/datasets/<scheme>/..."""
    protocol, path = fsspec.core.split_protocol(url)
    parts = [part for part in path.split("/") if part not in ("", ".", "..")]
    return os.path.join(cache_root(), "datasets", storage.family_of(protocol), *parts)


def staging_root(cfg: schema.DataConfig) -> str:
    """Where ingest stages a version: data.output_dir, or for a bucket on the DirectRunner the
    bucket's cache folder, so that what it uploads stays as the cached copy."""
    if locations.is_url(cfg.output_dir) and cfg.beam_runner == "DirectRunner":
        return cache_dir(cfg.output_dir)
    return cfg.output_dir


def publish(staging: str, cfg: schema.DataConfig, version: str) -> str:
    """Uploads the version staged in `staging` (dataset.json written) to the bucket of
    data.output_dir unless it is there already, points `latest` at it; returns its URL."""
    url = version_url(cfg.output_dir, version)
    fs, target = storage.filesystem(url, cfg)
    marker = f"{target}/{dataset_info.DATASET_JSON}"
    fs.invalidate_cache()
    if _retried(lambda: fs.exists(marker), url, cfg, "read"):
        log.info("dataset version %s already exists in %s; keeping it", version, url)
    else:
        _transfer(fs, staging, target, url, cfg)
        if not locations.is_url(staging):
            _keep_as_cached_copy(staging, url)
    pointer = f"{cfg.output_dir.rstrip('/')}/{dataset_info.LATEST}"
    _retried(lambda: fs.pipe_file(pointer, f"{version}\n".encode()), pointer, cfg, "write")
    return url


def version_url(output_dir: str, version: str) -> str:
    return f"{output_dir.rstrip('/')}/{version}"


def _transfer(fs, staging: str, target: str, url: str, cfg: schema.DataConfig) -> None:
    """Every file of `staging` (a local folder, or a folder in the same bucket) to `target`,
    dataset.json last: until the commit marker is there, readers take the version for absent."""
    if locations.is_url(staging):
        source = fsspec.core.strip_protocol(staging).rstrip("/")
        names = [path[len(source) + 1 :] for path in fs.find(source)]
        send = fs.copy
    else:
        source = staging
        names = [
            os.path.relpath(os.path.join(folder, name), staging)
            for folder, _, files in os.walk(staging)
            for name in files
        ]
        send = functools.partial(fs.put, callback=_progress("upload"))
    if dataset_info.DATASET_JSON not in names:
        raise RuntimeError(f"{staging} holds no {dataset_info.DATASET_JSON}: nothing to publish")
    data = sorted(name for name in names if name != dataset_info.DATASET_JSON)
    for batch in (data, [dataset_info.DATASET_JSON]):
        sources = [f"{source}/{name}" for name in batch]
        targets = [f"{target}/{name}" for name in batch]
        _retried(functools.partial(send, sources, targets), url, cfg, "write")
    print(f"ingest: published {len(names)} files to {url}")


def _keep_as_cached_copy(staging: str, url: str) -> None:
    """Renames the uploaded staging folder into the cache (on the same disk: staging_root)."""
    cached = cache_dir(url)
    if _complete(cached):
        return
    shutil.rmtree(cached, ignore_errors=True)  # an incomplete copy, if any
    os.rename(staging, cached)


def resolve_version_dir(output_dir: str, version: str, cfg: schema.DataConfig) -> str:
    """The location of dataset `version` under `output_dir` ('latest' follows the pointer): a
    local folder, or a bucket URL whose dataset.json is there; raises DatasetNotFound."""
    if not locations.is_url(output_dir):
        return dataset_info.resolve_version_dir(output_dir, version)
    fs, _ = storage.filesystem(output_dir, cfg)
    fs.invalidate_cache()
    return dataset_info.resolve_version_dir(
        output_dir.rstrip("/"),
        version,
        exists=lambda path: _retried(lambda: fs.exists(path), path, cfg, "read"),
        read_text=lambda path: _retried(lambda: fs.cat_file(path), path, cfg, "read").decode(),
    )


def local_version_dir(cfg: schema.DataConfig, version: str | None = None) -> str:
    """The local folder of dataset `version` (default data.version) under data.output_dir."""
    return local_copy(resolve_version_dir(cfg.output_dir, version or cfg.version, cfg), cfg)


def holds(folder: str, name: str, cfg: schema.DataConfig) -> bool:
    """Whether `folder`/`name` exists: a local file, or an object in a bucket (other URLs, such
    as an http source, hold no dataset)."""
    path = os.path.join(folder, name)
    scheme = locations.scheme_of(folder)
    if scheme is None:
        return os.path.isfile(path)
    if storage.family_of(scheme) not in locations.BUCKET_SCHEMES:
        return False
    fs, _ = storage.filesystem(path, cfg)
    fs.invalidate_cache()
    return _retried(lambda: fs.exists(path), path, cfg, "read")


def find_version(given: str, cfg: schema.DataConfig) -> str:
    """A dataset version named on a command line: a version folder (a path or a bucket URL), or a
    version id or 'latest' under data.output_dir; its location."""
    if holds(given, dataset_info.DATASET_JSON, cfg):
        return given
    if locations.is_url(given) or os.sep in given or os.path.exists(given):
        raise dataset_info.DatasetNotFound(
            f"{given} holds no {dataset_info.DATASET_JSON}: give a dataset version folder, a "
            "version id, or 'latest'"
        )
    return resolve_version_dir(cfg.output_dir, given, cfg)


def local_copy(location: str, cfg: schema.DataConfig) -> str:
    """A local folder holding the version at `location`: itself when local; for a bucket, its
    cached copy, downloaded the first time."""
    found = cached_copy(location)
    if found is not None:
        return found
    cached = cache_dir(location)
    fs, remote = storage.filesystem(location, cfg)
    fs.invalidate_cache()
    marker = f"{remote}/{dataset_info.DATASET_JSON}"
    if not _retried(lambda: fs.exists(marker), location, cfg, "read"):
        raise dataset_info.DatasetNotFound(
            f"{location} holds no {dataset_info.DATASET_JSON}: not a dataset version, or its "
            "upload was interrupted; run `imgclf ingest --config ...` again"
        )
    names = [
        path[len(remote) + 1 :] for path in _retried(lambda: fs.find(remote), location, cfg, "read")
    ]
    parent, version = os.path.split(cached)
    partial = os.path.join(parent, f".{version}{PARTIAL}{uuid.uuid4().hex[:12]}")
    try:
        for name in names:
            os.makedirs(os.path.dirname(os.path.join(partial, name)), exist_ok=True)
        remote_paths = [f"{remote}/{name}" for name in names]
        local_paths = [os.path.join(partial, name) for name in names]
        _retried(
            lambda: fs.get(remote_paths, local_paths, callback=_progress("download")),
            location,
            cfg,
            "read",
        )
        if not _complete(cached):
            shutil.rmtree(cached, ignore_errors=True)  # an incomplete copy, if any
        try:
            os.rename(partial, cached)
        except OSError:
            if not _complete(cached):
                raise
            # Another process cached the same version meanwhile: its copy is as good.
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"data: fetched {len(names)} files of {location} into {cached}")
    return cached


def cached_copy(location: str) -> str | None:
    """A local folder holding the version at `location` without downloading anything: itself
    when local, a bucket's complete cached copy, or None."""
    if not locations.is_url(location):
        return location
    cached = cache_dir(location)
    return cached if _complete(cached) else None


def _complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, dataset_info.DATASET_JSON))


def _progress(action: str) -> TqdmCallback:
    return TqdmCallback(tqdm_kwargs={"desc": action, "unit": "file", "leave": False})


def _retried(action: Callable[[], T], url: str, cfg: schema.DataConfig, doing: str) -> T:
    """`action` with the sources' retries; a failure as one line naming the bucket location."""
    try:
        return storage.call_with_retries(action, url, cfg)
    except storage.RetriesExhausted as failed:
        attempts = "attempt" if failed.attempts == 1 else "attempts"
        raise DatasetStoreError(
            f"could not {doing} {url} after {failed.attempts} {attempts} "
            f"({storage.describe(failed.error)}); check data.output_dir and the bucket's "
            "credentials and endpoint (data.storage_options, or AWS_*, AWS_ENDPOINT_URL, "
            "GOOGLE_APPLICATION_CREDENTIALS)"
        ) from None
