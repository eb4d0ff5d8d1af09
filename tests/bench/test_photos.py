"""bench/photos.py: the real-photo crop sets have the counts, formats and sizes they promise, no
holdout crop touches a training crop's pixels, and a seed always writes the same bytes."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

PHOTOS = Path(__file__).resolve().parents[2] / "bench" / "photos.py"
COUNTS = {"train_per_class": 12, "holdout_per_class": 4, "pretrain_per_class": 3}


@pytest.fixture(scope="module")
def photos():
    spec = importlib.util.spec_from_file_location("bench_photos", PHOTOS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def written(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("photos")
    photos.write_sets(out, seed=3, **COUNTS)
    return out, json.loads((out / photos.MANIFEST).read_text())["crops"]


def test_every_class_has_its_count_of_files_in_each_split(photos, written):
    out, _ = written
    expected = {
        ("task", "train"): (photos.TASK_PHOTOS, COUNTS["train_per_class"]),
        ("task", "holdout"): (photos.TASK_PHOTOS, COUNTS["holdout_per_class"]),
        ("pretrain", "train"): (photos.PRETRAIN_PHOTOS, COUNTS["pretrain_per_class"]),
    }
    for (set_name, split), (classes, count) in expected.items():
        folder = out / set_name / split
        assert sorted(p.name for p in folder.iterdir()) == sorted(classes)
        for label in classes:
            assert len(list((folder / label).iterdir())) == count, (set_name, split, label)
    assert not set(photos.TASK_PHOTOS.values()) & set(photos.PRETRAIN_PHOTOS.values())


def test_crops_come_in_every_format_and_size_range(photos, written):
    out, crops = written
    assert {crop["format"] for crop in crops} == set(photos.FORMATS)
    modes = set()
    for crop in crops:
        with Image.open(out / crop["path"]) as image:
            assert list(image.size) == crop["size"], crop["path"]
            modes.add(image.mode)
            assert all(photos.MIN_SIDE <= side <= photos.MAX_SIDE for side in image.size)
            if crop["format"] == "rgba_png":
                alpha = np.asarray(image)[..., 3]
                assert alpha.min() == 0 and alpha.max() == 255, crop["path"]
    assert {"RGB", "RGBA", "L"} <= modes
    assert {crop["orientation"] for crop in crops} == {1, 3, 6, 8}
    suffixes = {Path(crop["path"]).suffix for crop in crops}
    assert suffixes == {".jpg", ".png", ".webp"}


def test_exif_crops_are_upright_only_through_their_tag(photos, written):
    out, crops = written
    turned = [crop for crop in crops if crop["orientation"] != 1]
    assert turned
    package_of = {
        name: package
        for package, name in [*photos.TASK_PHOTOS.values(), *photos.PRETRAIN_PHOTOS.values()]
    }
    for crop in turned:
        photo = photos.load_photo(package_of[crop["photo"]], crop["photo"])
        with Image.open(out / crop["path"]) as stored:
            upright = ImageOps.exif_transpose(stored).convert("RGB")
            raw = stored.convert("RGB")
        expected = photo.crop(crop["box"]).resize(upright.size, Image.Resampling.BICUBIC)
        error = np.abs(np.asarray(upright, float) - np.asarray(expected, float)).mean()
        assert error < 6, (crop["path"], error)  # JPEG's loss only
        if raw.size == upright.size:  # orientation 3: same shape, turned pixels
            wrong = np.abs(np.asarray(raw, float) - np.asarray(expected, float)).mean()
            assert wrong > 2 * error, crop["path"]
        else:
            assert raw.size == upright.size[::-1]


def intersects(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_no_holdout_box_meets_a_training_box_of_its_photo(written):
    _, crops = written
    task = [crop for crop in crops if crop["set"] == "task"]
    for holdout in (crop for crop in task if crop["split"] == "holdout"):
        for train in (crop for crop in task if crop["split"] == "train"):
            if train["photo"] == holdout["photo"]:
                assert not intersects(holdout["box"], train["box"]), (holdout, train)
    assert {crop["split"] for crop in task} == {"train", "holdout"}


def test_the_same_seed_writes_the_same_bytes(photos, written, tmp_path):
    out, _ = written
    again = tmp_path / "again"
    photos.write_sets(again, seed=3, **COUNTS)
    assert photos.digest(again) == photos.digest(out)
    assert (again / photos.MANIFEST).read_bytes() == (out / photos.MANIFEST).read_bytes()
    other = tmp_path / "other"
    photos.write_sets(other, seed=4, **COUNTS)
    assert photos.digest(other) != photos.digest(out)
