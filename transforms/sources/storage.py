"""fsspec plumbing every source shares: a filesystem per URI with timeouts, and remote retries."""

import logging
import os
import posixpath
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import fsspec

from configs import schema
from core import errors
from transforms.sources import base

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCAL_PROTOCOLS = ("file", "local")

# Aliases share one entry of a per-protocol `storage_options` mapping.
PROTOCOL_FAMILY = {"s3a": "s3", "gcs": "gs", "https": "http", "local": "file"}


def _s3_timeouts(seconds: float) -> dict[str, Any]:
    return {"config_kwargs": {"connect_timeout": seconds, "read_timeout": seconds}}


def _gcs_timeouts(seconds: float) -> dict[str, Any]:
    return {"requests_timeout": seconds}


def _http_timeouts(seconds: float) -> dict[str, Any]:
    # Per-socket-read, not total: a long archive download is fine while bytes keep coming.
    timeout = aiohttp.ClientTimeout(sock_connect=seconds, sock_read=seconds)
    return {"client_kwargs": {"timeout": timeout}}


# How `read_timeout_s` becomes filesystem options, per protocol family.
TIMEOUT_OPTIONS: dict[str, Callable[[float], dict[str, Any]]] = {
    "s3": _s3_timeouts,
    "gs": _gcs_timeouts,
    "http": _http_timeouts,
}

# Errors that another attempt cannot fix; everything else from a remote read is retried.
PERMANENT_ERRORS = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class RetriesExhausted(Exception):
    """A remote call failed `attempts` times (or once, with a permanent error)."""

    def __init__(self, attempts: int, error: BaseException):
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(f"remote read failed after {attempts} {plural}: {describe(error)}")
        self.attempts = attempts
        self.error = error


def describe(error: BaseException) -> str:
    """`FileNotFoundError: http://...`: the type says as much as the message for remote errors."""
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


def unwrap(error: BaseException) -> BaseException:
    """The real failure behind fsspec's HTTP `info`, which reports every one as FileNotFoundError.

    A 503 or a timeout during `open`/`info` arrives as FileNotFoundError(url) from the cause; only
    a 404 or 410 is really "not found".
    """
    cause = error.__cause__
    if isinstance(error, FileNotFoundError) and cause is not None:
        if isinstance(cause, aiohttp.ClientResponseError) and cause.status in (404, 410):
            return error
        return cause
    return error


def is_permanent(error: BaseException) -> bool:
    """Whether another attempt is pointless; `error` as returned by `unwrap`."""
    return isinstance(error, PERMANENT_ERRORS)


def protocol_of(uri: str) -> str:
    """`s3`, `gs`, `http`, ... or `file` for a plain path."""
    protocol, _ = fsspec.core.split_protocol(uri)
    return protocol or "file"


def family_of(protocol: str) -> str:
    return PROTOCOL_FAMILY.get(protocol, protocol)


def is_remote(uri: str) -> bool:
    return protocol_of(uri) not in LOCAL_PROTOCOLS


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` wins; nested dicts (config_kwargs, client_kwargs) are merged key by key."""
    merged = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def storage_options(protocol: str, cfg: schema.DataConfig) -> dict[str, Any]:
    """Filesystem options for `protocol`: timeouts, then the user's `data.storage_options`.

    `storage_options` is either flat (`{endpoint_url: ...}`: applies to the protocol of
    `data.source` only, so an s3 endpoint never reaches the http URLs a manifest may list) or keyed
    by protocol (`{s3: {...}, http: {...}}`).
    """
    family = family_of(protocol)
    if family == "file":
        return {}
    given = cfg.storage_options
    known = set(PROTOCOL_FAMILY) | set(PROTOCOL_FAMILY.values()) | set(TIMEOUT_OPTIONS)
    if given and set(given) <= known:
        mine: dict[str, Any] = {}
        for key, value in given.items():
            if family_of(key) == family:
                mine = _merge(mine, value)
    elif family == family_of(protocol_of(cfg.source)):
        mine = given
    else:
        mine = {}
    timeouts = TIMEOUT_OPTIONS.get(family)
    defaults = timeouts(cfg.read_timeout_s) if timeouts else {}
    return _merge(defaults, mine)


def check_protocol(uri: str) -> None:
    """Raises SourceError unless fsspec can open `uri`'s protocol (installed, and known)."""
    protocol = protocol_of(uri)
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as error:
        raise base.SourceError(
            f"{uri}: protocol {protocol!r} cannot be read ({error}; expected a local path, "
            "s3://, gs:// or http(s)://)"
        ) from None


def filesystem(uri: str, cfg: schema.DataConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a path or URL; local paths come back absolute."""
    if not is_remote(uri):
        uri = os.path.expanduser(uri)
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(protocol_of(uri), cfg))
    return fs, path


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI users see for a path of `fs`: plain for local files, with the protocol otherwise."""
    if isinstance(fs.protocol, str):
        protocols: tuple[str, ...] = (fs.protocol,)
    else:
        protocols = tuple(fs.protocol)
    if set(protocols) & set(LOCAL_PROTOCOLS):
        return path
    return fs.unstrip_protocol(path)


def resolve(reference: str, base_uri: str) -> str:
    """`reference` (a path or URL from a manifest) resolved against the folder of `base_uri`.

    URLs with a protocol and absolute local paths stay as they are. A path starting with "/" in a
    bucket manifest is taken from the bucket's root.
    """
    if fsspec.core.split_protocol(reference)[0]:
        return reference
    protocol = protocol_of(base_uri)
    family = family_of(protocol)
    if family == "file":
        folder = os.path.dirname(os.path.abspath(fsspec.core.strip_protocol(base_uri)))
        return os.path.normpath(os.path.join(folder, reference))
    if family == "http":
        return urllib.parse.urljoin(base_uri, reference)
    _, path = fsspec.core.split_protocol(base_uri)
    if reference.startswith("/"):
        bucket = path.split("/", 1)[0]
        joined = posixpath.join(bucket, reference.lstrip("/"))
    else:
        joined = posixpath.join(posixpath.dirname(path), reference)
    return f"{protocol}://{posixpath.normpath(joined)}"


def backoff_s(cfg: schema.DataConfig, attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential backoff."""
    return cfg.retry_backoff_s * 2 ** (attempt - 1)


def call_with_retries(
    action: Callable[[], T],
    uri: str,
    cfg: schema.DataConfig,
    permanent: tuple[type[BaseException], ...] = (),
) -> T:
    """Runs `action` once for a local `uri`; for a remote one, retries `cfg.read_retries` times.

    Backoff starts at `cfg.retry_backoff_s` and doubles. Permanent errors (not found, forbidden,
    and `permanent`: say, a parse error) are not retried. Raises RetriesExhausted for a remote
    `uri`; a UserError, and any error for a local `uri`, propagates as it is.
    """
    if not is_remote(uri):
        return action()
    attempts = cfg.read_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except errors.UserError:
            raise
        except Exception as raised:  # noqa: BLE001 - network stacks raise anything
            error = unwrap(raised)
            if attempt == attempts or is_permanent(error) or isinstance(error, permanent):
                raise RetriesExhausted(attempt, error) from raised
            delay = backoff_s(cfg, attempt)
            log.warning(
                "read of %s failed (attempt %d of %d, retrying in %.2fs): %s",
                uri,
                attempt,
                attempts,
                delay,
                describe(error),
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
