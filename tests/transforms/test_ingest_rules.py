"""Ingest rules: leakage between given splits, the label vocabulary, class counts and statistics."""

import hashlib
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from configs import schema
from tests.transforms import shards
from tests.transforms.sources import conftest as sources
from transforms import preprocess, splits
from transforms.beam import ingest
from transforms.sources import base as source_base

pytestmark = pytest.mark.beam

CORRUPT = b"\x89PNG\r\n\x1a\n not really"


@pytest.fixture(scope="module")
def leaky_tree(tmp_path_factory, make_image, make_tree):
    """A pre-split tree with the same bytes in train/dog/leak.png and test/dog/leak.png."""
    leak = make_image(9)
    spec = {
        "train/cat": {"0.png": make_image(1), "1.png": make_image(2)},
        "train/dog": {"0.png": make_image(3), "leak.png": leak},
        "test/cat": {"2.png": make_image(4)},
        "test/dog": {"3.png": make_image(5), "leak.png": leak},
    }
    return make_tree(tmp_path_factory.mktemp("leaky") / "tree", spec), leak


def test_leakage_keep_eval_writes_only_the_test_copy(leaky_tree, tmp_path):
    source, leak = leaky_tree
    result = shards.run(source, tmp_path, leakage="keep_eval")

    shards.assert_report(result, seen=7, written=6, duplicates=1, quarantined=0)
    stored = shards.labels_and_splits(result.path)
    assert stored["test/dog/leak.png"] == ("dog", "test")
    assert "train/dog/leak.png" not in stored
    assert result.dataset["leakage"] == [
        {
            "sha256": hashlib.sha256(leak).hexdigest(),
            "splits": ["test", "train"],
            "paths": ["test/dog/leak.png", "train/dog/leak.png"],
        }
    ]


def test_leakage_drop_quarantines_both_copies(leaky_tree, tmp_path):
    source, _ = leaky_tree
    result = shards.run(source, tmp_path, leakage="drop")

    shards.assert_report(result, seen=7, written=5, duplicates=0, quarantined=2)
    reasons = shards.quarantine(result.path)
    assert set(reasons) == {"test/dog/leak.png", "train/dog/leak.png"}
    assert all("leakage" in reason for reason in reasons.values())
    assert not {"test/dog/leak.png", "train/dog/leak.png"} & set(shards.read(result.path))
    assert [leak["paths"] for leak in result.dataset["leakage"]] == [list(reasons)]


def test_leakage_error_names_the_files_and_the_setting(leaky_tree, tmp_path):
    source, _ = leaky_tree
    with pytest.raises(ingest.IngestError) as raised:
        shards.run(source, tmp_path, leakage="error")
    message = str(raised.value)
    assert "train/dog/leak.png" in message and "test/dog/leak.png" in message
    assert "data.leakage" in message
    assert not list(tmp_path.iterdir())  # Nothing published, no staging left behind.


def test_a_copy_with_a_given_split_wins_over_one_without(tmp_path, make_image):
    same = make_image(1)
    files = {"a.png": same, "b.png": same, "c.png": make_image(2), "d.png": make_image(3)}
    sources.write_files(tmp_path, files)
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label,split\na.png,cat,\nb.png,cat,test\nc.png,cat,\nd.png,dog,\n")

    result = shards.run(manifest, tmp_path / "out", split={"train": 1.0, "val": 0.0, "test": 0.0})

    shards.assert_report(result, seen=4, written=3, duplicates=1, quarantined=0)
    assert shards.labels_and_splits(result.path) == {
        "b.png": ("cat", "test"),
        "c.png": ("cat", "train"),
        "d.png": ("dog", "train"),
    }
    assert result.dataset["leakage"] == []


def test_a_folder_outside_the_vocabulary_is_an_error(tmp_path, make_image, make_tree):
    spec = {name: {"0.png": make_image(i)} for i, name in enumerate(["cat", "dog", "bird"])}
    source = make_tree(tmp_path / "tree", spec)
    with pytest.raises(ingest.IngestError, match=r"bird.*data\.classes"):
        shards.run(source, tmp_path / "out", classes=["cat", "dog"])


def test_an_archive_label_outside_the_vocabulary_is_an_error(tmp_path, make_image):
    # Archive members are labelled by Beam workers, after the driver's check of listed units.
    members = {f"{name}/0.png": make_image(i) for i, name in enumerate(["cat", "dog", "bird"])}
    archive = tmp_path / "pets.tar.gz"
    archive.write_bytes(sources.tar_bytes(members))
    with pytest.raises(ingest.IngestError, match=r"bird.*data\.classes"):
        shards.run(archive, tmp_path / "out", classes=["cat", "dog"])


def test_the_label_map_follows_the_vocabulary_order(tmp_path, make_image, make_tree):
    spec = {
        "cat": {"0.png": make_image(1), "1.png": make_image(2)},
        "dog": {"0.png": make_image(3), "1.png": make_image(4)},
    }
    source = make_tree(tmp_path / "tree", spec)

    result = shards.run(source, tmp_path / "out", classes=["dog", "cat"])

    assert result.dataset["label_map"] == ["dog", "cat"]
    shards.assert_report(result, seen=4, written=4, duplicates=0, quarantined=0)
    indices = {s.label: s.label_index for s in shards.read(result.path).values()}
    assert indices == {"dog": 0, "cat": 1}


