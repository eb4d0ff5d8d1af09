"""CSV and JSONL manifests, local or remote: a row per image with `path` or `url`, `label`, `split`.

Relative paths resolve against the manifest's folder (a bucket prefix or URL folder when the
manifest is remote). Row numbers count data rows from 1 (a CSV header is not a row).

A row whose label is empty (or null in JSONL) does not stop the job: it becomes an "unlabeled"
unit that ingest quarantines as "no label in manifest row N", because one unlabeled row in a
million is a data problem to report, not a reason to lose the run. Everything that makes the
manifest as a whole unusable raises SourceError: a missing `label` column or key, neither `path`
nor `url`, a row with no path, a `split` outside train/val/test, invalid JSON, no rows at all.
"""

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from configs import schema
from transforms.sources import base, files, storage

SUFFIXES = (".csv", ".jsonl")
EXPECTED = "expected columns path or url, label, and optionally split"


def _rows_csv(
    text: io.TextIOBase, uri: str, labelled: bool
) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text)
    if reader.fieldnames is None:
        raise base.SourceError(f"manifest {uri} is empty ({EXPECTED} in a header row)")
    header = [name.strip() for name in reader.fieldnames]
    reader.fieldnames = header
    if labelled and "label" not in header:
        raise base.SourceError(
            f"manifest {uri} has no label column (received {header}; {EXPECTED})"
        )
    if "path" not in header and "url" not in header:
        raise base.SourceError(
            f"manifest {uri} has neither a path nor a url column (received {header}; {EXPECTED})"
        )
    yield from enumerate(reader, start=1)


def _rows_jsonl(
    text: io.TextIOBase, uri: str, labelled: bool
) -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    for line in text:
        if not line.strip():
            continue
        number += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise base.SourceError(
                f"manifest {uri} row {number} is not valid JSON: {error}"
            ) from None
        if not isinstance(row, dict):
            raise base.SourceError(
                f"manifest {uri} row {number} must be a JSON object (received {line.strip()[:80]})"
            )
        if labelled and "label" not in row:
            raise base.SourceError(f"manifest {uri} row {number} has no label key ({EXPECTED})")
        if "path" not in row and "url" not in row:
            raise base.SourceError(
                f"manifest {uri} row {number} has neither a path nor a url key ({EXPECTED})"
            )
        yield number, row


# Manifest format by file suffix.
READERS = {".csv": _rows_csv, ".jsonl": _rows_jsonl}


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _unit(number: int, row: dict[str, Any], uri: str, labelled: bool) -> base.ReadUnit:
    split = _text(row.get("split")) or None
    if split is not None and split not in base.SPLIT_NAMES:
        raise base.SourceError(
            f"manifest {uri} row {number}: split {split!r} is not one of "
            f"{', '.join(base.SPLIT_NAMES)} (or empty for a split assigned by content)"
        )
    reference = _text(row.get("path")) or _text(row.get("url"))
    if not reference:
        raise base.SourceError(
            f"manifest {uri} row {number} has an empty path and url ({EXPECTED})"
        )
    label = _text(row.get("label")) or None
    if labelled and label is None:
        return files.unlabeled_unit(uri, number, split)
    resolved = storage.resolve(reference, uri)
    if storage.is_remote(resolved):
        try:
            storage.check_protocol(resolved)
        except base.SourceError as error:
            raise base.SourceError(f"manifest {uri} row {number}: {error}") from None
    return base.ReadUnit(kind="file", uri=resolved, label=label, split=split)


def suffix_of(uri: str) -> str:
    """`.csv`, `.jsonl` or "" from the path part of a path or URL (a query string is ignored)."""
    path = uri.split("?", 1)[0].split("#", 1)[0].lower()
    return next((suffix for suffix in SUFFIXES if path.endswith(suffix)), "")


def _parse(uri: str, cfg: schema.DataConfig, labelled: bool) -> list[base.ReadUnit]:
    fs, path = storage.filesystem(uri, cfg)
    rows = READERS[suffix_of(uri)]
    # Rows stream from the file; only the (small) units are kept.
    with fs.open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        return [_unit(number, row, uri, labelled) for number, row in rows(text, uri, labelled)]


def _unreadable(uri: str, error: BaseException, message: str) -> base.SourceError:
    if isinstance(error, FileNotFoundError):
        return base.SourceError(f"manifest {uri} does not exist ({EXPECTED})")
    if isinstance(error, csv.Error):
        return base.SourceError(f"manifest {uri} is not valid CSV: {error}")
    if isinstance(error, UnicodeDecodeError):
        return base.SourceError(f"manifest {uri} is not UTF-8 text: {error}")
    return base.SourceError(f"manifest {uri} cannot be read: {message}")


def list_units(cfg: schema.DataConfig, labelled: bool = True) -> list[base.ReadUnit]:
    """One unit per manifest row, sorted by uri; raises SourceError for an unusable manifest.

    `labelled=False` (images to classify, not to train on) makes the label column optional.
    """
    uri = cfg.source
    if not storage.is_remote(uri):
        uri = storage.to_uri(*storage.filesystem(uri, cfg))
    try:
        units = storage.call_with_retries(
            lambda: _parse(uri, cfg, labelled), uri, cfg, permanent=(csv.Error, UnicodeDecodeError)
        )
    except storage.RetriesExhausted as error:
        raise _unreadable(uri, error.error, str(error)) from error
    except OSError as error:
        raise _unreadable(uri, error, str(error)) from error
    except (csv.Error, UnicodeDecodeError) as error:
        raise _unreadable(uri, error, str(error)) from error
    if not units:
        raise base.SourceError(f"manifest {uri} has no rows ({EXPECTED})")
    return sorted(units, key=lambda unit: (unit.uri, unit.label or "", unit.split or ""))
