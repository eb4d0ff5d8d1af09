"""The training side of drift checks: a dataset version's input histograms and label mix."""

import os

import tensorflow as tf
from tqdm import tqdm

from core import image_stats
from monitoring import drift, stats
from transforms import dataset_info, features


def load_reference(version_dir: str) -> drift.Reference:
    """dataset.json's input histograms when it has them on today's bins, else the same counts
    computed from the version's train shards."""
    info = dataset_info.load(version_dir)
    classes = info["splits"]["train"]["per_class"]
    stored = info.get("stats", {}).get("input_histograms")
    edges = {name: list(values) for name, values in image_stats.INPUT_EDGES.items()}
    if stored is not None and stored.get("edges") == edges:
        return drift.Reference(
            info["version"], stored["counts"], classes, f"{dataset_info.DATASET_JSON} (all splits)"
        )
    histograms, count = shard_histograms(version_dir, "train")
    why = "has no input histograms" if stored is None else "has them on other bins"
    source = (
        f"computed from {count} train images in the shards ({dataset_info.DATASET_JSON} {why}; "
        "sizes are of the stored images)"
    )
    return drift.Reference(info["version"], histograms, classes, source)


def shard_histograms(version_dir: str, split: str) -> tuple[dict[str, list[int]], int]:
    files = sorted(tf.io.gfile.glob(os.path.join(version_dir, features.shard_pattern(split))))
    histograms = image_stats.empty_histograms()
    spec = {features.IMAGE: features.feature_spec()[features.IMAGE]}
    count = 0
    records = tf.data.TFRecordDataset(files)
    for serialized in tqdm(records, desc=f"{split} images", unit="img", leave=False):
        image = tf.io.parse_single_example(serialized, spec)[features.IMAGE].numpy()
        image_stats.add_features(histograms, stats.image_features(image))
        count += 1
    return histograms, count
