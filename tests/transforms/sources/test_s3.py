"""S3 sources against a real moto server on 127.0.0.1: trees, manifests and archives in a bucket."""

import itertools

import pytest

from tests.transforms.sources import conftest
from transforms.sources import base, registry

_buckets = itertools.count()


@pytest.fixture
def bucket(s3_client):
    """A fresh bucket per test (moto keeps buckets for the whole session)."""
    name = f"images-{next(_buckets)}"
    s3_client.create_bucket(Bucket=name)
    return name


def upload(s3_client, bucket: str, files: conftest.Files, prefix: str = "") -> None:
    for key, data in files.items():
        s3_client.put_object(Bucket=bucket, Key=f"{prefix}{key}", Body=data)


def test_class_tree_in_a_bucket(s3_client, s3_endpoint, bucket, image_files, make_cfg):
    upload(s3_client, bucket, image_files | {".hidden/x.png": b"x", "cat/.x.png": b"x"}, "data/")
    cfg = make_cfg(f"s3://{bucket}/data", storage_options={"endpoint_url": s3_endpoint})

    read = conftest.read_all(cfg)

    assert read == {
        f"s3://{bucket}/data/{name}": (
            base.SourceItem(f"s3://{bucket}/data/{name}", name.split("/")[0]),
            data,
        )
        for name, data in image_files.items()
    }


def test_presplit_tree_in_a_bucket_with_folder_markers(s3_client, s3_endpoint, bucket, make_cfg):
    upload(s3_client, bucket, {"train/": b"", "train/cat/1.png": b"a", "val/dog/1.png": b"b"})
    cfg = make_cfg(f"s3://{bucket}/", storage_options={"endpoint_url": s3_endpoint})
    assert registry.list_units(cfg) == [
        base.ReadUnit("file", f"s3://{bucket}/train/cat/1.png", "cat", "train"),
        base.ReadUnit("file", f"s3://{bucket}/val/dog/1.png", "dog", "val"),
    ]


def test_an_empty_class_marker_in_a_bucket_is_an_error(s3_client, s3_endpoint, bucket, make_cfg):
    upload(s3_client, bucket, {"cat/1.png": b"a", "dog/1.png": b"b", "fox/": b""})
    cfg = make_cfg(f"s3://{bucket}", storage_options={"endpoint_url": s3_endpoint})
    with pytest.raises(
        base.SourceError, match=f"class folder fox is empty in data.source s3://{bucket}"
    ):
        registry.list_units(cfg)


def test_a_missing_bucket_is_a_source_error(s3_endpoint, make_cfg):
    cfg = make_cfg("s3://no-such-bucket/data", storage_options={"endpoint_url": s3_endpoint})
    with pytest.raises(base.SourceError, match="s3://no-such-bucket/data does not exist"):
        registry.list_units(cfg)


def test_manifest_in_a_bucket_resolves_relative_keys(
    s3_client, s3_endpoint, bucket, image_files, make_cfg
):
    upload(s3_client, bucket, image_files, "images/")
    rows = ["path,label,split", "../images/cat/1.png,cat,train", "/images/dog/1.png,dog,"]
    manifest = "\n".join([*rows, "missing.png,fox,"])
    upload(s3_client, bucket, {"meta/labels.csv": manifest.encode()})
    cfg = make_cfg(f"s3://{bucket}/meta/labels.csv", storage_options={"endpoint_url": s3_endpoint})

    read = conftest.read_all(cfg)

    assert read[f"s3://{bucket}/images/cat/1.png"] == (
        base.SourceItem(f"s3://{bucket}/images/cat/1.png", "cat", "train"),
        image_files["cat/1.png"],
    )
    assert read[f"s3://{bucket}/images/dog/1.png"][1] == image_files["dog/1.png"]
    failure = read[f"s3://{bucket}/meta/missing.png"][1]
    # Not found is permanent: one attempt, no retries.
    assert failure.reason.startswith("remote read failed after 1 attempt: FileNotFoundError")


@pytest.mark.parametrize("suffix", ["zip", "tar.gz"])
def test_archive_in_a_bucket(s3_client, s3_endpoint, bucket, image_files, make_cfg, suffix):
    packed = {f"train/{name}": data for name, data in image_files.items() if "puppies" not in name}
    pack = conftest.zip_bytes if suffix == "zip" else conftest.tar_bytes
    upload(s3_client, bucket, {f"data.{suffix}": pack(packed)})
    cfg = make_cfg(f"s3://{bucket}/data.{suffix}", storage_options={"endpoint_url": s3_endpoint})

    read = conftest.read_all(cfg)

    assert read == {
        f"s3://{bucket}/data.{suffix}!{name}": (
            base.SourceItem(f"s3://{bucket}/data.{suffix}!{name}", name.split("/")[1], "train"),
            data,
        )
        for name, data in packed.items()
    }


def test_options_keyed_by_protocol_work_too(s3_client, s3_endpoint, bucket, make_cfg):
    upload(s3_client, bucket, {"cat/1.png": b"a", "dog/1.png": b"b"})
    options = {"s3": {"client_kwargs": {"endpoint_url": s3_endpoint}}, "http": {}}
    cfg = make_cfg(f"s3://{bucket}", storage_options=options)
    assert [data for _, data in conftest.read_all(cfg).values()] == [b"a", b"b"]
