"""The ingest job's steps, as its workers run them: read and prepare images, stage the bytes a
shard cannot read again, resolve copies, split classes, rank buckets and write shards.

Nothing here imports TensorFlow (5 s and ~300 MB in every worker process): images are checked
by transforms.images' fast decoders, shards written with Beam's TFRecord codec and
transforms.features' Example, and staging goes through fsspec, so a local folder and a bucket
are alike. transforms/beam/ingest.py builds the job from these steps and publishes its result.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import time

import apache_beam as beam
import fsspec
from apache_beam.io import tfrecordio

from configs import schema
from core import errors
from transforms import features, images, near_duplicates, splits
from transforms.beam import stats
from transforms.sources import base as source_base
from transforms.sources import registry as sources
from transforms.sources import storage

PROGRESS_SECONDS = 5.0
BLOBS = "_blobs"
UNITS = "_units"
UNITS_PER_CHUNK = 64
# Shards are ranked per (split, first hex digits of the hash): 256 buckets per split keep each
# ranking group small (N / 256 records) and the group of bucket sizes that places them tiny.
BUCKET_HEX_DIGITS = 2
# What a shard needs of a kept image besides its label and source, in this order: where its bytes
# are (the original file's path, or "" when staged by hash) and PreparedImage's description.
STORED_FIELDS = (
    "locator",
    "format",
    "height",
    "width",
    "original_height",
    "original_width",
    "original_mode",
    "original_format",
    "rewritten",
    "channel_mean",
    "channel_std",
)


class ChangedDuringIngest(errors.UserError):
    """A source file's bytes differ from those read earlier in the same run."""


def blob_path(staging: str, sha256: str) -> str:
    return os.path.join(staging, BLOBS, sha256[:2], sha256)


def describe(locator: str, prepared: images.PreparedImage) -> str:
    """One compact JSON string: it travels through every shuffle, where the DirectRunner holds
    each record decoded (a dict would be ~3x bigger)."""
    values = [locator, *(getattr(prepared, name) for name in STORED_FIELDS[1:])]
    return json.dumps(values, separators=(",", ":"))


def stage_bytes(staging: str, sha256: str, data: bytes) -> None:
    with fsspec.open(blob_path(staging, sha256), "wb", auto_mkdir=True) as blob:
        blob.write(data)


def read_stored(staging: str, sha256: str, stored: str) -> tuple[bytes, dict]:
    """The bytes a shard stores and the image's description. An original file read again must
    still be what was hashed: a file changed during ingest stops it rather than mislabel."""
    description = dict(zip(STORED_FIELDS, json.loads(stored), strict=True))
    locator = description.pop("locator")
    if not locator:
        with fsspec.open(blob_path(staging, sha256), "rb") as blob:
            return blob.read(), description
    with open(locator, "rb") as original:
        data = original.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ChangedDuringIngest(
            f"{locator} changed while it was being ingested; run `imgclf ingest` again"
        )
    return data, description


