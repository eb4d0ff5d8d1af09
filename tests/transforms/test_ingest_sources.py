"""The ingest job end to end from each kind of source: manifests, split trees, S3, HTTP, TFDS."""

import csv
import hashlib
import io
import itertools
import json

import numpy as np
import pytest
import tensorflow as tf

from configs import schema
from tests.transforms import shards
from tests.transforms.sources import conftest as sources
from tests.transforms.sources.conftest import http_server, s3_client, s3_endpoint  # noqa: F401
from tests.transforms.sources.test_tfds import mnist_data_dir, tfds  # noqa: F401
from transforms import splits

pytestmark = pytest.mark.beam

ALL_TRAIN = {"train": 1.0, "val": 0.0, "test": 0.0}  # anything without a given split trains
_names = itertools.count()

# (path, label, split) rows of the manifest tests; None: no split given.
MANIFEST_ROWS = [
    ("img/cat/a0.png", "cat", "train"),
    ("img/cat/a1.png", "cat", "val"),
    ("img/cat/a2.png", "cat", "test"),
    ("img/cat/a3.png", "cat", None),
    ("img/dog/b0.png", "dog", "train"),
    ("img/dog/b1.jpg", "dog", "test"),
    ("img/dog/b2.png", "dog", "val"),
    ("img/dog/b3.png", "dog", None),
    ("img/dog/b3.png", "dog", None),  # listed twice: a duplicate
    ("img/missing.png", "dog", "test"),  # no such file: quarantined
    ("img/cat/a0.png", "", None),  # no label: quarantined
]


def write_manifest(root, kind: str) -> str:
    if kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "label", "split"])
        writer.writerows((path, label, split or "") for path, label, split in MANIFEST_ROWS)
        text = buffer.getvalue()
    else:
        rows = []
        for path, label, split in MANIFEST_ROWS:
            row = {"path": path, "label": label or None}
            if split is not None or path.endswith("a3.png"):  # once as null, once left out
                row["split"] = split
            rows.append(json.dumps(row))
        text = "\n".join(rows) + "\n"
    manifest = root / f"labels.{kind}"
    manifest.write_text(text)
    return str(manifest)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_rows_keep_their_labels_and_given_splits(tmp_path, make_image, kind):
    images = {
        "img/cat/a0.png": make_image(1),
        "img/cat/a1.png": make_image(2),
        "img/cat/a2.png": make_image(3),
        "img/cat/a3.png": make_image(4),
        "img/dog/b0.png": make_image(5),
        "img/dog/b1.jpg": make_image(6, "JPEG"),
        "img/dog/b2.png": make_image(7),
        "img/dog/b3.png": make_image(8),
    }
    sources.write_files(tmp_path, images)

    result = shards.run(write_manifest(tmp_path, kind), tmp_path / "out", split=ALL_TRAIN)

    shards.assert_report(result, seen=11, written=8, duplicates=1, quarantined=2)
    assert shards.labels_and_splits(result.path) == {
        "img/cat/a0.png": ("cat", "train"),
        "img/cat/a1.png": ("cat", "val"),
        "img/cat/a2.png": ("cat", "test"),
        "img/cat/a3.png": ("cat", "train"),
        "img/dog/b0.png": ("dog", "train"),
        "img/dog/b1.jpg": ("dog", "test"),
        "img/dog/b2.png": ("dog", "val"),
        "img/dog/b3.png": ("dog", "train"),
    }
    reasons = shards.quarantine(result.path)
    assert set(reasons) == {"img/missing.png", f"labels.{kind}#row=11"}
    assert "unreadable" in reasons["img/missing.png"]
    assert reasons[f"labels.{kind}#row=11"] == "no label in manifest row 11"


def test_presplit_tree_keeps_its_splits_exactly(tmp_path, make_image, make_tree):
    seeds = itertools.count(20)
    spec = {
        f"{split}/{name}": {f"{i}.png": make_image(next(seeds)) for i in range(count)}
        for split, count in (("train", 2), ("val", 1), ("test", 1))
        for name in ("cat", "dog")
    }
    spec["test/dog"]["bad.png"] = b"\x89PNG\r\n\x1a\n broken"
    source = make_tree(tmp_path / "tree", spec)

    # The fractions would put every image in train; the folders must win.
    result = shards.run(source, tmp_path / "out", split=ALL_TRAIN)

    shards.assert_report(result, seen=9, written=8, duplicates=0, quarantined=1)
    expected = {
        f"{folder}/{name}": (folder.split("/")[1], folder.split("/")[0])
        for folder, files in spec.items()
        for name in files
        if name != "bad.png"
    }
    assert shards.labels_and_splits(result.path) == expected
    assert list(shards.quarantine(result.path)) == ["test/dog/bad.png"]


