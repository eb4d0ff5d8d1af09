"""Beam job: any source -> validated, normalised, deduplicated, split, sharded TFRecords.

Image bytes never cross a shuffle: they are read, prepared and written to a content-addressed
staging area in one fused step, whose memory does not grow with the dataset; the shuffles after
it (dedupe, splits, shards) move small metadata tuples, and shard writers read the staged bytes
back. No step holds every image's record in one place: splits are cut per class, shards ranked
per (split, hash bucket), so the only side inputs are the label map and per-bucket counts. The
DirectRunner holds each shuffle in the driver's memory; runners whose shuffles spill to disk
do not.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from configs import schema
from core import console, errors, locations
from transforms import dataset_info, dataset_store, features, images, splits
from transforms.beam import stats
from transforms.sources import base as source_base
from transforms.sources import registry as sources
from transforms.sources import storage

PROGRESS_SECONDS = 5.0
BLOBS = "_blobs"
UNITS = "_units"
UNITS_PER_CHUNK = 64
# Shards are ranked per (split, first hex digits of the hash): 256 buckets per split keep each
# ranking group small (N / 256 records) and the bucket-size side input tiny.
BUCKET_HEX_DIGITS = 2
# glibc malloc settings for the DirectRunner's worker processes, which inherit the driver's
# environment: two arenas instead of one per thread, and fixed mmap/trim thresholds (glibc's
# dynamic ones ratchet up after big frees), so memory freed after decoding images and after each
# shuffle goes back to the OS instead of staying fragmented. Values already set are kept.
WORKER_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "262144",
    "MALLOC_TRIM_THRESHOLD_": "1048576",
}
SUMMARIES = ("shards", "quarantine", "duplicates", "leakage", "labels", "seen")

log = logging.getLogger(__name__)


class IngestError(errors.UserError):
    """The source cannot be ingested as configured; the message says why and what to change."""


@dataclass(frozen=True)
class IngestResult:
    version: str
    path: Path | None  # a local folder holding the version (a bucket's cached copy), if any
    dataset: dict
    location: str  # where data.output_dir keeps the version: a local folder or a bucket URL


def blob_path(staging: str, sha256: str) -> str:
    return os.path.join(staging, BLOBS, sha256[:2], sha256)


def stage_image(staging: str, sha256: str, prepared: images.PreparedImage) -> None:
    """Writes the bytes to store and, beside them, the image's description (for shards, stats)."""
    path = blob_path(staging, sha256)
    if tf.io.gfile.exists(path + ".json"):
        return  # a copy of these bytes was staged already
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as blob:
        blob.write(prepared.data)
    description = {k: v for k, v in dataclasses.asdict(prepared).items() if k != "data"}
    with tf.io.gfile.GFile(path + ".json", "w") as sidecar:
        sidecar.write(json.dumps(description))


def read_staged(staging: str, sha256: str) -> tuple[bytes, dict]:
    path = blob_path(staging, sha256)
    with tf.io.gfile.GFile(path, "rb") as blob:
        data = blob.read()
    with tf.io.gfile.GFile(path + ".json") as sidecar:
        return data, json.loads(sidecar.read())


class ReadAndPrepare(beam.DoFn):
    """Reads each unit's images, decodes each once, stages the bytes to store, emits metadata."""

    QUARANTINE = "quarantine"
    SEEN = "seen"  # one element per image found, counted independently of the outcome

    def __init__(self, cfg: schema.DataConfig, staging: str, total_units: int):
        self.cfg = cfg
        self.staging = staging
        self.total_units = total_units
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

    def process(self, unit: source_base.ReadUnit):
        for item, data in sources.read_unit(unit, self.cfg):
            self.images_done += 1
            yield beam.pvalue.TaggedOutput(self.SEEN, 1)
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
            stage_image(self.staging, sha256, prepared)
            # Only what dedupe, splits and sharding need travels through the shuffles, as a
            # tuple: the DirectRunner holds every shuffled record decoded, and a dict is 3x bigger.
            source = relative_to_source(item.uri, self.source_root)
            yield sha256, (item.label, item.split, source)
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
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "w") as chunk:
            for unit in units[start : start + UNITS_PER_CHUNK]:
                chunk.write(json.dumps(dataclasses.asdict(unit)) + "\n")
        chunks += 1
    return chunks


