"""Zip and tar archives of a class-folder tree, streamed member by member from any fsspec URI.

A member's parent folder is its class and the folder above that, when it is train/val/test, its
split: `cat/1.jpg`, `train/cat/1.jpg`, and `flowers/cat/1.jpg` (a wrapping folder, as most
published archives have). A tar stream has no index to look ahead in, so unlike a folder tree the
label cannot come from the top-level folder. Hidden members (a name part starting with ".") and
`__MACOSX/` are skipped; a member outside any folder, a link or a huge member is a ReadFailure.

Tars are read as a stream (`r|*`); zips through the central directory on a seekable file (range
requests), spilled to a temporary file on disk when an HTTP server does not serve ranges. Nothing
holds more than one member in memory. A remote archive that fails mid-way is reopened and the
members already yielded are skipped.
"""

import contextlib
import gzip
import logging
import lzma
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO

import fsspec

from configs import schema
from transforms.sources import base, storage

log = logging.getLogger(__name__)

Entry = tuple[base.SourceItem, bytes | base.ReadFailure]

SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# One member is read whole; past this it is refused rather than risk the worker's memory.
MAX_MEMBER_BYTES = 1 << 30
# Blocks of a range-read (seekable) remote file.
BLOCK_BYTES = 8 << 20
IGNORED_FOLDERS = ("__MACOSX",)
# The archive's bytes are bad: another attempt reads the same bytes.
CORRUPT_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
)


def suffix_of(uri: str) -> str:
    """The archive suffix of a path or URL (a query string is ignored), or ""."""
    path = uri.split("?", 1)[0].split("#", 1)[0].lower()
    return next((suffix for suffix in SUFFIXES if path.endswith(suffix)), "")


def list_units(cfg: schema.DataConfig) -> list[base.ReadUnit]:
    """The archive as one unit, after checking it exists; members are listed by workers."""
    fs, path = storage.filesystem(cfg.source, cfg)
    uri = storage.to_uri(fs, path)
    expected = (
        f"expected a {', '.join(SUFFIXES)} file holding <class>/<image> or <split>/<class>/<image>"
    )
    try:
        info = storage.call_with_retries(lambda: fs.info(path), uri, cfg)
    except FileNotFoundError:
        info = None
    except storage.RetriesExhausted as error:
        if not isinstance(error.error, FileNotFoundError):
            raise base.SourceError(f"archive {uri} cannot be read: {error}") from error
        info = None
    if info is None:
        raise base.SourceError(f"archive {uri} does not exist ({expected})")
    if info["type"] != "file":
        raise base.SourceError(f"archive {uri} is a {info['type']}, not a file ({expected})")
    return [base.ReadUnit(kind="archive", uri=uri)]


