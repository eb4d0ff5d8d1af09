"""Beam job: any source -> validated, normalised, deduplicated, split, sharded TFRecords. The
job's steps are transforms/beam/steps.py; this module builds it, runs it and publishes the result.

Image bytes never cross a shuffle: they are read, prepared and written to a content-addressed
staging area in one fused step, whose memory does not grow with the dataset; the shuffles after
it (dedupe, splits, shards) move small metadata tuples, and shard writers read the staged bytes
back. No step holds every image's record in one place: splits are cut per class, shards ranked
per (split, hash bucket), each bucket told where it begins by one small group (per-bucket
counts and the label map) joined to it by key: the job has no side inputs. The DirectRunner
holds each shuffle in the driver's memory; runners whose shuffles spill to disk do not.
"""

import contextlib
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import PipelineOptions

from configs import schema
from core import console, errors, locations
from transforms import dataset_card, dataset_info, dataset_store, features, near_duplicates
from transforms.beam import near_duplicates as near_duplicate_steps
from transforms.beam import stats, steps, tagged
from transforms.sources import registry as sources

# glibc malloc settings for the DirectRunner's worker processes, which inherit the driver's
# environment: two arenas instead of one per thread, and fixed mmap/trim thresholds (glibc's
# dynamic ones ratchet up after big frees), so memory freed after decoding images and after each
# shuffle goes back to the OS instead of staying fragmented. Values already set are kept.
WORKER_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "262144",
    "MALLOC_TRIM_THRESHOLD_": "1048576",
}
# The pipeline's summaries and their values when it wrote none (nothing to collect).
SUMMARIES = {
    "shards": [],
    "quarantine": [],
    "duplicates": [],
    "leakage": [],
    "labels": [],
    "seen": 0,
    "near_duplicates": [],
    "group_splits": [],
}

log = logging.getLogger(__name__)


class IngestError(errors.UserError):
    """The source cannot be ingested as configured; the message says why and what to change."""


@dataclass(frozen=True)
class IngestResult:
    version: str
    path: Path | None  # a local folder holding the version (a bucket's cached copy), if any
    dataset: dict
    location: str  # where data.output_dir keeps the version: a local folder or a bucket URL


