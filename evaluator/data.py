"""Labelled test images for evaluation: an ingested dataset split, or any ingest source as is.

`--test-data` may be a dataset version folder (TFRecords written by `imgclf ingest`: one split,
`test` by default), a version id or `latest` under `data.output_dir`, an output folder itself or
its `latest` file (the newest version), or anything `data.source` takes (class folders, pre-split
trees, CSV/JSONL manifests, archives, s3://, gs://, tfds:). Images are handed over as their
encoded bytes, so the model's own preprocessing decodes them.
"""

import concurrent.futures
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import tensorflow as tf

from configs import schema
from core import errors
from transforms import dataset, dataset_card, dataset_info, dataset_store, features
from transforms.sources import base, files
from transforms.sources import registry as sources

logger = logging.getLogger(__name__)

TFRECORDS = "tfrecords"
# Unit kinds read one file each: these are fetched in parallel, a chunk at a time.
PARALLEL_KINDS = ("file", files.UNLABELED)
READ_THREADS = 8
READ_CHUNK = 64


class TestDataError(errors.UserError):
    """--test-data cannot be evaluated on; the message says what was expected."""


@dataclass(frozen=True)
class Example:
    """One test image: where it came from, its label text, and its encoded bytes or why it
    could not be read."""

    uri: str
    label: str | None
    content: bytes | str


@dataclass(frozen=True)
class TestData:
    location: str  # as given
    kind: str  # TFRECORDS, or the data.source kind: folders, manifest, archive, tfds
    split: str | None  # the split evaluated; None: every image of a source without splits
    dataset_version: str | None  # the ingested version; None for a source read as is
    labels: frozenset[str] | None  # every label present, when known before reading
    count: int | None  # number of images, when known before reading
    read: Callable[[], Iterator[Example]]
    card: str | None = None  # the ingested version's card.md (Markdown)

    def describe(self) -> str:
        if self.dataset_version:
            return f"dataset {self.dataset_version}" + (f" {self.split}" if self.split else "")
        return self.location + (f" ({self.split} split)" if self.split else "")


def open_test_data(location: str, split: str, data_cfg: schema.DataConfig) -> TestData:
    """What `location` holds, listed (names and labels only; bytes are read by `read`)."""
    if split not in features.SPLITS:
        raise TestDataError(
            f"--split must be one of {', '.join(features.SPLITS)} (received {split})"
        )
    version_dir = find_version_dir(location, data_cfg.output_dir, data_cfg)
    if version_dir is not None:
        return open_tfrecords(location, version_dir, split, data_cfg)
    return open_source(location, split, data_cfg)


def find_version_dir(location: str, output_dir: str, data_cfg: schema.DataConfig) -> str | None:
    """A dataset version folder (a path or a bucket URL): `location` itself, or a version id /
    'latest' under `output_dir`; None when `location` is something else."""
    if dataset_store.holds(location, dataset_info.DATASET_JSON, data_cfg):
        return location
    # data.output_dir itself, or its `latest` pointer file: the newest ingested version.
    for root in (location, os.path.dirname(location)):
        if root and dataset_store.holds(root, dataset_info.LATEST, data_cfg):
            if root == location or os.path.basename(location) == dataset_info.LATEST:
                return dataset_store.resolve_version_dir(root, dataset_info.LATEST, data_cfg)
    # A bare name (no folder, no scheme such as tfds:) that is not a file here: a version id.
    bare = not any(mark in location for mark in ("/", os.sep, ":"))
    if bare and not os.path.exists(location):
        try:
            return dataset_store.resolve_version_dir(output_dir, location, data_cfg)
        except dataset_info.DatasetNotFound:
            raise TestDataError(
                f"--test-data {location}: no such file or folder, and no dataset version "
                f"{location} under data.output_dir {output_dir}; give a class folder, a manifest "
                "(.csv/.jsonl) or a dataset version folder written by `imgclf ingest`"
            ) from None
    return None


