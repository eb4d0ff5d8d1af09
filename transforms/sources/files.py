"""Reads one image file, local or remote, into bytes or a ReadFailure that says why not."""

import os
from collections.abc import Iterator

from configs import schema
from transforms.sources import base, storage

# Manifest rows without a label become units of this kind; their uri is `<manifest>#row=<N>`.
UNLABELED = "unlabeled"
ROW_MARK = "#row="


def read_bytes(uri: str, cfg: schema.DataConfig) -> bytes | base.ReadFailure:
    """The whole file; remote reads are retried, and no error escapes but a fatal one."""
    if not storage.is_remote(uri):
        # Plain file I/O: fsspec's lookup per file costs more than reading a small image.
        path = os.path.abspath(os.path.expanduser(uri))
        # A dangling link raises FileNotFoundError like a missing file; tell the two apart.
        if os.path.islink(path) and not os.path.exists(path):
            return base.ReadFailure("broken symlink")
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as error:
            return base.ReadFailure(f"unreadable: {error.strerror or error}")
    try:
        fs, path = storage.filesystem(uri, cfg)
    except Exception as error:  # noqa: BLE001 - filesystems raise anything on bad options
        return base.ReadFailure(f"unreadable: {storage.describe(error)}")
    try:
        return storage.call_with_retries(lambda: fs.cat_file(path), uri, cfg)
    except storage.RetriesExhausted as error:
        return base.ReadFailure(str(error))


def read_unit(
    unit: base.ReadUnit, cfg: schema.DataConfig
) -> Iterator[tuple[base.SourceItem, bytes | base.ReadFailure]]:
    """One (item, bytes) for a "file" unit."""
    item = base.SourceItem(uri=unit.uri, label=unit.label, split=unit.split)
    yield item, read_bytes(unit.uri, cfg)


def unlabeled_unit(manifest_uri: str, row: int, split: str | None) -> base.ReadUnit:
    """A manifest row with an empty label: ingest quarantines it instead of stopping the job."""
    return base.ReadUnit(kind=UNLABELED, uri=f"{manifest_uri}{ROW_MARK}{row}", split=split)


def read_unlabeled(
    unit: base.ReadUnit, cfg: schema.DataConfig
) -> Iterator[tuple[base.SourceItem, bytes | base.ReadFailure]]:
    """The failure of an "unlabeled" unit; the image itself is never read."""
    del cfg  # Nothing to read.
    row = unit.uri.rpartition(ROW_MARK)[2]
    item = base.SourceItem(uri=unit.uri, label=None, split=unit.split)
    yield item, base.ReadFailure(f"no label in manifest row {row}")