def read_unit_chunk(index: int, staging: str):
    with tf.io.gfile.GFile(os.path.join(staging, UNITS, f"{index:06d}.jsonl")) as chunk:
        for line in chunk:
            yield source_base.ReadUnit(**json.loads(line))


def resolve_copies(sha_and_copies, leakage: str):
    """One (sha256, label, given split, source) record per content hash. Copies with another
    label are quarantined; copies in two given splits are leakage, resolved by `leakage`
    (keep_eval, drop or error)."""
    sha256, copies = sha_and_copies
    copies = sorted(copies, key=lambda copy: copy[2])  # by source path
    first_label, _, first_source = copies[0]
    same_label = [copy for copy in copies if copy[0] == first_label]
    for label, _, source in copies:
        if label != first_label:
            reason = (
                f"same bytes as {first_source} but labelled {label!r} instead of {first_label!r}"
            )
            yield beam.pvalue.TaggedOutput("quarantine", {"path": source, "reason": reason})
    given = {split for _, split, _ in same_label if split}
    # A copy with a given split wins over one without, so the given split is respected.
    kept = next((copy for copy in same_label if copy[1]), same_label[0])
    if len(given) > 1:
        paths = [source for _, _, source in same_label]
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


def split_class(label_and_members, split_cfg: schema.SplitConfig):
    """Assigns one class's images to splits and keys each by (split, hash bucket).

    Given splits are kept; the rest of the class is split stratified by content hash. Only this
    class's records are held here, never the whole dataset's.
    """
    label, members = label_and_members
    members = list(members)
    unassigned = [sha256 for sha256, given, _ in members if not given]
    assignment = splits.assign_stratified(unassigned, split_cfg) if unassigned else {}
    for sha256, given, source in members:
        split = given or assignment[sha256]
        yield (split, sha256[:BUCKET_HEX_DIGITS]), (sha256, label, source)


