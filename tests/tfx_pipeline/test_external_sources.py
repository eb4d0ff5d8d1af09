"""An outside source's fingerprint (ExampleGen's and BulkInferrer's cache key): what the source
holds, local or in a real S3 server."""

import os

from configs import loader
from tests.transforms.sources import conftest as source_fixtures
from tfx_pipeline import external_sources

s3_endpoint = source_fixtures.s3_endpoint  # a real moto S3 server on 127.0.0.1


def test_a_local_tree_changes_its_fingerprint_with_its_files(tmp_path):
    data = loader.load(None, []).data
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"one")
    first = external_sources.source_fingerprint(str(tmp_path), data)
    assert external_sources.source_fingerprint(str(tmp_path), data) == first

    (tmp_path / "cat" / "a.png").write_bytes(b"two")  # same size, new mtime
    os.utime(tmp_path / "cat" / "a.png", ns=(1, 10**18))
    rewritten = external_sources.source_fingerprint(str(tmp_path), data)
    (tmp_path / "cat" / "b.png").write_bytes(b"new")
    added = external_sources.source_fingerprint(str(tmp_path), data)
    assert len({first, rewritten, added}) == 3


def test_a_bucket_is_fingerprinted_by_its_listing(s3_endpoint, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="fingerprints")
    s3.put_object(Bucket="fingerprints", Key="set/cat/a.png", Body=b"one")
    data = loader.load(None, [f"data.storage_options.endpoint_url={s3_endpoint}"]).data
    source = "s3://fingerprints/set"

    first = external_sources.source_fingerprint(source, data)
    assert external_sources.source_fingerprint(source, data) == first
    s3.put_object(Bucket="fingerprints", Key="set/cat/a.png", Body=b"two")  # same size, new ETag
    rewritten = external_sources.source_fingerprint(source, data)
    s3.put_object(Bucket="fingerprints", Key="set/dog/b.png", Body=b"new")
    added = external_sources.source_fingerprint(source, data)
    assert len({first, rewritten, added}) == 3
    # Another bucket's objects don't count.
    s3.put_object(Bucket="fingerprints", Key="elsewhere/c.png", Body=b"x")
    assert external_sources.source_fingerprint(source, data) == added

    s3.put_object(Bucket="fingerprints", Key="set.csv", Body=b"path,label\n")
    manifest = external_sources.source_fingerprint("s3://fingerprints/set.csv", data)
    s3.put_object(Bucket="fingerprints", Key="set.csv", Body=b"path,label\na.png,cat\n")
    assert external_sources.source_fingerprint("s3://fingerprints/set.csv", data) != manifest


def test_an_unlistable_source_is_known_by_its_uri(tmp_path):
    data = loader.load(None, []).data
    missing = str(tmp_path / "nowhere")
    fingerprint = external_sources.source_fingerprint
    assert fingerprint(missing, data) == fingerprint(missing, data)
    assert fingerprint("tfds:mnist", data) != fingerprint("tfds:fashion_mnist", data)