def member_item(archive_uri: str, name: str) -> tuple[base.SourceItem, str | None] | None:
    """(item, failure reason or None) of member `name`; None for a member to skip silently."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or any(part.startswith(".") or part in IGNORED_FOLDERS for part in parts):
        return None
    uri = f"{archive_uri}!{'/'.join(parts)}"
    if len(parts) < 2:
        return base.SourceItem(uri=uri, label=None), "archive member is not inside a class folder"
    split = parts[-3] if len(parts) >= 3 and parts[-3] in base.SPLIT_NAMES else None
    return base.SourceItem(uri=uri, label=parts[-2], split=split), None


def _tar_entries(fs: fsspec.AbstractFileSystem, path: str, uri: str, skip: int) -> Iterator[Entry]:
    # block_size=0 asks HTTP for one streaming GET; a tar stream never seeks back.
    http = storage.family_of(storage.protocol_of(uri)) == "http"
    options = {"block_size": 0 if http else BLOCK_BYTES}
    with fs.open(path, "rb", **options) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        index = 0
        for member in tar:
            if member.isdir() or not (member.isfile() or member.issym() or member.islnk()):
                continue
            placed = member_item(uri, member.name)
            if placed is None:
                continue
            index += 1
            if index <= skip:  # Yielded before a retry; tarfile skips the data unread.
                continue
            item, reason = placed
            if reason is None and not member.isfile():
                reason = "archive member is a link, not a file"
            if reason is None and member.size > MAX_MEMBER_BYTES:
                reason = f"archive member is too large ({member.size} bytes)"
            if reason is not None:
                yield item, base.ReadFailure(reason)
                continue
            member_file = tar.extractfile(member)
            assert member_file is not None  # Regular files always have data.
            yield item, member_file.read()


@contextlib.contextmanager
def _open_seekable(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> Iterator[IO[bytes]]:
    """A seekable file of the archive: ranges where the server has them, else a spilled copy."""
    with fs.open(path, "rb", block_size=BLOCK_BYTES) as raw:
        try:
            zipfile.ZipFile(raw).close()
        except ValueError as error:  # fsspec: "The HTTP server doesn't appear to support range..."
            log.info("spilling %s to a temporary file: %s", uri, error)
        else:
            raw.seek(0)
            yield raw
            return
    with tempfile.TemporaryFile() as spill:
        with fs.open(path, "rb", block_size=0) as stream:
            shutil.copyfileobj(stream, spill, BLOCK_BYTES)
        spill.seek(0)
        yield spill


def _zip_entries(fs: fsspec.AbstractFileSystem, path: str, uri: str, skip: int) -> Iterator[Entry]:
    with _open_seekable(fs, path, uri) as raw, zipfile.ZipFile(raw) as archive:
        index = 0
        for info in archive.infolist():
            if info.is_dir():
                continue
            placed = member_item(uri, info.filename)
            if placed is None:
                continue
            index += 1
            if index <= skip:
                continue
            item, reason = placed
            if reason is None and info.file_size > MAX_MEMBER_BYTES:
                reason = f"archive member is too large ({info.file_size} bytes)"
            if reason is not None:
                yield item, base.ReadFailure(reason)
                continue
            try:
                data: bytes | base.ReadFailure = archive.read(info)
            # One bad member (CRC, encryption, odd compression) leaves the others readable.
            except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as error:
                data = base.ReadFailure(f"unreadable archive member: {storage.describe(error)}")
            yield item, data


# Member streams by archive suffix.
READERS = {suffix: _tar_entries for suffix in SUFFIXES if suffix != ".zip"} | {".zip": _zip_entries}


def read_unit(unit: base.ReadUnit, cfg: schema.DataConfig) -> Iterator[Entry]:
    """Streams the members of an "archive" unit; a failed archive ends in one ReadFailure item."""
    fs, path = storage.filesystem(unit.uri, cfg)
    entries = READERS[suffix_of(unit.uri)]
    whole = base.SourceItem(uri=unit.uri, label=None)
    remote = storage.is_remote(unit.uri)
    attempts = cfg.read_retries + 1 if remote else 1
    done = attempt = 0
    while True:
        start = done
        attempt += 1
        try:
            for entry in entries(fs, path, unit.uri, done):
                done += 1
                yield entry
            return
        except CORRUPT_ERRORS as error:
            yield whole, base.ReadFailure(f"corrupt archive: {storage.describe(error)}")
            return
        except Exception as raised:  # noqa: BLE001 - network stacks raise anything
            error = storage.unwrap(raised)
            if done > start:  # Progress since the last failure earns a fresh series of retries.
                attempt = 1
            if not remote:
                reason = getattr(error, "strerror", None) or storage.describe(error)
                yield whole, base.ReadFailure(f"unreadable: {reason}")
                return
            if attempt >= attempts or storage.is_permanent(error):
                yield whole, base.ReadFailure(str(storage.RetriesExhausted(attempt, error)))
                return
            delay = storage.backoff_s(cfg, attempt)
            log.warning(
                "read of %s failed after %d members (attempt %d of %d, retrying in %.2fs): %s",
                unit.uri,
                done,
                attempt,
                attempts,
                delay,
                storage.describe(error),
            )
            time.sleep(delay)
