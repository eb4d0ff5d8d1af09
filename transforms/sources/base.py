"""What every data source hands to ingest: read units to expand, items with labels, and failures."""

from dataclasses import dataclass

from core import errors

SPLIT_NAMES = ("train", "val", "test")


class SourceError(errors.UserError):
    """The source as a whole cannot be listed (missing, empty, malformed manifest): fatal."""


@dataclass(frozen=True)
class ReadUnit:
    """One thing the driver lists cheaply; a Beam worker expands it into items with bytes.

    kind: "file" (one image), "archive" (a .zip/.tar.gz holding a class-folder tree) or "tfds"
    (a TFDS split). `label` and `split` apply to "file" units; archives and TFDS carry their own.
    """

    kind: str
    uri: str
    label: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class SourceItem:
    """One image as found in a source. `uri` says where it came from, for reports and lineage:
    a path or URL, `<archive uri>!<member path>`, or `tfds:<name>:<split>/<index>`."""

    uri: str
    label: str | None
    split: str | None = None


@dataclass(frozen=True)
class ReadFailure:
    """An image that could not be read after retries; ingest quarantines it with `reason`."""

    reason: str
