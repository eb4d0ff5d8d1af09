"""Bulk inference as a Beam job: the rows against the signature, error rows, both formats,
unlabelled manifests."""

import json

import numpy as np
import pytest

from configs import loader
from serving import bulk_inference
from tests.conftest import export_dense_model

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture
def images(tmp_path, make_image):
    """Five 8x8 PNGs in a flat folder and one nested, plus a .png that is not an image."""
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    for i in range(5):
        (folder / f"{i}.png").write_bytes(make_image(i, size=(8, 8)))
    (folder / "nested" / "5.png").write_bytes(make_image(5, size=(8, 8)))
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("not listed: not an image suffix")
    return folder


def config(tmp_path, *overrides: str):
    return loader.load(None, ["data.beam_direct_mode=in_memory", *overrides])


def read_jsonl(output) -> list[dict]:
    return [
        json.loads(line)
        for p in sorted(output.glob("predictions-*.jsonl"))
        for line in p.read_text().splitlines()
    ]


@pytest.mark.slow
@pytest.mark.beam
@pytest.mark.parametrize("batch_size", [1, 4])  # 1: the bad image fails a batch of its own
def test_every_image_gets_the_signatures_scores_and_a_bad_one_an_error_row(
    tmp_path, images, batch_size
):
    import tensorflow as tf

    model_dir = export_dense_model(tmp_path / "model", 8, 3, CLASSES)
    cfg = config(tmp_path, f"pipeline.bulk_inference.batch_size={batch_size}")
    output = tmp_path / "out"
    counts = bulk_inference.run_bulk_inference(model_dir, str(images), str(output), cfg)
    assert counts == {"images": 7, "errors": 1, "output": str(output)}

    rows = {row["path"]: row for row in read_jsonl(output)}
    assert len(rows) == 7
    broken = rows.pop(str(images / "broken.png"))
    assert broken["label"] is None and broken["top"] == [] and broken["error"]
    assert sorted(rows) == sorted(str(p) for p in images.rglob("[0-9].png"))

    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    paths = sorted(rows)
    outputs = signature(image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
    for path, scores in zip(paths, outputs["scores"].numpy(), strict=True):
        row = rows[path]
        assert "error" not in row
        assert row["label"] == CLASSES[int(np.argmax(scores))]
        assert row["score"] == pytest.approx(float(scores.max()), abs=1e-6)
        by_label = {t["label"]: t["score"] for t in row["top"]}
        assert by_label == pytest.approx(dict(zip(CLASSES, scores.tolist(), strict=True)))


@pytest.mark.slow
@pytest.mark.beam
def test_tfrecord_output_holds_the_same_rows_and_a_rerun_replaces_them(tmp_path, images):
    import tensorflow as tf

    model_dir = export_dense_model(tmp_path / "model", 8, 3, CLASSES)
    output = tmp_path / "out"
    jsonl = bulk_inference.run_bulk_inference(model_dir, str(images), str(output), config(tmp_path))
    expected = {row["path"]: row for row in read_jsonl(output)}
    cfg = config(tmp_path, "pipeline.bulk_inference.format=tfrecord")
    counts = bulk_inference.run_bulk_inference(model_dir, str(images), str(output), cfg)
    assert counts == jsonl
    assert not list(output.glob("predictions-*.jsonl"))

    shards = sorted(str(p) for p in output.glob("predictions-*.tfrecord"))
    found = {}
    for record in tf.data.TFRecordDataset(shards):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature
        path = feature["path"].bytes_list.value[0].decode()
        found[path] = feature
    assert sorted(found) == sorted(expected)
    for path, feature in found.items():
        row = expected[path]
        labels = [v.decode() for v in feature["top/label"].bytes_list.value]
        assert labels == [t["label"] for t in row["top"]]
        assert list(feature["top/score"].float_list.value) == pytest.approx(
            [t["score"] for t in row["top"]]
        )
        if row.get("error"):
            assert feature["error"].bytes_list.value[0].decode() == row["error"]
        else:
            assert feature["label"].bytes_list.value[0].decode() == row["label"]
            assert feature["score"].float_list.value[0] == pytest.approx(row["score"])


def test_a_source_with_no_images_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(bulk_inference.BulkInferenceError, match="no image files"):
        bulk_inference.list_units(str(tmp_path / "empty"), config(tmp_path).data)


@pytest.mark.slow
@pytest.mark.beam
def test_a_manifest_without_labels_is_classified_row_by_row(tmp_path, images):
    """Images to classify have no labels yet: the label column or key is optional here."""
    csv_manifest = images / "to-classify.csv"
    csv_manifest.write_text("path\n0.png\nnested/5.png\n")
    units = bulk_inference.list_units(str(csv_manifest), config(tmp_path).data)
    assert [unit.uri for unit in units] == [str(images / "0.png"), str(images / "nested/5.png")]

    jsonl_manifest = images / "to-classify.jsonl"
    jsonl_manifest.write_text('{"path": "1.png"}\n{"path": "2.png", "label": ""}\n')
    model_dir = export_dense_model(tmp_path / "model", 8, 3, CLASSES)
    output = tmp_path / "out"
    counts = bulk_inference.run_bulk_inference(
        model_dir, str(jsonl_manifest), str(output), config(tmp_path)
    )
    assert counts == {"images": 2, "errors": 0, "output": str(output)}
    rows = read_jsonl(output)
    assert sorted(row["path"] for row in rows) == [str(images / "1.png"), str(images / "2.png")]
    assert all(row["label"] in CLASSES for row in rows)
