"""Beam job: any source -> validated, normalised, deduplicated, split, sharded TFRecords.

Image bytes never cross a shuffle: they are read, prepared and written to a content-addressed
staging area in one fused step, whose memory does not grow with the dataset; the shuffles after
it (dedupe, shards) move small metadata records, and shard writers read the staged bytes back.
On the DirectRunner those records are held in memory (about 1.3x the 10k peak RSS at 100k
images); runners whose shuffles spill to disk keep it flat.
"""

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

from configs import errors, schema
from transforms import dataset_info, features, images, splits
from transforms.beam import stats
from transforms.sources import base as source_base
from transforms.sources import registry as sources
from transforms.sources import storage

PROGRESS_SECONDS = 5.0
BLOBS = "_blobs"
UNITS = "_units"
UNITS_PER_CHUNK = 64
SUMMARIES = ("shards", "quarantine", "duplicates", "leakage", "labels", "seen")

log = logging.getLogger(__name__)


class IngestError(errors.UserError):
    """The source cannot be ingested as configured; the message says why and what to change."""


@dataclass(frozen=True)
class IngestResult:
    version: str
    path: Path
    dataset: dict


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
            # Only what dedupe, splits and sharding need travels through the shuffles.
            yield {
                "sha256": sha256,
                "label": item.label,
                "given_split": item.split,
                "source": relative_to_source(item.uri, self.source_root),
            }
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


def resolve_copies(sha_and_records, leakage: str):
    """One record per content hash. Copies with another label are quarantined; copies in two
    given splits are leakage, resolved by `leakage` (keep_eval, drop or error)."""
    sha256, records = sha_and_records
    records = sorted(records, key=lambda r: r["source"])
    first = records[0]
    same_label = [r for r in records if r["label"] == first["label"]]
    for other in records:
        if other["label"] != first["label"]:
            reason = (
                f"same bytes as {first['source']} but labelled {other['label']!r} "
                f"instead of {first['label']!r}"
            )
            yield beam.pvalue.TaggedOutput(
                "quarantine", {"path": other["source"], "reason": reason}
            )
    given = {r["given_split"] for r in same_label if r["given_split"]}
    # A copy with a given split wins over one without, so the given split is respected.
    kept = next((r for r in same_label if r["given_split"]), first)
    if len(given) > 1:
        yield beam.pvalue.TaggedOutput(
            "leakage",
            {"sha256": sha256, "splits": sorted(given), "paths": [r["source"] for r in same_label]},
        )
        if leakage == "drop":
            for record in same_label:
                reason = (
                    f"leakage: same bytes in splits {', '.join(sorted(given))} (data.leakage: drop)"
                )
                yield beam.pvalue.TaggedOutput(
                    "quarantine", {"path": record["source"], "reason": reason}
                )
            return
        keep_split = next(s for s in splits.EVAL_FIRST if s in given)
        kept = next(r for r in same_label if r["given_split"] == keep_split)
    yield kept
    for record in same_label:
        if record is not kept:
            yield beam.pvalue.TaggedOutput("duplicate", record["source"])


