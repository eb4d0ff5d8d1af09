"""Helpers for tests that run the ingest job and read back what it wrote."""

import json
from pathlib import Path
from typing import Any, NamedTuple

import tensorflow as tf

from configs import schema
from transforms import dataset_info, features
from transforms.beam import ingest


class Stored(NamedTuple):
    """One example of an ingested dataset, as its shard holds it."""

    label: str
    split: str
    label_index: int
    sha256: str
    image: bytes


def data_config(source: str | Path, output_dir: str | Path, **fields: Any) -> schema.DataConfig:
    """A DataConfig that runs Beam in-process on one worker, with quick remote retries."""
    fields = {
        "beam_direct_mode": "in_memory",
        "beam_workers": 1,
        "read_retries": 1,
        "retry_backoff_s": 0.01,
        "read_timeout_s": 10.0,
    } | fields
    return schema.DataConfig(source=str(source), output_dir=str(output_dir), **fields)


def run(source: str | Path, output_dir: str | Path, **fields: Any) -> ingest.IngestResult:
    return ingest.run(data_config(source, output_dir, **fields))


def read(version_dir: str | Path) -> dict[str, Stored]:
    """{source: Stored} of every example in every split's shards; a source appears once."""
    stored: dict[str, Stored] = {}
    for split in features.SPLITS:
        files = sorted(str(p) for p in Path(version_dir).glob(features.shard_pattern(split)))
        if not files:
            continue
        for example in tf.data.TFRecordDataset(files).map(features.parse).as_numpy_iterator():
            source = example[features.SOURCE].decode()
            assert source not in stored, f"{source} stored twice"
            stored[source] = Stored(
                label=example[features.LABEL_TEXT].decode(),
                split=split,
                label_index=int(example[features.LABEL]),
                sha256=example[features.SHA256].decode(),
                image=example[features.IMAGE],
            )
    return stored


def labels_and_splits(version_dir: str | Path) -> dict[str, tuple[str, str]]:
    """{source: (label, split)} of every stored example."""
    return {source: (s.label, s.split) for source, s in read(version_dir).items()}


def quarantine(version_dir: str | Path) -> dict[str, str]:
    """{path: reason} from quarantine.jsonl."""
    lines = (Path(version_dir) / dataset_info.QUARANTINE_JSONL).read_text().splitlines()
    return {entry["path"]: entry["reason"] for entry in map(json.loads, lines)}


def assert_report(
    result: ingest.IngestResult, seen: int, written: int, duplicates: int, quarantined: int
) -> None:
    """The report has the expected counts, balances, and agrees with the shards on disk."""
    info = result.dataset
    counts = (info["files_seen"], info["written"], info["duplicates"], info["quarantined"])
    assert counts == (seen, written, duplicates, quarantined)
    assert info["files_seen"] == info["written"] + info["duplicates"] + info["quarantined"]
    stored = read(result.path)
    assert len(stored) == written
    assert len(quarantine(result.path)) == quarantined
    for example in stored.values():
        assert info["label_map"][example.label_index] == example.label
    for split in features.SPLITS:
        in_split = [s for s in stored.values() if s.split == split]
        assert info["splits"][split]["count"] == len(in_split)
        assert sum(info["splits"][split]["per_class"].values()) == len(in_split)