class ReadAndPrepare(beam.DoFn):
    """Reads each unit's images, decodes each once, stages the bytes a shard cannot read again
    from the source (archive members, remote files, rewritten images), emits metadata."""

    QUARANTINE = "quarantine"
    SEEN = "seen"  # images found per unit, counted independently of their outcome

    def __init__(
        self, cfg: schema.DataConfig, staging: str, total_units: int, decode_threads: int = 1
    ):
        self.cfg = cfg
        self.staging = staging
        self.total_units = total_units
        # Reading, hashing and decoding release the GIL (file I/O, hashlib, libjpeg-turbo,
        # Pillow): threads over a chunk's units use the cores a one-process runner leaves idle.
        self.decode_threads = decode_threads
        # Local units carry absolute paths; resolve a relative data.source the same way, here in
        # the driver, so stored paths are relative to it and the version does not depend on it.
        self.source_root = cfg.source
        if sources.kind_of(cfg.source) != "tfds" and not storage.is_remote(cfg.source):
            self.source_root = storage.to_uri(*storage.filesystem(cfg.source, cfg))

    def setup(self):
        self.preparer = images.Preparer(self.cfg)
        self.units_done = 0
        self.images_done = 0
        self.last_report = time.monotonic()
        self.pool = None
        if self.decode_threads > 1:
            self.pool = concurrent.futures.ThreadPoolExecutor(self.decode_threads)

    def teardown(self):
        if self.pool is not None:
            self.pool.shutdown()

    def process(self, chunk: int):
        units = read_unit_chunk(chunk, self.staging)
        if self.pool is None:
            for unit in units:
                yield from self.process_unit(unit)
            return
        # map keeps the units' order: the outputs are the same as one thread's.
        for outputs in self.pool.map(lambda unit: list(self.process_unit(unit)), list(units)):
            yield from outputs

    def process_unit(self, unit: source_base.ReadUnit):
        seen = 0
        for item, data in sources.read_unit(unit, self.cfg):
            self.images_done += 1
            seen += 1
            if isinstance(data, source_base.ReadFailure):
                yield self.quarantine(item, data.reason)
                continue
            if not item.label:
                yield self.quarantine(item, "no label")
                continue
            try:
                prepared = self.preparer.prepare(data)
            except images.InvalidImage as error:
                yield self.quarantine(item, str(error))
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            if unit.kind == "file" and not prepared.rewritten and not storage.is_remote(item.uri):
                locator = item.uri  # read again by its shard: staging would write it twice
            else:
                stage_bytes(self.staging, sha256, prepared.data)
                locator = ""
            # Only what dedupe, splits and sharding need travels through the shuffles, as a
            # tuple: the DirectRunner holds every shuffled record decoded.
            source = relative_to_source(item.uri, self.source_root)
            description = describe(locator, prepared)
            yield sha256, (item.label, item.split, source, description, prepared.perceptual_hash)
        yield beam.pvalue.TaggedOutput(self.SEEN, seen)
        self.units_done += 1
        if time.monotonic() - self.last_report > PROGRESS_SECONDS:
            self.last_report = time.monotonic()
            print(
                f"ingest: worker {os.getpid()}: {self.units_done} units, "
                f"{self.images_done} images read (of {self.total_units} units in all)",
                flush=True,
            )

    def quarantine(self, item: source_base.SourceItem, reason: str):
        path = relative_to_source(item.uri, self.source_root)
        return beam.pvalue.TaggedOutput(self.QUARANTINE, {"path": path, "reason": reason})


def relative_to_source(uri: str, source: str) -> str:
    """`uri` relative to the source folder (or a manifest's folder) when it lies inside it, so a
    dataset's version does not change when its folder moves."""
    root = source.rstrip("/")
    for base in (root, root.rsplit("/", 1)[0] if "/" in root else ""):
        if base and uri.startswith(base + "/"):
            return uri[len(base) + 1 :]
    return uri


def write_unit_chunks(units: list[source_base.ReadUnit], staging: str) -> int:
    """Stages the listed units as small files, so the pipeline carries chunk numbers, not 100k
    units held in the driver and pickled into a worker."""
    chunks = 0
    for start in range(0, len(units), UNITS_PER_CHUNK):
        path = os.path.join(staging, UNITS, f"{chunks:06d}.jsonl")
        with fsspec.open(path, "w", auto_mkdir=True) as chunk:
            for unit in units[start : start + UNITS_PER_CHUNK]:
                chunk.write(json.dumps(dataclasses.asdict(unit)) + "\n")
        chunks += 1
    return chunks


def read_unit_chunk(index: int, staging: str):
    with fsspec.open(os.path.join(staging, UNITS, f"{index:06d}.jsonl"), "r") as chunk:
        for line in chunk:
            yield source_base.ReadUnit(**json.loads(line))