def build_pipeline(pipeline, cfg: schema.DataConfig, chunks: int, total_units: int, staging: str):
    keep_tags = not runs_on_dask(cfg)
    prepared = tagged.apply(
        pipeline
        | "UnitChunks" >> beam.Create(range(chunks), reshuffle=False)
        | "SpreadChunks" >> beam.Reshuffle(),
        "ReadAndPrepare",
        steps.ReadAndPrepare(cfg, staging, total_units, decode_threads(cfg)),
        main="records",
        tags=(steps.ReadAndPrepare.QUARANTINE, steps.ReadAndPrepare.SEEN),
        keep_tags=keep_tags,
    )
    unique = tagged.apply(
        prepared["records"] | "GroupByHash" >> beam.GroupByKey(),
        "ResolveCopies",
        steps.resolve_copies,
        main="kept",
        tags=("quarantine", "duplicate", "leakage"),
        keep_tags=keep_tags,
        leakage=cfg.leakage,
    )
    mode = cfg.near_duplicates.mode
    by_class = unique["kept"] | "KeyByClass" >> beam.MapTuple(
        lambda sha256, label, given, source, stored, _: (label, (sha256, given, source, stored))
    )
    group_reports = None
    if mode != "off":
        groups = unique["kept"] | "FindNearDuplicates" >> near_duplicate_steps.FindGroups(
            cfg.near_duplicates.max_distance
        )
        group_reports = groups | "GroupReports" >> beam.Map(lambda group: group[0])
        # Each member's representative reaches its class with the class's records.
        marks = groups | "MarkMembers" >> beam.FlatMap(lambda group: group[1])
        by_class = (by_class, marks) | "JoinMarks" >> beam.Flatten()
    bucketed = tagged.apply(
        by_class | "GroupByClass" >> beam.GroupByKey(),
        "SplitClass",
        steps.split_class,
        main="records",
        tags=(steps.LABEL, steps.BUCKET_COUNT, steps.QUARANTINE, steps.GROUP_SPLIT),
        keep_tags=keep_tags,
        split_cfg=cfg.split,
        mode=mode,
    )
    bucket_sizes = bucketed[steps.BUCKET_COUNT] | "CountPerBucket" >> beam.CombinePerKey(sum)
    # Each bucket learns where it begins, and the label map, from one small group (every
    # bucket's size, every class's label) joined to its records by key, not from side inputs:
    # Beam 2.78's DaskRunner recomputes a side input's whole upstream for each step that reads
    # it, and where that upstream already ran in the same worker, its ParDos return their
    # earlier outputs again (bucket sizes counted several times, shards misnumbered).
    classes = {
        steps.LABEL: bucketed[steps.LABEL] | "KeyLabels" >> beam.Map(lambda label: (None, label)),
        steps.BUCKET_COUNT: bucket_sizes | "KeySizes" >> beam.Map(lambda size: (None, size)),
    } | "GatherClasses" >> beam.CoGroupByKey()
    places = classes | "PlaceBuckets" >> beam.FlatMap(steps.place_buckets, vocabulary=cfg.classes)
    shard_summaries = (
        (bucketed["records"], places)
        | "JoinPlaces" >> beam.Flatten()
        | "GroupByBucket" >> beam.GroupByKey()
        | "RankBucket" >> beam.FlatMap(steps.rank_bucket, per_shard=cfg.examples_per_shard)
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(steps.write_shard, out_dir=staging, staging=staging, cfg=cfg)
    )
    quarantined = (
        prepared[steps.ReadAndPrepare.QUARANTINE],
        unique["quarantine"],
        bucketed[steps.QUARANTINE],
    ) | "MergeQuarantine" >> beam.Flatten()
    listed = {
        "shards": shard_summaries,
        "quarantine": quarantined,
        "duplicates": unique["duplicate"],
        "leakage": unique["leakage"],
        "group_splits": bucketed[steps.GROUP_SPLIT],
    }
    if group_reports is not None:
        listed["near_duplicates"] = group_reports
    # Without defaults, which a combiner injects through a side input: an empty summary is not
    # written, and `summarize` reads its SUMMARIES default instead.
    collected = {
        name: pcoll | f"Collect_{name}" >> beam.combiners.ToList().without_defaults()
        for name, pcoll in listed.items()
    }
    collected["labels"] = classes | "LabelMap" >> beam.MapTuple(
        lambda _, found: steps.order_labels(found[steps.LABEL], cfg.classes)
    )
    collected["seen"] = (
        prepared[steps.ReadAndPrepare.SEEN]
        | "CountSeen" >> beam.CombineGlobally(sum).without_defaults()
    )
    written = [
        summary
        | f"Write_{name}"
        >> beam.Map(steps.write_summary, path=os.path.join(staging, f"_{name}.json"))
        for name, summary in collected.items()
    ]
    # One last step that needs every summary: Beam 2.78's DaskRunner computes only the last step
    # of a pipeline (and what it needs), so without it most summaries would not be written.
    written | "AllWritten" >> beam.Flatten()


def runs_on_dask(cfg: schema.DataConfig) -> bool:
    """Whether data.beam_runner is Beam's DaskRunner (by name or module path), which ingest
    meets halfway: see tagged.py and build_pipeline."""
    return cfg.beam_runner.rsplit(".", 1)[-1] == "DaskRunner"


def decode_threads(cfg: schema.DataConfig) -> int:
    """Threads per ReadAndPrepare: the DirectRunner's in_memory mode runs in one thread, so it
    decodes with one thread per core (data.beam_workers); every other mode and runner spreads
    the work itself."""
    if cfg.beam_runner == "DirectRunner" and cfg.beam_direct_mode == "in_memory":
        return cfg.beam_workers or os.cpu_count() or 1
    return 1


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
    fs, _ = fsspec.core.url_to_fs(out_root)
    staging = os.path.join(out_root, f".staging-{uuid.uuid4().hex[:12]}")
    fs.makedirs(staging, exist_ok=True)
    mode = f", {cfg.beam_direct_mode}" if cfg.beam_runner == "DirectRunner" else ""
    print(f"ingest: {len(units)} read units from {cfg.source} ({cfg.beam_runner}{mode})")
    try:
        chunks, total_units = steps.write_unit_chunks(units, staging), len(units)
        del units  # workers read the staged chunks: the driver need not hold every unit meanwhile
        with (
            worker_environment(WORKER_MALLOC_ENV),
            console.workers_stderr_filtered(),  # a worker that must rewrite a file loads TensorFlow
            beam.Pipeline(options=pipeline_options(cfg)) as pipeline,
        ):
            build_pipeline(pipeline, cfg, chunks, total_units, staging)
        if runs_on_dask(cfg):
            # The DaskRunner leaves its client connected after the job; it would keep trying to
            # reconnect once the cluster stops.
            pipeline.result.client.close()
        dataset = summarize(cfg, staging)
        warn_of_straddling_groups(dataset["near_duplicates"])
        location = publish(staging, cfg, dataset)
    finally:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
    local_dir = dataset_store.cached_copy(location)  # never a download: it may not fit here
    return IngestResult(
        version=dataset["version"],
        path=None if local_dir is None else Path(local_dir),
        dataset=dataset,
        location=location,
    )


