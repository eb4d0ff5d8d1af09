"""gs:// sources against a real GCS emulator on 127.0.0.1 (gcp-storage-emulator): the same
filesystem layer as S3, read through gcsfs, and a whole ingest from a bucket."""

import os
import socket
from collections.abc import Iterator

import pytest

from tests.transforms import shards
from tests.transforms.sources import conftest
from transforms.sources import base

# gcsfs's default "extended" filesystem first asks Google's gRPC control plane for the bucket
# layout, which no emulator serves; the plain JSON-API filesystem is what reads the objects.
# Set before any test imports gcsfs (this module is imported at collection).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
BUCKET = "images"


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def gcs(gcs_endpoint):
    import gcsfs

    return gcsfs.GCSFileSystem(token="anon", endpoint_url=gcs_endpoint)


def options(endpoint: str) -> dict:
    return {"endpoint_url": endpoint, "token": "anon"}


def upload(gcs, files: conftest.Files, prefix: str) -> None:
    for key, data in files.items():
        gcs.pipe(f"{BUCKET}/{prefix}{key}", data)


def test_class_tree_in_a_bucket(gcs, gcs_endpoint, image_files, make_cfg):
    upload(gcs, image_files | {"cat/.hidden.png": b"x"}, "tree/")
    cfg = make_cfg(f"gs://{BUCKET}/tree", storage_options=options(gcs_endpoint))

    read = conftest.read_all(cfg)

    assert read == {
        f"gs://{BUCKET}/tree/{name}": (
            base.SourceItem(f"gs://{BUCKET}/tree/{name}", name.split("/")[0]),
            data,
        )
        for name, data in image_files.items()
    }


def test_manifest_in_a_bucket_resolves_relative_keys(gcs, gcs_endpoint, image_files, make_cfg):
    upload(gcs, image_files, "pictures/")
    manifest = "path,label,split\n../pictures/cat/1.png,cat,train\n/pictures/dog/1.png,dog,\n"
    upload(gcs, {"labels.csv": manifest.encode()}, "meta/")
    cfg = make_cfg(f"gs://{BUCKET}/meta/labels.csv", storage_options=options(gcs_endpoint))

    read = conftest.read_all(cfg)

    assert read == {
        f"gs://{BUCKET}/pictures/cat/1.png": (
            base.SourceItem(f"gs://{BUCKET}/pictures/cat/1.png", "cat", "train"),
            image_files["cat/1.png"],
        ),
        f"gs://{BUCKET}/pictures/dog/1.png": (
            base.SourceItem(f"gs://{BUCKET}/pictures/dog/1.png", "dog", None),
            image_files["dog/1.png"],
        ),
    }


@pytest.mark.beam
def test_ingest_of_a_bucket_balances_and_quarantines_a_bad_object(
    gcs, gcs_endpoint, tmp_path, make_image
):
    images = {
        f"{name}/{i}.png": make_image(70 + 10 * c + i)
        for c, name in enumerate("ab")
        for i in range(4)
    }
    upload(gcs, images | {"b/notes.png": b"not an image"}, "ingest/")

    result = shards.run(
        f"gs://{BUCKET}/ingest",
        tmp_path / "out",
        storage_options=options(gcs_endpoint),
        split={"train": 0.5, "val": 0.25, "test": 0.25},
    )

    shards.assert_report(result, seen=9, written=8, duplicates=0, quarantined=1)
    assert list(shards.quarantine(result.path)) == ["b/notes.png"]
