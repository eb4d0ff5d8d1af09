"""transforms.beam.steps: the ingest workers' steps, which write shards without TensorFlow."""

import hashlib
import subprocess
import sys

import pytest
import tensorflow as tf

from configs import schema
from tests.conftest import encode, noise_image
from transforms import features, images
from transforms.beam import steps

EXAMPLE = {
    "image": b"\x89PNG not really",
    "image_format": "png",
    "height": 3,
    "width": 5,
    "label": 2,
    "label_text": "cat",
    "sha256": "ab" * 32,
    "source": "cat/1.png",
}


def test_an_example_serialises_to_the_bytes_of_tf_train_example():
    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    values = {
        features.IMAGE: EXAMPLE["image"],
        features.FORMAT: b"png",
        features.HEIGHT: 3,
        features.WIDTH: 5,
        features.LABEL: 2,
        features.LABEL_TEXT: b"cat",
        features.SHA256: EXAMPLE["sha256"].encode(),
        features.SOURCE: b"cat/1.png",
    }
    expected = tf.train.Example(
        features=tf.train.Features(feature={k: feature(v) for k, v in values.items()})
    )
    # Identical bytes: dataset versions (hashes of the shards) do not change with the writer.
    assert features.serialize_example(**EXAMPLE) == expected.SerializeToString(deterministic=True)


def test_the_worker_steps_load_no_tensorflow():
    code = "import sys\nimport transforms.beam.steps\nprint('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr


def prepared_record(tmp_path, name: str, seed: int, staged: bool) -> tuple:
    """(sha256, label, source, stored) of a PNG, read again from its file or staged by hash."""
    data = encode(noise_image(seed), "PNG")
    sha256 = hashlib.sha256(data).hexdigest()
    prepared = images.Preparer(schema.DataConfig(source=str(tmp_path))).prepare(data)
    path = tmp_path / name
    path.write_bytes(data)
    if staged:
        steps.stage_bytes(str(tmp_path / "staging"), sha256, data)
    locator = "" if staged else str(path)
    return sha256, "cat", name, steps.describe(locator, prepared)


def test_a_shard_written_without_tensorflow_reads_back_in_tf_data(tmp_path):
    records = [
        prepared_record(tmp_path, "a.png", 1, staged=False),
        prepared_record(tmp_path, "b.png", 2, staged=True),
    ]
    cfg = schema.DataConfig(source=str(tmp_path), examples_per_shard=10)
    ranked = [(sha256, 0, label, name, stored) for sha256, label, name, stored in records]
    summary = steps.write_shard(
        (("train", 0, 2), ranked), str(tmp_path), str(tmp_path / "staging"), cfg
    )

    assert summary["count"] == 2 and summary["per_class"] == {"cat": 2}
    shard = tmp_path / summary["file"]
    parsed = [features.parse(s) for s in tf.data.TFRecordDataset(str(shard))]
    by_sha = {sha256: name for sha256, _, name, _ in records}
    for example in parsed:
        sha256 = example[features.SHA256].numpy().decode()
        assert example[features.SOURCE].numpy().decode() == by_sha[sha256]
        assert (tmp_path / by_sha[sha256]).read_bytes() == example[features.IMAGE].numpy()
        assert hashlib.sha256(example[features.IMAGE].numpy()).hexdigest() == sha256
    assert sorted(e[features.SHA256].numpy().decode() for e in parsed) == sorted(by_sha)


def test_a_source_file_changed_during_ingest_stops_it(tmp_path):
    sha256, _, name, stored = prepared_record(tmp_path, "a.png", 1, staged=False)
    (tmp_path / name).write_bytes(encode(noise_image(9), "PNG"))

    with pytest.raises(steps.ChangedDuringIngest, match="a.png changed while it was being"):
        steps.read_stored(str(tmp_path / "staging"), sha256, stored)


def test_decode_threads_emit_what_one_thread_emits(tmp_path):
    from transforms.sources import registry

    for index in range(12):
        name = f"{'cat' if index % 2 else 'dog'}/{index}.{'png' if index % 3 else 'jpg'}"
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        image_format = "PNG" if index % 3 else "JPEG"
        (tmp_path / "tree" / name).write_bytes(encode(noise_image(index), image_format))
    (tmp_path / "tree" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = schema.DataConfig(source=str(tmp_path / "tree"))
    staging = str(tmp_path / "staging")
    steps.write_unit_chunks(registry.list_units(cfg), staging)

    def outputs(threads: int) -> list:
        step = steps.ReadAndPrepare(cfg, staging, 13, decode_threads=threads)
        step.setup()
        try:
            return [(o.tag, o.value) if hasattr(o, "tag") else o for o in step.process(0)]
        finally:
            step.teardown()

    one = outputs(1)
    assert outputs(2) == one
    assert sum(1 for o in one if o[0] == steps.ReadAndPrepare.QUARANTINE) == 1
    assert sum(1 for o in one if len(o[0]) == 64) == 12  # (sha256, record) per image
