"""Beam job: class-folder tree -> validated, deduplicated, split, sharded TFRecords."""

import bisect
import hashlib
import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from configs import errors, schema
from transforms import features, images

DATASET_JSON = "dataset.json"
QUARANTINE_JSONL = "quarantine.jsonl"
LATEST = "latest"  # file in data.output_dir naming the last ingested version
SHARDS_SUMMARY = "_shards.json"
PROGRESS_SECONDS = 5.0
DUPLICATES_SUMMARY = "_duplicates.json"

log = logging.getLogger(__name__)


class IngestError(errors.UserError):
    """The source cannot be ingested at all (missing folder, no classes); the message says why."""


@dataclass(frozen=True)
class IngestResult:
    version: str
    path: Path
    dataset: dict


def list_class_folders(source: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Returns (sorted class names, sorted [(relative path, class name)]) of a class-folder tree."""
    if not source.is_dir():
        raise IngestError(
            f"data.source {source} is not a folder (expected <source>/<class>/<image>)"
        )
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise IngestError(f"data.source {source} has no class folders (expected <source>/<class>/)")
    files = []
    for name in classes:
        for path in sorted((source / name).rglob("*")):
            if path.name.startswith(".") or path.is_dir():
                continue
            files.append((path.relative_to(source).as_posix(), name))
    return classes, files


def split_of(sha256: str, split: schema.SplitConfig) -> str:
    """Deterministic split keyed on content, so identical bytes always land in the same split."""
    position = int(sha256[:16], 16) / 2**64
    if position < split.train:
        return "train"
    if position < split.train + split.val:
        return "val"
    return "test"


def num_shards(count: int, examples_per_shard: int) -> int:
    return max(1, math.ceil(count / examples_per_shard))


class ReadAndValidate(beam.DoFn):
    """Reads and decodes each file once; unusable files go to the 'quarantine' output."""

    QUARANTINE = "quarantine"

    def __init__(self, source: str, class_index: dict[str, int], max_pixels: int, total: int):
        self.source = source
        self.class_index = class_index
        self.max_pixels = max_pixels
        self.total = total
        self.seen = beam.metrics.Metrics.counter("ingest", "files_seen")

    def setup(self):
        self.read_here = 0
        self.last_report = time.monotonic()

    def process(self, item):
        relative_path, class_name = item
        self.seen.inc()
        self.read_here += 1
        if time.monotonic() - self.last_report > PROGRESS_SECONDS:
            self.last_report = time.monotonic()
            print(f"ingest: {self.read_here}/{self.total} files read by this worker", flush=True)
        path = Path(self.source) / relative_path
        try:
            data = path.read_bytes()
        except OSError as error:
            reason = "broken symlink" if path.is_symlink() else f"unreadable: {error.strerror}"
            yield beam.pvalue.TaggedOutput(
                self.QUARANTINE, {"path": relative_path, "reason": reason}
            )
            return
        try:
            info = images.inspect(data, self.max_pixels)
        except images.InvalidImage as error:
            yield beam.pvalue.TaggedOutput(
                self.QUARANTINE, {"path": relative_path, "reason": str(error)}
            )
            return
        sha256 = hashlib.sha256(data).hexdigest()
        yield (
            sha256,
            {
                "image": data,
                "image_format": info.format,
                "height": info.height,
                "width": info.width,
                "label": self.class_index[class_name],
                "label_text": class_name,
                "sha256": sha256,
                "source": relative_path,
            },
        )


def keep_first_copy(sha_and_records):
    """Keeps one record per content hash (the first path); the rest are duplicates or conflicts."""
    _, records = sha_and_records
    records = sorted(records, key=lambda r: r["source"])
    kept = records[0]
    yield kept
    for other in records[1:]:
        if other["label"] == kept["label"]:
            yield beam.pvalue.TaggedOutput("duplicate", other["source"])
        else:
            reason = (
                f"same bytes as {kept['source']} but labelled {other['label_text']!r} "
                f"instead of {kept['label_text']!r}"
            )
            yield beam.pvalue.TaggedOutput(
                "quarantine", {"path": other["source"], "reason": reason}
            )


def write_shard(key_and_records, out_dir: str, counts: dict[str, int], examples_per_shard: int):
    """Writes one shard with its records sorted by hash, so re-runs produce identical bytes."""
    (split, index), records = key_and_records
    total = num_shards(counts[split], examples_per_shard)
    name = features.shard_name(split, index, total)
    per_class: dict[str, int] = {}
    with tf.io.TFRecordWriter(str(Path(out_dir) / name)) as writer:
        for record in sorted(records, key=lambda r: r["sha256"]):
            example = features.build_example(**record)
            writer.write(example.SerializeToString())
            per_class[record["label_text"]] = per_class.get(record["label_text"], 0) + 1
    return {"split": split, "file": name, "count": sum(per_class.values()), "per_class": per_class}


def write_json(items, path: str):
    Path(path).write_text(json.dumps(sorted(items, key=json.dumps), sort_keys=True))


def build_pipeline(pipeline, cfg: schema.DataConfig, classes, files, staging: Path):
    class_index = {name: i for i, name in enumerate(classes)}
    validated = (
        pipeline
        | "ListFiles" >> beam.Create(files, reshuffle=False)
        | "ReadAndValidate"
        >> beam.ParDo(
            ReadAndValidate(cfg.source, class_index, cfg.max_pixels, len(files))
        ).with_outputs(ReadAndValidate.QUARANTINE, main="valid")
    )
    unique = (
        validated.valid
        | "GroupByHash" >> beam.GroupByKey()
        | "Dedupe"
        >> beam.FlatMap(keep_first_copy).with_outputs("duplicate", "quarantine", main="kept")
    )
    split_records = unique.kept | "AssignSplit" >> beam.Map(
        lambda record: (split_of(record["sha256"], cfg.split), record)
    )
    # Hashes only (not image bytes) per split, sorted: a record's rank in its split picks its
    # shard, so every shard but the last holds exactly examples_per_shard examples.
    sorted_hashes = (
        split_records
        | "SplitHashes" >> beam.Map(lambda kv: (kv[0], kv[1]["sha256"]))
        | "GroupHashes" >> beam.GroupByKey()
        | "SortHashes" >> beam.MapTuple(lambda split, hashes: (split, sorted(hashes)))
    )
    counts = sorted_hashes | "CountPerSplit" >> beam.MapTuple(lambda split, h: (split, len(h)))

    def assign_shard(split_and_record, sorted_hashes):
        split, record = split_and_record
        rank = bisect.bisect_left(sorted_hashes[split], record["sha256"])
        return (split, rank // cfg.examples_per_shard), record

    shard_summaries = (
        split_records
        | "AssignShard" >> beam.Map(assign_shard, sorted_hashes=beam.pvalue.AsDict(sorted_hashes))
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards"
        >> beam.Map(
            write_shard,
            out_dir=str(staging),
            counts=beam.pvalue.AsDict(counts),
            examples_per_shard=cfg.examples_per_shard,
        )
    )
    quarantined = (
        validated[ReadAndValidate.QUARANTINE],
        unique.quarantine,
    ) | "MergeQuarantine" >> beam.Flatten()
    for label, pcoll, name in (
        ("ShardSummaries", shard_summaries, SHARDS_SUMMARY),
        ("Quarantined", quarantined, QUARANTINE_JSONL + ".json"),
        ("Duplicates", unique.duplicate, DUPLICATES_SUMMARY),
    ):
        (
            pcoll
            | f"Collect{label}" >> beam.combiners.ToList()
            | f"Write{label}" >> beam.Map(write_json, path=str(staging / name))
        )


def run(cfg: schema.DataConfig) -> IngestResult:
    """Runs the ingest job and returns the dataset version it wrote (or found already written)."""
    source = Path(cfg.source)
    classes, files = list_class_folders(source)
    out_root = Path(cfg.output_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = out_root / f".staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    print(f"ingest: {len(files)} files in {len(classes)} classes from {source} ({cfg.beam_runner})")
    options = PipelineOptions(cfg.beam_options, runner=cfg.beam_runner)
    try:
        with beam.Pipeline(options=options) as pipeline:
            build_pipeline(pipeline, cfg, classes, files, staging)
        dataset = summarize(cfg, classes, len(files), staging)
        version_dir = publish(staging, out_root, dataset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return IngestResult(version=dataset["version"], path=version_dir, dataset=dataset)


def summarize(cfg: schema.DataConfig, classes: list[str], files_seen: int, staging: Path) -> dict:
    shards = json.loads((staging / SHARDS_SUMMARY).read_text())
    quarantine = sorted(
        json.loads((staging / (QUARANTINE_JSONL + ".json")).read_text()), key=lambda q: q["path"]
    )
    duplicates = json.loads((staging / DUPLICATES_SUMMARY).read_text())
    (staging / QUARANTINE_JSONL).write_text("".join(json.dumps(q) + "\n" for q in quarantine))
    for name in (SHARDS_SUMMARY, QUARANTINE_JSONL + ".json", DUPLICATES_SUMMARY):
        (staging / name).unlink()

    splits = {}
    for split in features.SPLITS:
        mine = sorted((s for s in shards if s["split"] == split), key=lambda s: s["file"])
        per_class = {name: 0 for name in classes}
        for shard in mine:
            for name, count in shard["per_class"].items():
                per_class[name] += count
        splits[split] = {
            "count": sum(per_class.values()),
            "per_class": per_class,
            "shards": [s["file"] for s in mine],
        }
    written = sum(s["count"] for s in splits.values())
    ingest_config = cfg.model_dump(
        mode="json", include={"split", "examples_per_shard", "max_pixels"}
    )
    digest = hashlib.sha256(json.dumps({"classes": classes, "config": ingest_config}).encode())
    for split in features.SPLITS:
        for name in splits[split]["shards"]:
            digest.update(name.encode())
            digest.update(hashlib.sha256((staging / name).read_bytes()).digest())
    dataset = {
        "version": digest.hexdigest()[:16],
        "source": str(cfg.source),
        "label_map": classes,
        "num_classes": len(classes),
        "splits": splits,
        "files_seen": files_seen,
        "written": written,
        "duplicates": len(duplicates),
        "quarantined": len(quarantine),
        "ingest_config": ingest_config,
    }
    if files_seen != written + len(duplicates) + len(quarantine):
        raise RuntimeError(f"ingest report does not balance: {dataset}")
    return dataset


def publish(staging: Path, out_root: Path, dataset: dict) -> Path:
    """Moves the staged version into place atomically and points `latest` at it."""
    (staging / DATASET_JSON).write_text(json.dumps(dataset, indent=2) + "\n")
    version_dir = out_root / dataset["version"]
    if version_dir.exists():
        log.info("dataset version %s already exists; keeping it", dataset["version"])
    else:
        staging.rename(version_dir)
    latest_tmp = out_root / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    latest_tmp.write_text(dataset["version"] + "\n")
    latest_tmp.replace(out_root / LATEST)
    return version_dir


def resolve_version_dir(output_dir: str, version: str) -> Path:
    """The folder of dataset `version` ('latest' follows the pointer ingest writes)."""
    root = Path(output_dir)
    if version == LATEST:
        pointer = root / LATEST
        if not pointer.is_file():
            raise IngestError(
                f"no dataset in data.output_dir {root}: run `imgclf ingest --config ...` first"
            )
        version = pointer.read_text().strip()
    path = root / version
    if not (path / DATASET_JSON).is_file():
        raise IngestError(f"dataset version {version} not found under {root}")
    return path


def load_dataset_json(version_dir: Path) -> dict:
    return json.loads((version_dir / DATASET_JSON).read_text())