def test_class_tree_in_an_s3_bucket(tmp_path, make_image, s3_client, s3_endpoint):  # noqa: F811
    bucket = f"ingest-{next(_names)}"
    s3_client.create_bucket(Bucket=bucket)
    images = {
        f"{name}/{i}.png": make_image(40 + 10 * c + i)
        for c, name in enumerate(["cat", "dog"])
        for i in range(4)
    }
    for key, data in (images | {"dog/notes.png": b"not an image"}).items():
        s3_client.put_object(Bucket=bucket, Key=f"data/{key}", Body=data)
    split = {"train": 0.5, "val": 0.25, "test": 0.25}

    result = shards.run(
        f"s3://{bucket}/data",
        tmp_path / "out",
        storage_options={"endpoint_url": s3_endpoint},
        split=split,
    )

    shards.assert_report(result, seen=9, written=8, duplicates=0, quarantined=1)
    expected = {}
    for name in ("cat", "dog"):
        mine = {
            path: hashlib.sha256(data).hexdigest()
            for path, data in images.items()
            if path.startswith(f"{name}/")
        }
        assigned = splits.assign_stratified(
            dict.fromkeys(mine.values(), 1), schema.SplitConfig(**split)
        )
        expected |= {path: (name, assigned[sha]) for path, sha in mine.items()}
    assert shards.labels_and_splits(result.path) == expected
    assert sorted(s for _, s in expected.values()) == ["test"] * 2 + ["train"] * 4 + ["val"] * 2
    assert "not an image" in shards.quarantine(result.path)["dog/notes.png"]


def test_tar_gz_archive_over_http(tmp_path, make_image, http_server):  # noqa: F811
    members = {
        "pets/train/cat/0.png": make_image(60),
        "pets/train/dog/0.png": make_image(61),
        "pets/test/cat/1.png": make_image(62),
        "pets/test/dog/1.jpg": make_image(63, "JPEG"),
        "pets/cat/2.png": make_image(64),  # no split folder: split by content (all train)
        "pets/dog/3.png": make_image(65),
        "README.txt": b"outside any class folder",
    }
    folder = f"archive-{next(_names)}"
    sources.write_files(http_server.root / folder, {"pets.tar.gz": sources.tar_bytes(members)})
    url = f"{http_server.url}/{folder}/pets.tar.gz"

    result = shards.run(url, tmp_path / "out", split=ALL_TRAIN)

    shards.assert_report(result, seen=7, written=6, duplicates=0, quarantined=1)
    assert shards.labels_and_splits(result.path) == {
        "pets.tar.gz!pets/train/cat/0.png": ("cat", "train"),
        "pets.tar.gz!pets/train/dog/0.png": ("dog", "train"),
        "pets.tar.gz!pets/test/cat/1.png": ("cat", "test"),
        "pets.tar.gz!pets/test/dog/1.jpg": ("dog", "test"),
        "pets.tar.gz!pets/cat/2.png": ("cat", "train"),
        "pets.tar.gz!pets/dog/3.png": ("dog", "train"),
    }
    assert shards.quarantine(result.path) == {
        "pets.tar.gz!README.txt": "archive member is not inside a class folder"
    }


def test_a_url_that_404s_is_quarantined_and_the_job_completes(
    tmp_path,
    make_image,
    http_server,  # noqa: F811
):
    folder = f"gone-{next(_names)}"
    (http_server.root / folder).mkdir()
    sources.write_files(tmp_path, {"cat/0.png": make_image(70), "dog/0.png": make_image(71)})
    missing = f"{http_server.url}/{folder}/missing.png"
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\ncat/0.png,cat\ndog/0.png,dog\n{missing},dog\n")

    result = shards.run(manifest, tmp_path / "out")

    shards.assert_report(result, seen=3, written=2, duplicates=0, quarantined=1)
    reason = shards.quarantine(result.path)[missing]
    assert reason.startswith("remote read failed after 1 attempt: FileNotFoundError")
    assert http_server.hits[f"/{folder}/missing.png"] == 1  # A 404 is not retried.


# --- TFDS, on mocked data (tfds.testing.mock_data only works in this process) ---

# Examples per TFDS split: (seed of a 28x28 image, class id); -1 is TFDS's "no label".
MNIST = {"train": [(1, 0), (2, 1), (3, 1), (4, 7)], "test": [(5, 0), (6, 7), (7, -1)]}


def mnist_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28, 1), np.uint8)


def fake_mnist(builder, split, decoders=None, read_config=None, **kwargs):
    """Replaces the builder's `_as_dataset`: the examples of MNIST above."""
    del builder, decoders, read_config, kwargs
    seeds, labels = zip(*MNIST[str(split)], strict=True)
    images = np.stack([mnist_image(seed) for seed in seeds])
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": np.array(labels, np.int64)}
    )


def test_tfds_mnist_with_class_names_from_its_class_label(
    tmp_path,
    mnist_data_dir,  # noqa: F811
):
    with tfds.testing.mock_data(data_dir=mnist_data_dir, as_dataset_fn=fake_mnist):
        names = tfds.builder("mnist").info.features["label"].names
        result = shards.run("tfds:mnist", tmp_path / "out", split=ALL_TRAIN)

    shards.assert_report(result, seen=7, written=6, duplicates=0, quarantined=1)
    assert result.dataset["label_map"] == sorted({names[0], names[1], names[7]})
    stored = shards.read(result.path)
    assert {source: (s.label, s.split) for source, s in stored.items()} == {
        f"tfds:mnist:{split}/{index}": (names[label], split)
        for split, examples in MNIST.items()
        for index, (_, label) in enumerate(examples)
        if label >= 0
    }
    for source, example in stored.items():
        split, index = source.removeprefix("tfds:mnist:").split("/")
        seed = MNIST[split][int(index)][0]
        np.testing.assert_array_equal(tf.io.decode_png(example.image).numpy(), mnist_image(seed))
    assert shards.quarantine(result.path) == {
        "tfds:mnist:test/2": "no label (class id -1) in TFDS example"
    }
