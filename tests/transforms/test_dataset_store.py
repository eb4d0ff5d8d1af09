"""Publishing dataset versions to a bucket and the local cache, on a real moto S3 server: the
commit marker, kept versions, staging in the bucket, failures as one line, the cache layout.
Ingest, training and the pipeline through buckets: tests/tfx_pipeline/test_bucket_datasets.py."""

import json
import os
import uuid
from pathlib import Path

import pytest

from configs import schema
from tests.transforms.sources import conftest as source_fixtures
from transforms import dataset_info, dataset_store

s3_endpoint = source_fixtures.s3_endpoint  # a real moto S3 server, shared with the source tests
s3_client = source_fixtures.s3_client
BUCKET = "imgclf-store"
VERSION = "00112233aabbccdd"
SHARDS = {"train-00000-of-00001.tfrecord": b"train", "test-00000-of-00001.tfrecord": b"test"}


@pytest.fixture(autouse=True)
def cache_in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setenv(dataset_store.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def s3(s3_endpoint, s3_client, monkeypatch):
    """An fsspec client of s3://BUCKET; AWS_ENDPOINT_URL points imgclf's at the same server."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3_client.create_bucket(Bucket=BUCKET)
    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)


@pytest.fixture
def cfg() -> schema.DataConfig:
    """A fresh folder of the bucket as data.output_dir, with quick retries."""
    return schema.DataConfig(
        output_dir=f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", read_retries=1, retry_backoff_s=0.01
    )


def stage(cfg: schema.DataConfig, source: str = "images/") -> Path:
    """A staged version as ingest leaves it where it stages: shards, quarantine.jsonl and
    dataset.json."""
    staging = Path(dataset_store.staging_root(cfg)) / f".staging-{uuid.uuid4().hex[:6]}"
    staging.mkdir(parents=True)
    for name, data in SHARDS.items():
        (staging / name).write_bytes(data)
    (staging / dataset_info.QUARANTINE_JSONL).write_text("")
    (staging / dataset_info.DATASET_JSON).write_text(
        json.dumps({"version": VERSION, "source": source})
    )
    return staging


def keys(s3, url: str) -> list[str]:
    root = url.split("://", 1)[1]
    s3.invalidate_cache()
    return sorted(path[len(root) + 1 :] for path in s3.find(root))


def test_an_interrupted_publish_is_never_read_and_the_next_one_completes_it(s3, cfg, tmp_path):
    staging = stage(cfg)
    marker = staging / dataset_info.DATASET_JSON
    written = marker.read_text()
    marker.unlink()
    marker.symlink_to(tmp_path / "gone")  # the marker's upload fails, after every other file's

    with pytest.raises(dataset_store.DatasetStoreError) as raised:
        dataset_store.publish(str(staging), cfg, VERSION)

    url = f"{cfg.output_dir}/{VERSION}"
    assert str(raised.value).startswith(f"could not write {url} after 1 attempt (")
    assert keys(s3, cfg.output_dir) == sorted(
        f"{VERSION}/{name}" for name in [*SHARDS, dataset_info.QUARANTINE_JSONL]
    )
    with pytest.raises(dataset_info.DatasetNotFound, match=f"version {VERSION} not found"):
        dataset_store.resolve_version_dir(cfg.output_dir, VERSION, cfg)
    with pytest.raises(dataset_info.DatasetNotFound, match="upload was interrupted"):
        dataset_store.local_copy(url, cfg)

    marker.unlink()
    marker.write_text(written)
    assert dataset_store.publish(str(staging), cfg, VERSION) == url

    assert f"{VERSION}/{dataset_info.DATASET_JSON}" in keys(s3, cfg.output_dir)
    assert dataset_store.resolve_version_dir(cfg.output_dir, "latest", cfg) == url
    # The uploaded staging folder became the cached copy.
    assert not staging.exists()
    assert dataset_store.cached_copy(url) == dataset_store.cache_dir(url)


def test_a_complete_version_in_the_bucket_is_kept(s3, cfg, tmp_path):
    url = dataset_store.publish(str(stage(cfg)), cfg, VERSION)
    s3.rm_file(f"{cfg.output_dir}/{dataset_info.LATEST}")
    second = stage(cfg, source="elsewhere/")

    assert dataset_store.publish(str(second), cfg, VERSION) == url

    stored = json.loads(s3.cat_file(f"{url}/{dataset_info.DATASET_JSON}"))
    assert stored["source"] == "images/"
    assert dataset_store.resolve_version_dir(cfg.output_dir, "latest", cfg) == url
    assert second.exists()  # not uploaded, so not the cached copy: ingest deletes it


def test_a_version_staged_in_the_bucket_is_copied_within_it(s3, cfg, tmp_path):
    """Ingest's workers on a cluster stage in the bucket itself (gs:// in practice)."""
    staging = f"{cfg.output_dir}/.staging-cluster"
    s3.put(str(stage(cfg)) + "/", f"{staging}/", recursive=True)

    url = dataset_store.publish(staging, cfg, VERSION)

    expected = sorted([*SHARDS, dataset_info.QUARANTINE_JSONL, dataset_info.DATASET_JSON])
    assert [k for k in keys(s3, cfg.output_dir) if k.startswith(VERSION)] == [
        f"{VERSION}/{name}" for name in expected
    ]
    local = Path(dataset_store.local_copy(url, cfg))
    assert {p.name: p.read_bytes() for p in local.iterdir() if p.name in SHARDS} == SHARDS


def test_an_unreachable_bucket_is_one_line_naming_the_version(s3):
    cfg = schema.DataConfig(output_dir="s3://no-such-bucket/tfrecords", read_retries=0)
    with pytest.raises(dataset_store.DatasetStoreError) as raised:
        dataset_store.publish(str(stage(cfg)), cfg, VERSION)
    message = str(raised.value)
    assert message.startswith(f"could not write s3://no-such-bucket/tfrecords/{VERSION} after ")
    assert "\n" not in message and "check data.output_dir and the bucket's credentials" in message


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("s3://b/tfr/v1", ["s3", "b", "tfr", "v1"]),
        ("gcs://b/tfr/v1/", ["gs", "b", "tfr", "v1"]),  # an alias shares its protocol's copy
        ("gs://b/../x/./v1", ["gs", "b", "x", "v1"]),  # never outside the cache
    ],
)
def test_a_bucket_folder_has_one_place_in_the_cache(url, parts, tmp_path):
    assert dataset_store.cache_dir(url) == os.path.join(tmp_path, "cache", "datasets", *parts)


def test_a_local_version_is_its_own_copy_and_other_urls_hold_no_dataset(tmp_path):
    cfg = schema.DataConfig(output_dir=str(tmp_path))
    assert dataset_store.local_copy(str(tmp_path / VERSION), cfg) == str(tmp_path / VERSION)
    assert dataset_store.staging_root(cfg) == str(tmp_path)
    assert not dataset_store.holds("https://example.invalid/data", "dataset.json", cfg)
