"""`imgclf demo`: the bundled digits through the whole pipeline (ingest ... push to the registry),
then the registry's models.config served and a few test images classified over REST."""

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from configs import schema
from core import errors, run_layout
from serving import client
from tfx_pipeline import pipeline
from tracking import records
from trainer import task
from transforms import dataset, dataset_store, digits, features

SAMPLE_IMAGES = 5


@dataclass(frozen=True)
class DemoResult:
    run: task.RunResult
    predictions: list[dict]  # {"path", "true", "top": [(class, prob), ...]}
    pipeline_run_id: str
    pushed: Path  # the version folder in the registry store that was served


def run(cfg: schema.Config) -> DemoResult:
    started = time.time()
    source = Path(cfg.data.source)
    if not any(source.glob("*/*.png")):
        count = digits.write_digits(source)
        print(f"data: wrote {count} digit PNGs to {source}")
    summary = pipeline.run_pipeline(cfg)
    examples = summary.outputs["ExampleGen.examples"]
    model = summary.outputs["Trainer.model"]
    pushed = summary.outputs["Pusher.pushed_model"]
    if not pushed.properties["pushed"]:
        raise errors.UserError(
            f"demo: the model was not pushed ({pushed.properties['reason']}); see "
            f"`imgclf pipeline status --config ...` and {model.properties['run_dir']}/report.html"
        )
    run_dir = Path(model.properties["run_dir"])
    trained = task.RunResult(
        run_dir=run_dir,
        export_dir=Path(model.uri),
        training=records.read(run_dir)["training"],
        metrics=json.loads((run_dir / run_layout.METRICS).read_text()),
    )

    version_dir = dataset_store.local_copy(examples.uri, cfg.data)
    samples = test_sample_paths(version_dir, source, SAMPLE_IMAGES)
    port = free_port(cfg.serving.host)
    url = f"http://{cfg.serving.host}:{port}"
    name = pushed.properties["model"]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--model-config-file",
            str(Path(cfg.registry.store) / "models.config"),
            "--host",
            cfg.serving.host,
            "--port",
            str(port),
            "--grpc-port",
            "0",
            "--log-level",
            "warning",  # the demo's own lines say what was asked and answered
        ],
    )
    try:
        client.wait_until_ready(url, name, timeout_s=120)
        predictions = client.predict_files(url, name, [str(p) for p, _ in samples], top_k=1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for prediction, (_, true_label) in zip(predictions, samples, strict=True):
        prediction["true"] = true_label
        ((predicted, confidence),) = prediction["top"]
        mark = "ok " if predicted == true_label else "MISS"
        print(
            f"  {mark} {prediction['path']}: predicted {predicted} ({confidence:.3f}), "
            f"true {true_label}"
        )
    print(
        f"demo: done in {time.time() - started:.0f}s; test accuracy "
        f"{trained.metrics['accuracy']:.4f}; data {examples.uri}, run {trained.run_dir}, "
        f"report {trained.run_dir / 'report.html'}, served {name} version "
        f"{pushed.properties['version']} from {cfg.registry.store}"
    )
    return DemoResult(
        run=trained,
        predictions=predictions,
        pipeline_run_id=summary.run_id,
        pushed=Path(pushed.uri),
    )


def test_sample_paths(version_dir: str, source: Path, count: int) -> list[tuple[Path, str]]:
    """The first `count` test-split images as (file under source, true class name)."""
    serialized_examples = tf.data.TFRecordDataset(dataset.shard_files(version_dir, "test"))
    samples = []
    for serialized in serialized_examples.take(count):
        example = features.parse(serialized)
        samples.append(
            (
                source / example[features.SOURCE].numpy().decode(),
                example[features.LABEL_TEXT].numpy().decode(),
            )
        )
    return samples


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