def resolve_copies(sha_and_copies, leakage: str):
    """One (sha256, label, given split, source, stored, perceptual hash) record per content hash.
    Copies with another label are quarantined; copies in two given splits are leakage, resolved
    by `leakage` (keep_eval, drop or error)."""
    sha256, copies = sha_and_copies
    copies = sorted(copies, key=lambda copy: copy[2])  # by source path
    first_label, _, first_source, *_ = copies[0]
    same_label = [copy for copy in copies if copy[0] == first_label]
    for label, _, source, *_ in copies:
        if label != first_label:
            reason = (
                f"same bytes as {first_source} but labelled {label!r} instead of {first_label!r}"
            )
            yield beam.pvalue.TaggedOutput("quarantine", {"path": source, "reason": reason})
    given = {split for _, split, *_ in same_label if split}
    # A copy with a given split wins over one without, so the given split is respected.
    kept = next((copy for copy in same_label if copy[1]), same_label[0])
    if len(given) > 1:
        paths = [source for _, _, source, *_ in same_label]
        yield beam.pvalue.TaggedOutput(
            "leakage", {"sha256": sha256, "splits": sorted(given), "paths": paths}
        )
        if leakage == "drop":
            in_splits = ", ".join(sorted(given))
            reason = f"leakage: same bytes in splits {in_splits} (data.leakage: drop)"
            for path in paths:
                yield beam.pvalue.TaggedOutput("quarantine", {"path": path, "reason": reason})
            return
        keep_split = next(split for split in splits.EVAL_FIRST if split in given)
        kept = next(copy for copy in same_label if copy[1] == keep_split)
    yield (sha256, *kept)
    for copy in same_label:
        if copy is not kept:
            yield beam.pvalue.TaggedOutput("duplicate", copy[2])


LABEL = "label"
BUCKET_COUNT = "bucket_count"
QUARANTINE = "quarantine"
GROUP_SPLIT = "group_split"


def split_class(label_and_values, split_cfg: schema.SplitConfig, mode: str):
    """Assigns one class's images to splits and keys each by (split, hash bucket); also emits
    the class's label (LABEL), its count per (split, bucket) (BUCKET_COUNT), so neither needs a
    pass over every record, the images data.near_duplicates quarantines (QUARANTINE) and the
    split each near-duplicate landed in (GROUP_SPLIT: sha256, split).

    Given splits are kept; the rest of the class is split stratified by content hash, a group
    of near-duplicates as one unit under `move`. The class's group holds its records and a
    near_duplicates.Mark per member of a near-duplicate group. Only this class's records are
    held here, never the whole dataset's.
    """
    label, values = label_and_values
    members, grouped = [], {}
    for value in values:
        if isinstance(value, near_duplicates.Mark):
            grouped[value.sha256] = value.representative
        else:
            members.append(value)
    members, units, unit_split, quarantined = near_duplicates.settle_class(
        label, members, grouped, mode
    )
    for source, reason in quarantined:
        yield beam.pvalue.TaggedOutput(QUARANTINE, {"path": source, "reason": reason})
    sizes: dict[str, int] = {}
    for unit in units:
        if unit not in unit_split:
            sizes[unit] = sizes.get(unit, 0) + 1
    assignment = {**(splits.assign_stratified(sizes, split_cfg) if sizes else {}), **unit_split}
    counts: dict[tuple[str, str], int] = {}
    for (sha256, _, source, stored), unit in zip(members, units, strict=True):
        split = assignment[unit]
        key = (split, sha256[:BUCKET_HEX_DIGITS])
        counts[key] = counts.get(key, 0) + 1
        if sha256 in grouped:
            yield beam.pvalue.TaggedOutput(GROUP_SPLIT, (sha256, split))
        yield key, (sha256, label, source, stored)
    yield beam.pvalue.TaggedOutput(LABEL, label)
    for key, count in counts.items():
        yield beam.pvalue.TaggedOutput(BUCKET_COUNT, (key, count))


