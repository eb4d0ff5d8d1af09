"""`imgclf demo`: bundled digits through every stage, ending with predictions over REST."""

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from configs import schema
from serving import client
from tfx_pipeline import training
from trainer import task
from transforms import dataset, digits, features
from transforms.beam import ingest

SAMPLE_IMAGES = 5


@dataclass(frozen=True)
class DemoResult:
    run: task.RunResult
    predictions: list[dict]  # {"path", "true", "top": [(class, prob), ...]}


def run(cfg: schema.Config) -> DemoResult:
    started = time.time()
    source = Path(cfg.data.source)
    if not any(source.glob("*/*.png")):
        count = digits.write_digits(source)
        print(f"data: wrote {count} digit PNGs to {source}")
    ingested = ingest.run(cfg.data)
    print(f"ingest: dataset {ingested.version} in {ingested.path}")
    trained = training.train_and_evaluate(cfg)

    samples = test_sample_paths(ingested.path, source, SAMPLE_IMAGES)
    port = free_port(cfg.serving.host)
    url = f"http://{cfg.serving.host}:{port}"
    name = cfg.serving.model_name
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfx_pipeline.cli",
            "serve",
            "--model-path",
            str(trained.export_dir.parent),
            "--model-name",
            name,
            "--host",
            cfg.serving.host,
            "--port",
            str(port),
            "--grpc-port",
            "0",
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
        f"{trained.metrics['accuracy']:.4f}; data {ingested.path}, run {trained.run_dir}, "
        f"SavedModel {trained.export_dir}, report {trained.run_dir / 'report.html'}"
    )
    return DemoResult(run=trained, predictions=predictions)


def test_sample_paths(version_dir: Path, source: Path, count: int) -> list[tuple[Path, str]]:
    """The first `count` test-split images as (file under source, true class name)."""
    records = tf.data.TFRecordDataset(dataset.shard_files(version_dir, "test")).take(count)
    samples = []
    for serialized in records:
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
