"""Digits benchmark: ingest and training throughput beside hand-written baselines, and accuracy.

Baselines, measured in the same run on the same files:
- ingest: a single-process loop that reads, decodes (Pillow) and writes one TFRecord file;
- training: keras.utils.image_dataset_from_directory feeding the same model for the same epochs.
Each figure is the median of --repeats runs, the two sides alternating.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from configs import loader
from tfx_pipeline import cli
from trainer import models, optim, task
from transforms import augment, dataset, digits, features
from transforms.beam import ingest

RESULTS = Path(__file__).parent / "results"


def baseline_ingest(source: Path, out_file: Path) -> int:
    """What a hand-written script does: walk the folders, decode each file once, write one shard."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    files = [(path, name) for name in classes for path in sorted((source / name).iterdir())]
    with tf.io.TFRecordWriter(str(out_file)) as writer:
        for path, name in files:
            data = path.read_bytes()
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            example = features.build_example(
                data,
                "png",
                int(image.shape[0]),
                int(image.shape[1]),
                classes.index(name),
                name,
                "",
                str(path),
            )
            writer.write(example.SerializeToString())
    return len(files)


def train_images_per_second(cfg, train_data, count: int, epochs: int) -> float:
    keras.utils.set_random_seed(cfg.seed)
    model = models.build_model(cfg.model, (*cfg.data.image_size, cfg.data.channels), 10)
    steps = -(-count // cfg.data.batch_size)
    model.compile(
        optimizer=optim.build_optimizer(cfg.optimizer, steps, epochs),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(train_data.take(2), epochs=1, verbose=0, shuffle=False)  # trace, untimed
    started = time.perf_counter()
    model.fit(train_data, epochs=epochs, verbose=0, shuffle=False)
    return count * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per throughput sample")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgclf-bench-"))
    source = work / "digits"
    digits.write_digits(source)
    cfg = loader.load(
        cli.DIGITS_CONFIG,
        [
            f"data.source={source}",
            f"data.output_dir={work / 'tfr'}",
            f"train.runs_dir={work / 'runs'}",
        ],
    )

    ingest_ours, ingest_base = [], []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        result = ingest.run(cfg.data)
        ingest_ours.append(result.dataset["files_seen"] / (time.perf_counter() - started))
        started = time.perf_counter()
        count = baseline_ingest(source, work / f"baseline{repeat}.tfrecord")
        ingest_base.append(count / (time.perf_counter() - started))

    version_dir = result.path
    train_count = result.dataset["splits"]["train"]["count"]
    augmenter = augment.build_augmenter(cfg.augment, cfg.seed)
    ours_data = dataset.build_dataset(version_dir, "train", cfg.data, True, cfg.seed, augmenter)
    base_data = keras.utils.image_dataset_from_directory(
        source,
        image_size=tuple(cfg.data.image_size),
        color_mode="grayscale",
        batch_size=cfg.data.batch_size,
        seed=cfg.seed,
        verbose=False,
    ).map(lambda x, y: (augmenter(x / 255.0, training=True), y))
    base_count = sum(1 for _ in Path(source).rglob("*.png"))
    train_ours, train_base = [], []
    for _ in range(args.repeats):
        train_ours.append(train_images_per_second(cfg, ours_data, train_count, args.epochs))
        train_base.append(train_images_per_second(cfg, base_data, base_count, args.epochs))

    accuracy = task.run(cfg).metrics["accuracy"]
    figures = {
        "ingest_images_per_s": statistics.median(ingest_ours),
        "ingest_baseline_images_per_s": statistics.median(ingest_base),
        "train_images_per_s": statistics.median(train_ours),
        "train_baseline_images_per_s": statistics.median(train_base),
        "test_accuracy": accuracy,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "tensorflow": tf.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "digits.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{'':24}{'imgclf':>12}{'baseline':>12}{'ratio':>8}")
    for name, ours, base in (
        (
            "ingest images/s",
            figures["ingest_images_per_s"],
            figures["ingest_baseline_images_per_s"],
        ),
        ("train images/s", figures["train_images_per_s"], figures["train_baseline_images_per_s"]),
    ):
        print(f"{name:24}{ours:12.1f}{base:12.1f}{ours / base:8.2f}")
    print(f"{'test accuracy':24}{accuracy:12.4f}")
    print(f"bench: wrote {RESULTS / 'digits.json'}")


if __name__ == "__main__":
    main()