@dataclasses.dataclass(frozen=True)
class BucketPlace:
    """What ranking one (split, hash bucket) needs to know of the others: where the bucket
    begins in its split's hash order, the split's size, and the label map."""

    offset: int
    split_size: int
    labels: tuple[str, ...]


def place_buckets(key_and_classes, vocabulary: list[str] | None):
    """A BucketPlace keyed by each (split, hash bucket), from every class's LABEL and every
    bucket's summed BUCKET_COUNT gathered under one key: at most len(SPLITS) *
    16**BUCKET_HEX_DIGITS sizes and one label per class, whatever the dataset's size."""
    _, classes = key_and_classes
    labels = tuple(order_labels(classes[LABEL], vocabulary))
    sizes = sorted(classes[BUCKET_COUNT])
    split_sizes: dict[str, int] = {}
    for (split, _), count in sizes:
        split_sizes[split] = split_sizes.get(split, 0) + count
    offsets = dict.fromkeys(split_sizes, 0)
    for (split, bucket), count in sizes:
        yield (split, bucket), BucketPlace(offsets[split], split_sizes[split], labels)
        offsets[split] += count


def rank_bucket(key_and_values, per_shard: int):
    """Keys each record of one (split, hash bucket) by its shard, (split, index, split size),
    and adds its label's index; the group holds the bucket's records and its BucketPlace.

    An image's rank in its split's hash order is the size of the split's earlier buckets plus
    its rank within its bucket, so every shard but the last holds exactly `per_shard` examples
    without any worker holding every hash of the split.
    """
    (split, _), values = key_and_values
    records = []
    for value in values:
        if isinstance(value, BucketPlace):
            place = value
        else:
            records.append(value)
    label_index = {label: i for i, label in enumerate(place.labels)}
    for rank, (sha256, label, source, stored) in enumerate(sorted(records), start=place.offset):
        shard = (split, rank // per_shard, place.split_size)
        yield shard, (sha256, label_index[label], label, source, stored)


def write_shard(key_and_records, out_dir: str, staging: str, cfg):
    """Writes one shard, records sorted by hash, so re-runs produce identical bytes."""
    (split, index, split_size), records = key_and_records
    total = -(-split_size // cfg.examples_per_shard)
    name = features.shard_name(split, index, total)
    per_class: dict[str, int] = {}
    shard_stats = stats.DatasetStats()
    accumulator = shard_stats.create_accumulator()
    with fsspec.open(os.path.join(out_dir, name), "wb") as shard:
        for sha256, label_index, label, source, stored in sorted(records):
            data, description = read_stored(staging, sha256, stored)
            accumulator = shard_stats.add_input(accumulator, description)
            record = features.serialize_example(
                image=data,
                image_format=description["format"],
                height=description["height"],
                width=description["width"],
                label=label_index,
                label_text=label,
                sha256=sha256,
                source=source,
            )
            # Beam's TFRecord codec, the one its WriteToTFRecord uses: TensorFlow's
            # TFRecordWriter writes the same bytes but would load TensorFlow in every worker.
            tfrecordio._TFRecordUtil.write_record(shard, record)
            per_class[label] = per_class.get(label, 0) + 1
    return {
        "split": split,
        "file": name,
        "count": sum(per_class.values()),
        "per_class": per_class,
        "stats": accumulator,
    }


def write_summary(items, path: str):
    with fsspec.open(path, "w") as out:
        # Key order kept: the stats histograms are ordered by bin, not by name.
        out.write(json.dumps(items))


def order_labels(found: list[str], vocabulary: list[str] | None) -> list[str]:
    """The label map: the configured vocabulary's order, else sorted names.

    Labels found outside the vocabulary (archive and TFDS labels are only known to workers) are
    appended, so shards can be written and `summarize` reports them as an IngestError.
    """
    if vocabulary is None:
        return sorted(found)
    return [*vocabulary, *sorted(set(found) - set(vocabulary))]
