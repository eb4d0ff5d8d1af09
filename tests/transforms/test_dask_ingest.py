"""Ingest on a real Dask cluster (Beam's DaskRunner, two worker processes on 127.0.0.1) writes
the very dataset version the DirectRunner writes from the same source."""

import csv
import io
from pathlib import Path

import pytest
from dask import distributed

from tests.transforms import near_copies, shards
from tests.transforms.sources import conftest as sources
from transforms.beam import steps

pytestmark = [pytest.mark.beam, pytest.mark.slow]

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
CLASSES = ["cat", "dog", "owl", "yak"]  # yak: in the vocabulary, without images
GIVEN_SPLITS = ["train", "val", "test", "", "", "", "", ""]  # "": drawn by content hash


def build_manifest(root: Path, make_image) -> Path:
    """A CSV manifest of 3 classes x 8 images plus one row for every other outcome a summary
    records: an exact copy, a leak (the same bytes given to val and test), a copy labelled
    otherwise, a corrupt file, a missing one and a photo with its half-size copy."""
    files, rows = {}, []
    for c, label in enumerate(CLASSES[:3]):
        for i, split in enumerate(GIVEN_SPLITS):
            files[f"img/{label}/{i}.png"] = make_image(10 * c + i)
            rows.append((f"img/{label}/{i}.png", label, split))
    files["img/cat/copy.png"] = files["img/cat/5.png"]
    files["img/dog/leak.png"] = files["img/dog/1.png"]
    files["img/owl/from-cat.png"] = files["img/cat/6.png"]
    files["img/dog/broken.png"] = b"not an image"
    photo = near_copies.photo("astronaut")
    files["img/cat/photo.png"] = png(photo)
    files["img/cat/photo-half.png"] = png(near_copies.half(photo))
    rows += [
        ("img/cat/copy.png", "cat", ""),
        ("img/dog/leak.png", "dog", "test"),
        ("img/owl/from-cat.png", "owl", ""),
        ("img/dog/broken.png", "dog", ""),
        ("img/owl/missing.png", "owl", ""),
        ("img/cat/photo.png", "cat", ""),
        ("img/cat/photo-half.png", "cat", ""),
    ]
    sources.write_files(root, files)
    with (root / "labels.csv").open("w", newline="") as manifest:
        csv.writer(manifest).writerows([("path", "label", "split"), *rows])
    return root / "labels.csv"


def test_a_dask_cluster_writes_the_direct_runners_version(tmp_path, make_image, monkeypatch):
    manifest = build_manifest(tmp_path, make_image)
    fields = {
        "classes": CLASSES,
        "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        "examples_per_shard": 4,  # several shards per split, ranked across hash buckets
        "near_duplicates": {"mode": "move"},
    }
    direct = shards.run(manifest, tmp_path / "direct", **fields)
    shards.assert_report(direct, seen=31, written=26, duplicates=2, quarantined=3)
    assert direct.dataset["near_duplicates"]["groups"] == 1
    assert [leak["paths"] for leak in direct.dataset["leakage"]] == [
        ["img/dog/1.png", "img/dog/leak.png"]
    ]

    # 8 chunks of 4 units in 4 Dask partitions: both workers read, dedupe and write.
    monkeypatch.setattr(steps, "UNITS_PER_CHUNK", 4)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
    ):
        options = [f"--dask_client_address={cluster.scheduler_address}", "--dask_npartitions=4"]
        on_dask = shards.run(
            manifest, tmp_path / "dask", beam_runner=DASK_RUNNER, beam_options=options, **fields
        )

    # The unit chunks (Dask names the tasks that start from them from_sequence-...) were read
    # on both workers, not only the shuffles after them.
    readers = {task["worker"] for task in tasks.data if key_name(task["key"]).startswith("from_")}
    assert len(readers) == 2
    assert on_dask.version == direct.version
    for key in (
        "label_map",
        "splits",
        "class_counts",
        "leakage",
        "quarantine_reasons",
        "near_duplicates",
        "stats",
    ):
        assert on_dask.dataset[key] == direct.dataset[key], key
    shards.assert_report(on_dask, seen=31, written=26, duplicates=2, quarantined=3)
    assert shards.quarantine(on_dask.path) == shards.quarantine(direct.path)


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def key_name(key: str | tuple) -> str:
    return key if isinstance(key, str) else key[0]
