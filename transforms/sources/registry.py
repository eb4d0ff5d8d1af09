"""The one door ingest uses: which kind of source `data.source` is, its units, and their images.

`list_units` runs in the driver and reads no image; `read_unit` runs in Beam workers and streams.
"""

from collections.abc import Callable, Iterator

from configs import schema
from transforms.sources import archives, base, files, folders, manifests, storage, tfds_source

Entry = tuple[base.SourceItem, bytes | base.ReadFailure]

# Source kind -> lists the units of a `data.source` of that kind.
SOURCES: dict[str, Callable[[schema.DataConfig], list[base.ReadUnit]]] = {
    "folders": folders.list_units,
    "manifest": manifests.list_units,
    "archive": archives.list_units,
    "tfds": tfds_source.list_units,
}

# ReadUnit.kind -> expands a unit into (item, bytes or failure).
READERS: dict[str, Callable[[base.ReadUnit, schema.DataConfig], Iterator[Entry]]] = {
    "file": files.read_unit,
    files.UNLABELED: files.read_unlabeled,
    "archive": archives.read_unit,
    "tfds": tfds_source.read_unit,
}

EXPECTED = (
    "expected a class-folder tree, a .csv or .jsonl manifest, a .zip or .tar.gz archive "
    "(local, s3://, gs:// or http(s)://), or tfds:<name>[:<split>]"
)


def kind_of(source: str) -> str:
    """The SOURCES key for `source`, from its form alone (nothing is read)."""
    if not source.strip():
        raise base.SourceError(f"data.source is empty ({EXPECTED})")
    if source.startswith(tfds_source.PREFIX):
        return "tfds"
    if manifests.suffix_of(source):
        return "manifest"
    if archives.suffix_of(source):
        return "archive"
    storage.check_protocol(source)
    if storage.family_of(storage.protocol_of(source)) == "http":
        # A web server has no folder listing to walk.
        raise base.SourceError(
            f"data.source {source} is a URL to neither a manifest nor an archive ({EXPECTED})"
        )
    return "folders"


def list_units(cfg: schema.DataConfig) -> list[base.ReadUnit]:
    """Every unit of `cfg.source`, in a sorted, stable order; SourceError if it is unusable."""
    units = SOURCES[kind_of(cfg.source)](cfg)
    return sorted(units, key=lambda unit: (unit.kind, unit.uri, unit.label or "", unit.split or ""))


def read_unit(unit: base.ReadUnit, cfg: schema.DataConfig) -> Iterator[Entry]:
    """Streams (item, bytes) per image of `unit`, or (item, ReadFailure) for one unreadable."""
    try:
        reader = READERS[unit.kind]
    except KeyError:
        raise base.SourceError(
            f"read unit kind {unit.kind!r} is unknown (expected one of {sorted(READERS)})"
        ) from None
    yield from reader(unit, cfg)
