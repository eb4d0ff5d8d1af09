"""Statistics windows and the request log written to s3:// (a real moto S3 server on 127.0.0.1)
and read back; TensorFlow 2.21's file system has no s3://, so monitoring writes through fsspec."""

import json

import numpy as np
import pytest
import tensorflow as tf

from configs import schema
from monitoring import recorder, windows
from tests.transforms.sources import conftest as source_fixtures

s3_endpoint = source_fixtures.s3_endpoint
s3_client = source_fixtures.s3_client
BUCKET = "monitoring"
CLASSES = np.array([[b"cat", b"dog"]] * 2, dtype=object)
SCORES = np.array([[0.9, 0.1], [0.3, 0.7]], np.float32)


@pytest.fixture
def bucket(s3_endpoint, s3_client, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3_client.create_bucket(Bucket=BUCKET)
    yield s3_client
    listed = s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    for item in listed:
        s3_client.delete_object(Bucket=BUCKET, Key=item["Key"])
    s3_client.delete_bucket(Bucket=BUCKET)


def keys(s3_client, prefix: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in listed)


def everything_into(root: str) -> schema.MonitoringConfig:
    """Every image measured, and every request logged with its images, under `root`."""
    log = {"enabled": True, "dir": f"{root}/log", "sample_rate": 1.0, "log_images": True}
    return schema.MonitoringConfig(dir=f"{root}/stats", input_sample_rate=1.0, request_log=log)


def png(value: int) -> bytes:
    return tf.io.encode_png(tf.fill([4, 4, 3], tf.constant(value, tf.uint8))).numpy()


def test_windows_and_the_request_log_land_in_the_bucket_and_read_back(bucket):
    images = np.array([png(10), png(200)], dtype=object)
    monitor = recorder.Recorder(everything_into(f"s3://{BUCKET}"))
    monitor.start()
    monitor.record("digits", 2, SCORES, CLASSES, images)
    monitor.stop()

    (window_key,) = keys(bucket, "stats/")
    assert window_key.startswith("stats/digits/2/windows/") and window_key.endswith(".json")
    (window,) = windows.read_windows(f"s3://{BUCKET}/stats", "digits", since=0)
    assert (window.predictions, window.inputs, window.classes) == (2, 2, {"cat": 1, "dog": 1})
    assert window.to_json() == monitor.summary("digits", 2, 0)["stats"]  # what the server held

    (lines_key,) = keys(bucket, "log/digits/2/predictions/")
    body = bucket.get_object(Bucket=BUCKET, Key=lines_key)["Body"].read().decode()
    entries = [json.loads(line) for line in body.splitlines()]
    assert [entry["top"][0]["label"] for entry in entries] == ["cat", "dog"]
    for entry, image in zip(entries, images, strict=True):
        key = f"log/digits/2/{entry['image']}"
        assert key.startswith(f"log/digits/2/images/{entry['top'][0]['label']}/")
        assert bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read() == image


def test_reading_a_model_the_bucket_does_not_hold_names_what_it_holds(bucket):
    monitor = recorder.Recorder(schema.MonitoringConfig(dir=f"s3://{BUCKET}/stats"))
    monitor.start()
    monitor.record("digits", 1, SCORES, CLASSES)
    monitor.stop()
    with pytest.raises(
        windows.MonitoringError, match=r"no statistics of model 'cats'.*\['digits'\]"
    ):
        windows.read_windows(f"s3://{BUCKET}/stats", "cats", since=0)


def test_an_unwritable_bucket_costs_the_files_never_the_counts(s3_endpoint, monkeypatch, caplog):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    missing = "s3://no-such-bucket"
    monitor = recorder.Recorder(everything_into(missing))
    monitor.start()
    monitor.record("digits", 1, SCORES, CLASSES, np.array([png(1), png(2)], dtype=object))
    monitor.record("cats", 1, SCORES, CLASSES)
    monitor.stop()

    assert monitor.summary("digits", 1, 0)["stats"]["predictions"] == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    # Each model's window is tried on its own; the log's lines are dropped, not kept growing.
    unwritten = [e for e in errors if e.startswith(f"monitoring: could not write {missing}/stats/")]
    assert sorted(e.split("/stats/")[1].split("/")[0] for e in unwritten) == ["cats", "digits"]
    assert any(e.startswith("monitoring: dropped 2 logged predictions") for e in errors)
    assert not [r for r in caplog.records if r.exc_info]  # one line each, no traceback