@pytest.mark.parametrize("classes", [None, ["cat", "dog"]], ids=["any", "vocabulary"])
def test_a_single_usable_class_is_an_error(tmp_path, make_image, make_tree, classes):
    spec = {
        "cat": {"0.png": make_image(1), "1.png": make_image(2)},
        "dog": {"0.png": CORRUPT, "1.png": b""},  # both quarantined: no usable dog
    }
    source = make_tree(tmp_path / "tree", spec)
    with pytest.raises(ingest.IngestError, match="a classifier needs at least 2"):
        shards.run(source, tmp_path / "out", classes=classes)


def test_an_empty_class_folder_is_a_source_error(tmp_path, make_image, make_tree):
    source = make_tree(tmp_path / "tree", {"cat": {"0.png": make_image(1)}})
    (source / "dog").mkdir()
    with pytest.raises(source_base.SourceError, match="class folder dog is empty"):
        shards.run(source, tmp_path / "out")


@pytest.mark.slow
def test_a_relative_source_stores_paths_relative_to_it(
    tmp_path, make_image, make_tree, monkeypatch
):
    spec = {name: {"0.png": make_image(c)} for c, name in enumerate(["cat", "dog"])}
    make_tree(tmp_path / "tree", spec)
    monkeypatch.chdir(tmp_path)

    relative = shards.run("tree", "out")
    absolute = shards.run(tmp_path / "tree", tmp_path / "out-abs")

    assert set(shards.read(relative.path)) == {"cat/0.png", "dog/0.png"}
    assert relative.version == absolute.version


def test_splits_are_cut_exactly_at_the_configured_fractions():
    # 0.1 + 0.2 is 0.30000000000000004 in floats: the fourth of ten images must still be test.
    config = schema.SplitConfig(train=0.1, val=0.2, test=0.7)
    assigned = splits.assign_stratified({f"{i:064x}": 1 for i in range(10)}, config)
    assert Counter(assigned.values()) == {"train": 1, "val": 2, "test": 7}


# (file, Pillow format, mode, (width, height)); cat has 6 images and dog 2: imbalance 3.
STATS_IMAGES = [
    ("cat/0.png", "PNG", "RGB", (20, 16)),
    ("cat/1.png", "PNG", "L", (40, 30)),
    ("cat/2.png", "PNG", "RGBA", (10, 40)),
    ("cat/3.jpg", "JPEG", "RGB", (64, 20)),
    ("cat/4.gif", "GIF", "P", (33, 33)),
    ("cat/5.png", "PNG", "RGB", (300, 100)),
    ("dog/0.jpg", "JPEG", "L", (16, 16)),
    ("dog/1.webp", "WEBP", "RGB", (50, 40)),
]


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory, make_image):
    root = tmp_path_factory.mktemp("stats")
    files = {}
    for i, (name, image_format, mode, size) in enumerate(STATS_IMAGES):
        options = {"lossless": True} if image_format == "WEBP" else {}
        files[name] = make_image(100 + i, image_format, size, mode, **options)
    sources.write_files(root / "tree", files)
    return files, shards.run(root / "tree", root / "out")


def test_class_counts_and_imbalance_ratio(imbalanced):
    _, result = imbalanced
    shards.assert_report(result, seen=8, written=8, duplicates=0, quarantined=0)
    assert result.dataset["class_counts"] == {"cat": 6, "dog": 2}
    assert result.dataset["imbalance_ratio"] == 3.0


def test_channel_moments_match_numpy_on_the_decoded_images(imbalanced):
    files, result = imbalanced
    pixels = np.concatenate(
        [preprocess.decode_rgb(tf.constant(data)).numpy().reshape(-1, 3) for data in files.values()]
    ).astype(np.float64)
    stats = result.dataset["stats"]
    assert stats["images"] == 8
    np.testing.assert_allclose(stats["channel_mean"], (pixels / 255).mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["channel_std"], (pixels / 255).std(axis=0), atol=1e-6)


def test_histograms_count_every_image_in_order(imbalanced):
    _, result = imbalanced
    stats = result.dataset["stats"]
    assert list(stats["height_histogram"].items()) == [("0-32", 4), ("32-64", 3), ("64-128", 1)]
    assert list(stats["width_histogram"].items()) == [
        ("0-32", 3),
        ("32-64", 3),
        ("64-128", 1),
        ("256-512", 1),
    ]
    assert list(stats["aspect_histogram"].items()) == [
        ("0.0-0.5", 1),
        ("0.9-1.1", 2),
        ("1.1-1.34", 3),
        ("2.0+", 2),
    ]
    assert stats["original_modes"] == {"L": 2, "P": 1, "RGB": 4, "RGBA": 1}
    assert stats["original_formats"] == {"gif": 1, "jpeg": 2, "png": 4, "webp": 1}
    assert stats["rewritten"] == 3  # RGBA composited, GIF and WebP stored as PNG