def open_tfrecords(
    location: str, version_dir: str, split: str, data_cfg: schema.DataConfig
) -> TestData:
    """The split of the version at `version_dir` (a bucket's is read from its cached copy)."""
    local_dir = dataset_store.local_copy(version_dir, data_cfg)
    info = dataset_info.load(local_dir)
    counts = {name: s["count"] for name, s in info["splits"].items()}
    if not counts.get(split):
        found = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise TestDataError(
            f"dataset {info['version']} in {version_dir} has no {split} images ({found}); "
            "pick another with --split"
        )
    shards = dataset.shard_files(local_dir, split)
    if not shards:
        raise TestDataError(
            f"dataset {info['version']} lists {counts[split]} {split} images but {version_dir} "
            "holds no shards of that split; re-run `imgclf ingest`"
        )
    per_class = info["splits"][split]["per_class"]
    return TestData(
        location=location,
        kind=TFRECORDS,
        split=split,
        dataset_version=info["version"],
        labels=frozenset(name for name, count in per_class.items() if count),
        count=counts[split],
        read=lambda: read_tfrecords(shards, version_dir),
        card=read_card(local_dir),
    )


def read_card(version_dir: str) -> str | None:
    """The version's card.md; None for a version ingested before cards were written."""
    path = os.path.join(version_dir, dataset_card.CARD_MD)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as card:
        return card.read()


def read_tfrecords(shards: list[str], version_dir: str) -> Iterator[Example]:
    """The stored bytes and label text of every example of `shards`, in file order."""
    every = features.feature_spec()
    spec = {key: every[key] for key in (features.IMAGE, features.LABEL_TEXT, features.SOURCE)}
    records = (
        tf.data.TFRecordDataset(shards)
        .map(lambda serialized: tf.io.parse_single_example(serialized, spec))
        .prefetch(tf.data.AUTOTUNE)
    )
    try:
        for record in records.as_numpy_iterator():
            yield Example(
                uri=record[features.SOURCE].decode(),
                label=record[features.LABEL_TEXT].decode(),
                content=record[features.IMAGE],
            )
    except tf.errors.DataLossError as error:
        raise TestDataError(
            f"a TFRecord shard in {version_dir} is corrupt ({error.message.splitlines()[0]}); "
            "re-run `imgclf ingest` to rewrite the dataset"
        ) from None


def open_source(location: str, split: str, data_cfg: schema.DataConfig) -> TestData:
    """A data.source read as is; a source with splits (pre-split tree, manifest `split`
    column) gives only `split`'s images."""
    cfg = data_cfg.model_copy(update={"source": location})
    try:
        kind = sources.kind_of(location)
        units = sources.list_units(cfg)
    except base.SourceError as error:
        raise TestDataError(f"--test-data {location}: {error}") from None
    named = {unit.split for unit in units if unit.split}
    chosen: str | None = None
    if named:
        if split not in named:
            raise TestDataError(
                f"--test-data {location} has {', '.join(sorted(named))} images but no {split} "
                "images; pick one with --split"
            )
        left_out = sum(unit.split != split for unit in units)
        logger.info("evaluating the %s split of %s (%d others left out)", split, location, left_out)
        units = [unit for unit in units if unit.split == split]
        chosen = split
    elif kind in ("archive", "tfds"):
        chosen = split  # Their images carry splits only once read; `read` keeps `split`'s.
    countable = all(unit.kind in PARALLEL_KINDS for unit in units)
    return TestData(
        location=location,
        kind=kind,
        split=chosen,
        dataset_version=None,
        labels=frozenset(unit.label for unit in units if unit.label) if countable else None,
        count=len(units) if countable else None,
        read=lambda: read_units(units, cfg, chosen),
    )


def read_units(
    units: list[base.ReadUnit], cfg: schema.DataConfig, split: str | None
) -> Iterator[Example]:
    """Every image of `units` in order; single files are fetched in parallel."""

    def read_all(unit: base.ReadUnit) -> list[Example]:
        return [to_example(item, data) for item, data in sources.read_unit(unit, cfg)]

    with concurrent.futures.ThreadPoolExecutor(READ_THREADS, "evaluate-read") as pool:
        for parallel, group in itertools.groupby(units, lambda u: u.kind in PARALLEL_KINDS):
            if parallel:
                group = iter(group)
                while chunk := list(itertools.islice(group, READ_CHUNK)):
                    for examples in pool.map(read_all, chunk):
                        yield from examples
                continue
            for unit in group:
                for item, data in sources.read_unit(unit, cfg):
                    # Archives and TFDS know an image's split only once it is read.
                    if split is None or item.split in (None, split):
                        yield to_example(item, data)


def to_example(item: base.SourceItem, data: bytes | base.ReadFailure) -> Example:
    content = data.reason if isinstance(data, base.ReadFailure) else data
    return Example(uri=item.uri, label=item.label or None, content=content)