def plan_shards(_, class_members: dict, split_cfg: schema.SplitConfig, per_shard: int) -> dict:
    """{sha256: (split, shard index)} for every kept image, from (sha256, given split) per class.

    Given splits are kept; the rest of each class is split stratified by content hash. Within a
    split, an image's rank in hash order picks its shard, so every shard but the last holds
    exactly `per_shard` examples. Only hashes are held here, never records or image bytes.
    """
    by_split: dict[str, list[str]] = {name: [] for name in splits.SPLITS}
    for members in class_members.values():
        unassigned = [sha for sha, given in members if not given]
        assignment = splits.assign_stratified(unassigned, split_cfg) if unassigned else {}
        for sha, given in members:
            by_split[given or assignment[sha]].append(sha)
    plan = {}
    for split, hashes in by_split.items():
        hashes.sort()
        for rank, sha in enumerate(hashes):
            plan[sha] = (split, rank // per_shard, len(hashes))
    return plan


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
        for record in sorted(records, key=lambda r: r["sha256"]):
            data, description = read_staged(staging, record["sha256"])
            accumulator = shard_stats.add_input(accumulator, description)
            example = features.build_example(
                image=data,
                image_format=description["format"],
                height=description["height"],
                width=description["width"],
                label=label_index[record["label"]],
                label_text=record["label"],
                sha256=record["sha256"],
                source=record["source"],
            )
            writer.write(example.SerializeToString(deterministic=True))
            per_class[record["label"]] = per_class.get(record["label"], 0) + 1
    return {
        "split": split,
        "file": name,
        "count": sum(per_class.values()),
        "per_class": per_class,
        "stats": accumulator,
    }


def write_json(items, path: str):
    with tf.io.gfile.GFile(path, "w") as out:
        # Key order kept: the stats histograms are ordered by bin, not by name.
        out.write(json.dumps(items))


def build_pipeline(pipeline, cfg: schema.DataConfig, units, staging: str):
    prepared = (
        pipeline
        | "UnitChunks" >> beam.Create(range(write_unit_chunks(units, staging)), reshuffle=False)
        | "SpreadChunks" >> beam.Reshuffle()
        | "ReadChunk" >> beam.FlatMap(read_unit_chunk, staging=staging)
        | "ReadAndPrepare"
        >> beam.ParDo(ReadAndPrepare(cfg, staging, len(units))).with_outputs(
            ReadAndPrepare.QUARANTINE, ReadAndPrepare.SEEN, main="records"
        )
    )
    unique = (
        prepared.records
        | "KeyByHash" >> beam.Map(lambda record: (record["sha256"], record))
        | "GroupByHash" >> beam.GroupByKey()
        | "ResolveCopies"
        >> beam.FlatMap(resolve_copies, leakage=cfg.leakage).with_outputs(
            "quarantine", "duplicate", "leakage", main="kept"
        )
    )
    labels = (
        unique.kept
        | "Labels" >> beam.Map(lambda record: record["label"])
        | "DistinctLabels" >> beam.Distinct()
        | "CollectLabels" >> beam.combiners.ToList()
        | "SortLabels" >> beam.Map(lambda found: order_labels(found, cfg.classes))
    )
    class_members = (
        unique.kept
        | "ClassMembers" >> beam.Map(lambda r: (r["label"], (r["sha256"], r["given_split"])))
        | "GroupByClass" >> beam.GroupByKey()
        | "ListMembers" >> beam.MapTuple(lambda label, members: (label, list(members)))
    )
    shard_plan = (
        pipeline
        | "PlanSeed" >> beam.Create([None])
        | "PlanShards"
        >> beam.Map(
            plan_shards,
            class_members=beam.pvalue.AsDict(class_members),
            split_cfg=cfg.split,
            per_shard=cfg.examples_per_shard,
        )
    )

    def assign_shard(record, plan):
        split, index, split_size = plan[record["sha256"]]
        return (split, index, split_size), record

    shard_summaries = (
        unique.kept
        | "AssignShard" >> beam.Map(assign_shard, plan=beam.pvalue.AsSingleton(shard_plan))
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
            | f"Write_{name}" >> beam.Map(write_json, path=os.path.join(staging, f"_{name}.json"))
        )
    labels | "Write_labels" >> beam.Map(write_json, path=os.path.join(staging, "_labels.json"))
    (
        prepared[ReadAndPrepare.SEEN]
        | "CountSeen" >> beam.CombineGlobally(sum)
        | "Write_seen" >> beam.Map(write_json, path=os.path.join(staging, "_seen.json"))
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
    out_root = cfg.output_dir
    tf.io.gfile.makedirs(out_root)
    staging = os.path.join(out_root, f".staging-{uuid.uuid4().hex[:12]}")
    tf.io.gfile.makedirs(staging)
    mode = f", {cfg.beam_direct_mode}" if cfg.beam_runner == "DirectRunner" else ""
    print(f"ingest: {len(units)} read units from {cfg.source} ({cfg.beam_runner}{mode})")
    try:
        with beam.Pipeline(options=pipeline_options(cfg)) as pipeline:
            build_pipeline(pipeline, cfg, units, staging)
        dataset = summarize(cfg, staging)
        version_dir = publish(staging, out_root, dataset)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    return IngestResult(version=dataset["version"], path=Path(version_dir), dataset=dataset)


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


def publish(staging: str, out_root: str, dataset: dict) -> str:
    """Moves the staged version into place atomically and points `latest` at it."""
    with tf.io.gfile.GFile(os.path.join(staging, dataset_info.DATASET_JSON), "w") as out:
        out.write(json.dumps(dataset, indent=2) + "\n")
    version_dir = os.path.join(out_root, dataset["version"])
    if tf.io.gfile.exists(version_dir):
        log.info("dataset version %s already exists; keeping it", dataset["version"])
    else:
        tf.io.gfile.rename(staging, version_dir)
    dataset_info.write_latest(out_root, dataset["version"])
    return version_dir
