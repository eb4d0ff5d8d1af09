"""Bulk inference as a Beam job (the pipeline's BulkInferrer): every image of a source classified
by a SavedModel with RunInference."""

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base as inference

from configs import schema
from core import errors, signatures
from serving import predict
from transforms.beam import ingest
from transforms.sources import base as source_base
from transforms.sources import manifests, storage
from transforms.sources import registry as sources

log = logging.getLogger(__name__)

PREFIX = "predictions"
NAMESPACE = "bulk_inference"
SUFFIXES = {"jsonl": ".jsonl", "tfrecord": ".tfrecord"}


class BulkInferenceError(errors.UserError):
    """The source or the model cannot be used for bulk inference; the message says why."""


def list_units(source: str, data_cfg: schema.DataConfig) -> list[source_base.ReadUnit]:
    """The source's read units. A folder is any tree of image files (no class folders needed,
    listed as `imgclf predict` does); manifests (their label column optional), archives and TFDS
    go through transforms.sources."""
    cfg = data_cfg.model_copy(update={"source": source})
    try:
        kind = sources.kind_of(source)
        if kind == "folders":
            refs = predict.list_images([source], cfg)
            return [source_base.ReadUnit(kind="file", uri=ref.uri) for ref in refs]
        if kind == "manifest":
            return manifests.list_units(cfg, labelled=False)
        return sources.list_units(cfg)
    except (source_base.SourceError, predict.InputError) as error:
        raise BulkInferenceError(f"pipeline.bulk_inference.source: {error}") from None


class SavedModelHandler(inference.ModelHandler[tuple[str, bytes], dict, Any]):
    """Loads the exported SavedModel once per worker and classifies (uri, bytes) batches with its
    serving_default signature; emits one row per image, an error row for one it cannot decode."""

    def __init__(self, model_dir: str, batch_size: int, top_k: int):
        super().__init__()
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.top_k = top_k

    def load_model(self) -> Any:
        return tf.saved_model.load(self.model_dir)

    def batch_elements_kwargs(self) -> dict:
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}

    def run_inference(
        self, batch: Sequence[tuple[str, bytes]], model: Any, inference_args: dict | None = None
    ) -> Iterable[dict]:
        signature = model.signatures[signatures.SERVING_DEFAULT]
        try:
            return self.rows(signature, batch)
        except tf.errors.OpError:
            pass
        # One bad image fails its whole batch: retry one by one so only that image fails.
        rows = []
        for uri, data in batch:
            try:
                rows.extend(self.rows(signature, [(uri, data)]))
            except tf.errors.OpError as error:
                message = (error.message or str(error)).splitlines()[0]
                rows.append(predict.error_row(uri, f"not classified: {message}"))
        return rows

    def rows(self, signature, batch: Sequence[tuple[str, bytes]]) -> list[dict]:
        images = tf.constant([data for _, data in batch], dtype=tf.string)
        outputs = signature(**{signatures.IMAGE_BYTES: images})
        scores = outputs[signatures.SCORES].numpy()
        classes = outputs[signatures.CLASSES].numpy()
        return [
            predict.success_row(uri, [c.decode() for c in classes[i]], scores[i], self.top_k)
            for i, (uri, _) in enumerate(batch)
        ]

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


def read_images(unit: source_base.ReadUnit, cfg: schema.DataConfig) -> Iterator:
    """(uri, bytes) per image of `unit`, or an error row tagged "failed" for one unreadable."""
    for item, data in sources.read_unit(unit, cfg):
        if isinstance(data, source_base.ReadFailure):
            yield beam.pvalue.TaggedOutput("failed", predict.error_row(item.uri, data.reason))
        else:
            yield item.uri, data


def count(row: dict) -> dict:
    Metrics.counter(NAMESPACE, "images").inc()
    if row.get("error"):
        Metrics.counter(NAMESPACE, "errors").inc()
    return row


def to_example(row: dict) -> bytes:
    """A row as a tf.train.Example: path, label, score, error, top/label and top/score lists."""

    def text(*values) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))

    def floats(*values) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    feature = {
        "path": text(row["path"]),
        "top/label": text(*(t["label"] for t in row["top"])),
        "top/score": floats(*(t["score"] for t in row["top"])),
    }
    if row.get("error"):
        feature["error"] = text(row["error"])
    else:
        feature["label"], feature["score"] = text(row["label"]), floats(row["score"])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def clear_previous(output: str) -> None:
    """Removes an earlier run's shards: a new run may write fewer, and readers glob them all."""
    for suffix in SUFFIXES.values():
        for path in tf.io.gfile.glob(os.path.join(output, f"{PREFIX}-*{suffix}")):
            tf.io.gfile.remove(path)


def counter_value(result, name: str) -> int:
    found = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))["counters"]
    found = [c for c in found if c.key.metric.namespace == NAMESPACE]
    return sum((c.committed if c.committed is not None else c.attempted) or 0 for c in found)


def run_bulk_inference(model_dir: Path, source: str, output: str, cfg: schema.Config) -> dict:
    """Classifies every image of `source` with the SavedModel in `model_dir` as a Beam job and
    writes `<output>/predictions-*.jsonl` (or .tfrecord, per pipeline.bulk_inference.format).
    Unreadable or undecodable images become error rows; returns {images, errors, output}."""
    bulk = cfg.pipeline.bulk_inference
    if not (Path(model_dir) / "saved_model.pb").is_file() and not storage.is_remote(str(model_dir)):
        raise BulkInferenceError(f"no SavedModel in {model_dir} (expected saved_model.pb there)")
    units = list_units(source, cfg.data)
    handler = SavedModelHandler(str(model_dir), bulk.batch_size, cfg.serving.top_k)
    tf.io.gfile.makedirs(output)
    clear_previous(output)
    prefix, suffix = os.path.join(output, PREFIX), SUFFIXES[bulk.format]
    mode = f", {cfg.data.beam_direct_mode}" if cfg.data.beam_runner == "DirectRunner" else ""
    print(f"bulk inference: {len(units)} read units from {source} ({cfg.data.beam_runner}{mode})")
    data_cfg = cfg.data.model_copy(update={"source": source})
    with beam.Pipeline(options=ingest.pipeline_options(cfg.data)) as pipeline:
        read = (
            pipeline
            | "Units" >> beam.Create(units)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(read_images, data_cfg).with_outputs("failed", main="images")
        )
        classified = read.images | "RunInference" >> inference.RunInference(handler)
        rows = (classified, read.failed) | "Rows" >> beam.Flatten() | "Count" >> beam.Map(count)
        if bulk.format == "jsonl":
            encoded = rows | "Json" >> beam.Map(lambda row: json.dumps(row, sort_keys=True))
            encoded | "Write" >> beam.io.WriteToText(prefix, file_name_suffix=suffix)
        else:
            encoded = rows | "Example" >> beam.Map(to_example)
            encoded | "Write" >> beam.io.WriteToTFRecord(prefix, file_name_suffix=suffix)
    result = pipeline.result
    counts = {
        "images": counter_value(result, "images"),
        "errors": counter_value(result, "errors"),
        "output": str(output),
    }
    print(f"bulk inference: {counts['images']} images, {counts['errors']} errors -> {output}")
    return counts