def rank_bucket(key_and_records, bucket_sizes: dict, per_shard: int):
    """Keys each record of one (split, hash bucket) by its shard: (split, index, split size).

    An image's rank in its split's hash order is the size of the split's earlier buckets plus
    its rank within its bucket, so every shard but the last holds exactly `per_shard` examples
    without any worker holding every hash of the split.
    """
    (split, bucket), records = key_and_records
    sizes = {b: count for (s, b), count in bucket_sizes.items() if s == split}
    offset = sum(count for b, count in sizes.items() if b < bucket)
    split_size = sum(sizes.values())
    for rank, record in enumerate(sorted(records), start=offset):
        yield (split, rank // per_shard, split_size), record


def write_shard(key_and_records, out_dir: str, staging: str, labels, cfg):
    """Writes one shard, records sorted by hash, so re-runs produce identical bytes."""
    (split, index, split_size), records = key_and_records
    total = -(-split_size // cfg.examples_per_shard)
    name = features.shard_name(split, index, total)
    label_index = {label: i for i, label in enumerate(labels)}
    per_class: dict[str, int] = {}
    shard_stats = stats.DatasetStats()
    accumulator = shard_stats.create_accumulator()
    with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
        for sha256, label, source in sorted(records):
            data, description = read_staged(staging, sha256)
            accumulator = shard_stats.add_input(accumulator, description)
            example = features.build_example(
                image=data,
                image_format=description["format"],
                height=description["height"],
                width=description["width"],
                label=label_index[label],
                label_text=label,
                sha256=sha256,
                source=source,
            )
            writer.write(example.SerializeToString(deterministic=True))
            per_class[label] = per_class.get(label, 0) + 1
    return {
        "split": split,
        "file": name,
        "count": sum(per_class.values()),
        "per_class": per_class,
        "stats": accumulator,
    }


def write_gfile_json(items, path: str):
    with tf.io.gfile.GFile(path, "w") as out:
        # Key order kept: the stats histograms are ordered by bin, not by name.
        out.write(json.dumps(items))


def build_pipeline(pipeline, cfg: schema.DataConfig, chunks: int, total_units: int, staging: str):
    prepared = (
        pipeline
        | "UnitChunks" >> beam.Create(range(chunks), reshuffle=False)
        | "SpreadChunks" >> beam.Reshuffle()
        | "ReadChunk" >> beam.FlatMap(read_unit_chunk, staging=staging)
        | "ReadAndPrepare"
        >> beam.ParDo(ReadAndPrepare(cfg, staging, total_units)).with_outputs(
            ReadAndPrepare.QUARANTINE, ReadAndPrepare.SEEN, main="records"
        )
    )
    unique = (
        prepared.records
        | "GroupByHash" >> beam.GroupByKey()
        | "ResolveCopies"
        >> beam.FlatMap(resolve_copies, leakage=cfg.leakage).with_outputs(
            "quarantine", "duplicate", "leakage", main="kept"
        )
    )
    labels = (
        unique.kept
        | "Labels" >> beam.MapTuple(lambda sha256, label, given, source: label)
        | "DistinctLabels" >> beam.Distinct()
        | "CollectLabels" >> beam.combiners.ToList()
        | "SortLabels" >> beam.Map(lambda found: order_labels(found, cfg.classes))
    )
    bucketed = (
        unique.kept
        | "KeyByClass"
        >> beam.MapTuple(lambda sha256, label, given, source: (label, (sha256, given, source)))
        | "GroupByClass" >> beam.GroupByKey()
        | "SplitClass" >> beam.FlatMap(split_class, split_cfg=cfg.split)
    )
    # At most len(SPLITS) * 16**BUCKET_HEX_DIGITS counts: the only side input that every
    # ranking worker needs, whatever the dataset's size.
    bucket_sizes = bucketed | "CountPerBucket" >> beam.combiners.Count.PerKey()
    shard_summaries = (
        bucketed
        | "GroupByBucket" >> beam.GroupByKey()
        | "RankBucket"
        >> beam.FlatMap(
            rank_bucket,
            bucket_sizes=beam.pvalue.AsDict(bucket_sizes),
            per_shard=cfg.examples_per_shard,
        )
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards"
        >> beam.Map(
            write_shard,
            out_dir=staging,
            staging=staging,
            labels=beam.pvalue.AsSingleton(labels),
            cfg=cfg,
        )
    )
    quarantined = (
        prepared[ReadAndPrepare.QUARANTINE],
        unique.quarantine,
    ) | "MergeQuarantine" >> beam.Flatten()
    collected = {
        "shards": shard_summaries,
        "quarantine": quarantined,
        "duplicates": unique.duplicate,
        "leakage": unique.leakage,
    }
    for name, pcoll in collected.items():
        (
            pcoll
            | f"Collect_{name}" >> beam.combiners.ToList()
            | f"Write_{name}"
            >> beam.Map(write_gfile_json, path=os.path.join(staging, f"_{name}.json"))
        )
    labels | "Write_labels" >> beam.Map(
        write_gfile_json, path=os.path.join(staging, "_labels.json")
    )
    (
        prepared[ReadAndPrepare.SEEN]
        | "CountSeen" >> beam.CombineGlobally(sum)
        | "Write_seen" >> beam.Map(write_gfile_json, path=os.path.join(staging, "_seen.json"))
    )


def order_labels(found: list[str], vocabulary: list[str] | None) -> list[str]:
    """The label map: the configured vocabulary's order, else sorted names.

    Labels found outside the vocabulary (archive and TFDS labels are only known to workers) are
    appended, so shards can be written and `summarize` reports them as an IngestError.
    """
    if vocabulary is None:
        return sorted(found)
    return [*vocabulary, *sorted(set(found) - set(vocabulary))]


def pipeline_options(cfg: schema.DataConfig) -> PipelineOptions:
    options = ["--runner", cfg.beam_runner]
    if cfg.beam_runner == "DirectRunner":
        options += [
            f"--direct_running_mode={cfg.beam_direct_mode}",
            "--default_sdk_harness_log_level=WARNING",  # worker processes log every step at INFO
        ]
        if cfg.beam_direct_mode != "in_memory":
            options.append(f"--direct_num_workers={cfg.beam_workers or os.cpu_count() or 1}")
    return PipelineOptions([*options, *cfg.beam_options])


def run(cfg: schema.DataConfig) -> IngestResult:
    """Runs the ingest job and returns the dataset version it wrote (or found already written)."""
    units = sources.list_units(cfg)
    check_vocabulary({u.label for u in units if u.label}, cfg.classes)
    out_root = dataset_store.staging_root(cfg)
    tf.io.gfile.makedirs(out_root)
    staging = os.path.join(out_root, f".staging-{uuid.uuid4().hex[:12]}")
    tf.io.gfile.makedirs(staging)
    mode = f", {cfg.beam_direct_mode}" if cfg.beam_runner == "DirectRunner" else ""
    print(f"ingest: {len(units)} read units from {cfg.source} ({cfg.beam_runner}{mode})")
    try:
        chunks, total_units = write_unit_chunks(units, staging), len(units)
        del units  # workers read the staged chunks: the driver need not hold every unit meanwhile
        with (
            worker_environment(WORKER_MALLOC_ENV),
            console.workers_stderr_filtered(),  # each worker loads TensorFlow anew
            beam.Pipeline(options=pipeline_options(cfg)) as pipeline,
        ):
            build_pipeline(pipeline, cfg, chunks, total_units, staging)
        dataset = summarize(cfg, staging)
        location = publish(staging, cfg, dataset)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    local_dir = dataset_store.cached_copy(location)  # never a download: it may not fit here
    return IngestResult(
        version=dataset["version"],
        path=None if local_dir is None else Path(local_dir),
        dataset=dataset,
        location=location,
    )


@contextlib.contextmanager
def worker_environment(env: dict[str, str]):
    """Adds `env` (where not set already) to the environment worker processes started meanwhile
    inherit; restores the environment after, so later subprocesses (a model server) get theirs."""
    added = {name: value for name, value in env.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def check_vocabulary(labels: set[str], vocabulary: list[str] | None) -> None:
    if vocabulary is None:
        return
    unknown = sorted(labels - set(vocabulary))
    if unknown:
        raise IngestError(
            f"labels outside data.classes: {', '.join(unknown[:20])}"
            f"{' ...' if len(unknown) > 20 else ''}; add them to data.classes or remove "
            "those images from the source"
        )


def read_summary(staging: str, name: str):
    with tf.io.gfile.GFile(os.path.join(staging, f"_{name}.json")) as summary:
        return json.loads(summary.read())


def summarize(cfg: schema.DataConfig, staging: str) -> dict:
    """dataset.json from the pipeline's summaries; raises IngestError for unusable results."""
    summary = {name: read_summary(staging, name) for name in SUMMARIES}
    summary["leakage"] = sorted(summary["leakage"], key=lambda leak: leak["sha256"])
    labels = summary["labels"]
    check_vocabulary(set(labels), cfg.classes)
    if cfg.leakage == "error" and summary["leakage"]:
        examples = "; ".join(", ".join(leak["paths"]) for leak in summary["leakage"][:5])
        raise IngestError(
            f"{len(summary['leakage'])} images appear in more than one given split "
            f"(e.g. {examples}); remove the copies or set data.leakage to keep_eval or drop"
        )
    # The label map holds every class of data.classes; count only classes with images.
    usable = sorted({name for s in summary["shards"] for name, n in s["per_class"].items() if n})
    if len(usable) < 2:
        raise IngestError(
            f"ingest found {len(usable)} class(es) with usable images ({', '.join(usable)}); "
            "a classifier needs at least 2"
        )
    quarantine = sorted(summary["quarantine"], key=lambda q: q["path"])
    with tf.io.gfile.GFile(os.path.join(staging, dataset_info.QUARANTINE_JSONL), "w") as out:
        out.write("".join(json.dumps(q) + "\n" for q in quarantine))
    tf.io.gfile.rmtree(os.path.join(staging, BLOBS))
    tf.io.gfile.rmtree(os.path.join(staging, UNITS))
    for name in SUMMARIES:
        tf.io.gfile.remove(os.path.join(staging, f"_{name}.json"))

    shards = summary["shards"]
    dataset_stats = stats.DatasetStats()
    merged = dataset_stats.merge_accumulators(shard.pop("stats") for shard in shards)
    split_info = {}
    for split in features.SPLITS:
        mine = sorted((s for s in shards if s["split"] == split), key=lambda s: s["file"])
        per_class = {name: 0 for name in labels}
        for shard in mine:
            for name, count in shard["per_class"].items():
                per_class[name] += count
        split_info[split] = {
            "count": sum(per_class.values()),
            "per_class": per_class,
            "shards": [s["file"] for s in mine],
        }
    totals = {
        name: sum(split_info[s]["per_class"][name] for s in features.SPLITS) for name in labels
    }
    present = [count for count in totals.values() if count]
    written = sum(totals.values())
    ingest_config = cfg.model_dump(
        mode="json",
        include={"split", "examples_per_shard", "max_pixels", "background", "store", "leakage"},
    )
    digest = hashlib.sha256(json.dumps({"classes": labels, "config": ingest_config}).encode())
    for split in features.SPLITS:
        for name in split_info[split]["shards"]:
            digest.update(name.encode())
            with tf.io.gfile.GFile(os.path.join(staging, name), "rb") as shard:
                digest.update(hashlib.sha256(shard.read()).digest())
    seen = summary["seen"]
    if seen != written + len(summary["duplicates"]) + len(quarantine):
        raise RuntimeError(
            f"ingest report does not balance: {seen} seen, {written} written, "
            f"{len(summary['duplicates'])} duplicates, {len(quarantine)} quarantined"
        )
    return {
        "version": digest.hexdigest()[:16],
        "source": cfg.source,
        "label_map": labels,
        "num_classes": len(labels),
        "splits": split_info,
        "class_counts": totals,
        "imbalance_ratio": round(max(present) / min(present), 4),
        "empty_classes": [name for name, count in totals.items() if not count],
        "files_seen": seen,
        "written": written,
        "duplicates": len(summary["duplicates"]),
        "quarantined": len(quarantine),
        "leakage": summary["leakage"],
        "stats": dataset_stats.extract_output(merged),
        "ingest_config": ingest_config,
    }


def publish(staging: str, cfg: schema.DataConfig, dataset: dict) -> str:
    """Writes dataset.json, the version's commit marker, moves the staged version into place
    atomically (a bucket: dataset_store.publish) and points `latest` at it; returns where."""
    with tf.io.gfile.GFile(os.path.join(staging, dataset_info.DATASET_JSON), "w") as out:
        out.write(json.dumps(dataset, indent=2) + "\n")
    out_root = cfg.output_dir
    if locations.is_url(out_root):
        return dataset_store.publish(staging, cfg, dataset["version"])
    version_dir = os.path.join(out_root, dataset["version"])
    if tf.io.gfile.exists(version_dir):
        log.info("dataset version %s already exists; keeping it", dataset["version"])
    else:
        tf.io.gfile.rename(staging, version_dir)
    dataset_info.write_latest(out_root, dataset["version"])
    return version_dir
