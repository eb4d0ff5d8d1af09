"""Ingested dataset versions in a local folder: dataset.json, the `latest` pointer, stats and
diffs (transforms/dataset_store.py: versions in a bucket, and their local copies)."""

import json
import os
import uuid
from collections.abc import Callable

from core import errors
from transforms import features

DATASET_JSON = "dataset.json"
QUARANTINE_JSONL = "quarantine.jsonl"
LATEST = "latest"  # file in data.output_dir naming the last ingested version


class DatasetNotFound(errors.UserError):
    """No such dataset version; the message says where we looked and what to run."""


def write_latest(out_root: str, version: str) -> None:
    temporary = os.path.join(out_root, f".{LATEST}.{uuid.uuid4().hex[:8]}")
    with open(temporary, "w", encoding="utf-8") as pointer:
        pointer.write(version + "\n")
    os.replace(temporary, os.path.join(out_root, LATEST))


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def resolve_version_dir(
    output_dir: str,
    version: str,
    exists: Callable[[str], bool] = os.path.exists,
    read_text: Callable[[str], str] = read_text,
) -> str:
    """The folder of dataset `version` ('latest' follows the pointer ingest writes), found with
    `exists` and `read_text` (transforms/dataset_store.py passes a bucket's)."""
    if version == LATEST:
        pointer = os.path.join(output_dir, LATEST)
        if not exists(pointer):
            raise DatasetNotFound(
                f"no dataset in data.output_dir {output_dir}: "
                "run `imgclf ingest --config ...` first"
            )
        version = read_text(pointer).strip()
    path = os.path.join(output_dir, version)
    if not exists(os.path.join(path, DATASET_JSON)):
        raise DatasetNotFound(f"dataset version {version} not found under {output_dir}")
    return path


def load(version_dir: str) -> dict:
    return json.loads(read_text(os.path.join(version_dir, DATASET_JSON)))


def example_index(version_dir: str) -> dict[str, tuple[str, str]]:
    """{sha256: (label, split)} of every example, read from the shards."""
    import tensorflow as tf

    every = features.feature_spec()
    spec = {key: every[key] for key in (features.SHA256, features.LABEL_TEXT)}
    index = {}
    for split in features.SPLITS:
        pattern = os.path.join(version_dir, features.shard_pattern(split))
        files = sorted(tf.io.gfile.glob(pattern))
        if not files:
            continue
        for serialized in tf.data.TFRecordDataset(files):
            example = tf.io.parse_single_example(serialized, spec)
            index[example[features.SHA256].numpy().decode()] = (
                example[features.LABEL_TEXT].numpy().decode(),
                split,
            )
    return index


def diff(old_dir: str, new_dir: str) -> dict:
    """Per-class count changes, added/removed/relabelled/moved examples and statistics drift."""
    old, new = load(old_dir), load(new_dir)
    classes = sorted(set(old["class_counts"]) | set(new["class_counts"]))
    old_index, new_index = example_index(old_dir), example_index(new_dir)
    added = sorted(set(new_index) - set(old_index))
    removed = sorted(set(old_index) - set(new_index))
    common = set(old_index) & set(new_index)
    return {
        "old": old["version"],
        "new": new["version"],
        "class_counts": {
            name: {
                "old": old["class_counts"].get(name, 0),
                "new": new["class_counts"].get(name, 0),
                "change": new["class_counts"].get(name, 0) - old["class_counts"].get(name, 0),
            }
            for name in classes
        },
        "added_classes": sorted(set(new["class_counts"]) - set(old["class_counts"])),
        "removed_classes": sorted(set(old["class_counts"]) - set(new["class_counts"])),
        "added": len(added),
        "removed": len(removed),
        "relabelled": sum(old_index[s][0] != new_index[s][0] for s in common),
        "moved_split": sum(old_index[s][1] != new_index[s][1] for s in common),
        "channel_mean_change": [
            round(n - o, 6)
            for o, n in zip(old["stats"]["channel_mean"], new["stats"]["channel_mean"], strict=True)
        ],
        "channel_std_change": [
            round(n - o, 6)
            for o, n in zip(old["stats"]["channel_std"], new["stats"]["channel_std"], strict=True)
        ],
        "imbalance_ratio": {"old": old["imbalance_ratio"], "new": new["imbalance_ratio"]},
        "quarantined": {"old": old["quarantined"], "new": new["quarantined"]},
        # None: a version ingested without the near-duplicate search.
        "near_duplicate_groups": {
            "old": (old.get("near_duplicates") or {}).get("groups"),
            "new": (new.get("near_duplicates") or {}).get("groups"),
        },
        "card_changes": {
            field: {"old": old_value, "new": new_value}
            for field in ("description", "license", "citation")
            if (old_value := (old.get("card") or {}).get(field))
            != (new_value := (new.get("card") or {}).get(field))
        },
    }