def warn_of_straddling_groups(found: dict) -> None:
    if found.get("straddling"):  # examples list the straddling groups first
        example = ", ".join(member["source"] for member in found["examples"][0]["members"][:3])
        print(
            f"ingest: warning: {found['straddling']} near-duplicate group(s) span more than one "
            f"split (e.g. {example}); set data.near_duplicates.mode to move (or drop) to keep "
            "each group in one split"
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
    fs, _ = fsspec.core.url_to_fs(staging)
    path = os.path.join(staging, f"_{name}.json")
    if not fs.exists(path):
        return SUMMARIES[name]
    with fs.open(path) as summary:
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
    fs, _ = fsspec.core.url_to_fs(staging)
    with fs.open(os.path.join(staging, dataset_info.QUARANTINE_JSONL), "w") as out:
        out.write("".join(json.dumps(q) + "\n" for q in quarantine))
    groups = near_duplicates.groups_found(summary["near_duplicates"], summary["group_splits"])
    with fs.open(os.path.join(staging, near_duplicates.NEAR_DUPLICATES_JSONL), "w") as out:
        out.write("".join(json.dumps(group) + "\n" for group in groups))
    for folder in (steps.BLOBS, steps.UNITS):  # no blobs when every file is read again
        if fs.exists(os.path.join(staging, folder)):
            fs.rm(os.path.join(staging, folder), recursive=True)
    for name in SUMMARIES:
        if fs.exists(os.path.join(staging, f"_{name}.json")):
            fs.rm(os.path.join(staging, f"_{name}.json"))

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
        include={
            "split",
            "examples_per_shard",
            "max_pixels",
            "background",
            "store",
            "leakage",
            "near_duplicates",
        },
    )
    # The version names the data: a near-duplicate mode that only reports changes no byte.
    hashed_config = dict(ingest_config)
    if cfg.near_duplicates.mode in ("off", "flag"):
        del hashed_config["near_duplicates"]
    digest = hashlib.sha256(json.dumps({"classes": labels, "config": hashed_config}).encode())
    for split in features.SPLITS:
        for name in split_info[split]["shards"]:
            digest.update(name.encode())
            with fs.open(os.path.join(staging, name), "rb") as shard:
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
        "quarantine_reasons": dataset_card.quarantine_reasons(quarantine),
        "near_duplicates": near_duplicates.summary(cfg.near_duplicates, groups),
        # Documentation, not data: outside the version's hash.
        "card": cfg.card.model_dump(mode="json"),
        "stats": dataset_stats.extract_output(merged),
        "ingest_config": ingest_config,
    }


def publish(staging: str, cfg: schema.DataConfig, dataset: dict) -> str:
    """Writes card.md and dataset.json (the version's commit marker), moves the staged version
    into place atomically (a bucket: dataset_store.publish) and points `latest` at it; returns
    where."""
    with fsspec.open(os.path.join(staging, dataset_card.CARD_MD), "w") as out:
        out.write(dataset_card.render(dataset))
    with fsspec.open(os.path.join(staging, dataset_info.DATASET_JSON), "w") as out:
        out.write(json.dumps(dataset, indent=2) + "\n")
    out_root = cfg.output_dir
    if locations.is_url(out_root):
        return dataset_store.publish(staging, cfg, dataset["version"])
    version_dir = os.path.join(out_root, dataset["version"])
    if os.path.exists(version_dir):
        log.info("dataset version %s already exists; keeping it", dataset["version"])
    else:
        os.rename(staging, version_dir)
    dataset_info.write_latest(out_root, dataset["version"])
    return version_dir
