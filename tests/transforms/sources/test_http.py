"""http(s) sources against a threaded HTTP server on 127.0.0.1: manifests, archives, retries."""

import itertools

import pytest

from tests.transforms.sources import conftest
from transforms.sources import archives, base, registry

_folders = itertools.count()


@pytest.fixture
def site(http_server):
    """(server, base URL path) of a fresh folder on the session's server."""
    folder = f"site{next(_folders)}"
    (http_server.root / folder).mkdir()
    return http_server, folder


def publish(server, folder: str, files: conftest.Files) -> None:
    conftest.write_files(server.root / folder, files)


def test_manifest_of_urls_with_a_404_that_fails_alone(site, image_files, make_cfg):
    server, folder = site
    publish(server, folder, image_files)
    base_url = f"{server.url}/{folder}"
    rows = [
        f"{base_url}/cat/1.png,cat,train",  # Absolute URL.
        "dog/1.png,dog,",  # Relative to the manifest's URL.
        f"/{folder}/fox/1.jpg,fox,test",  # Relative to the server root.
        "missing.png,fox,",
    ]
    publish(server, folder, {"labels.csv": ("url,label,split\n" + "\n".join(rows)).encode()})

    read = conftest.read_all(make_cfg(f"{base_url}/labels.csv"))

    assert read[f"{base_url}/cat/1.png"] == (
        base.SourceItem(f"{base_url}/cat/1.png", "cat", "train"),
        image_files["cat/1.png"],
    )
    assert read[f"{base_url}/dog/1.png"][1] == image_files["dog/1.png"]
    assert read[f"{base_url}/fox/1.jpg"][1] == image_files["fox/1.jpg"]
    missing = read[f"{base_url}/missing.png"]
    assert missing[0] == base.SourceItem(f"{base_url}/missing.png", "fox")
    assert missing[1].reason.startswith("remote read failed after 1 attempt: FileNotFoundError")
    assert server.hits[f"/{folder}/missing.png"] == 1  # A 404 is not retried.


def test_jsonl_manifest_over_http(site, image_files, make_cfg):
    server, folder = site
    publish(server, folder, image_files)
    publish(server, folder, {"m.jsonl": b'{"path": "cat/2.jpg", "label": "cat"}\n'})
    [(item, data)] = conftest.read_all(make_cfg(f"{server.url}/{folder}/m.jsonl")).values()
    assert item.uri == f"{server.url}/{folder}/cat/2.jpg"
    assert data == image_files["cat/2.jpg"]


@pytest.mark.parametrize("suffix", ["zip", "tar.gz", "tgz"])
@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no-ranges"])
def test_archive_over_http(site, image_files, make_cfg, suffix, ranges):
    server, folder = site
    members = {f"pets/{name}": data for name, data in image_files.items()}
    pack = conftest.zip_bytes if suffix == "zip" else conftest.tar_bytes
    publish(server, folder, {f"pets.{suffix}": pack(members)})
    url = f"{server.url}{'' if ranges else '/norange'}/{folder}/pets.{suffix}"

    read = conftest.read_all(make_cfg(url))

    assert read == {
        f"{url}!{name}": (base.SourceItem(f"{url}!{name}", name.split("/")[-2]), data)
        for name, data in members.items()
    }


def test_a_flaky_server_is_retried_until_it_answers(site, image_files, make_cfg):
    server, folder = site
    publish(server, folder, image_files)
    publish(
        server, folder, {"m.csv": b"url,label\n/flaky/" + folder.encode() + b"/cat/1.png,cat\n"}
    )
    path = f"/flaky/{folder}/cat/1.png"
    server.flaky[path] = 2

    [(item, data)] = conftest.read_all(
        make_cfg(f"{server.url}/{folder}/m.csv", read_retries=2)
    ).values()

    assert data == image_files["cat/1.png"]
    assert server.hits[path] == 3


def test_a_server_that_stays_down_gives_a_failure_after_every_attempt(site, make_cfg):
    server, folder = site
    publish(server, folder, {"cat/1.png": b"a"})
    path = f"/flaky/{folder}/cat/1.png"
    server.flaky[path] = 100
    cfg = make_cfg(f"{server.url}/{folder}/m.csv", read_retries=2)

    [(item, failure)] = registry.read_unit(base.ReadUnit("file", f"{server.url}{path}", "cat"), cfg)

    assert failure.reason.startswith(
        "remote read failed after 3 attempts: ClientResponseError: 503"
    )
    assert server.hits[path] == 3


def test_a_flaky_archive_is_retried(site, image_files, make_cfg):
    server, folder = site
    publish(server, folder, {"pets.tar.gz": conftest.tar_bytes(image_files)})
    path = f"/flaky/{folder}/pets.tar.gz"
    cfg = make_cfg(f"{server.url}{path}", read_retries=1)
    [unit] = registry.list_units(cfg)
    # fsspec's open tries HEAD then GET before it reports a FileNotFoundError from the 503.
    server.flaky[path] = 1
    server.hits.clear()

    read = {item.uri.split("!")[1]: data for item, data in registry.read_unit(unit, cfg)}

    assert read == image_files
    assert server.hits[path] == 2


@pytest.mark.parametrize("suffix", ["tar.gz", "zip"])
def test_an_archive_cut_off_mid_stream_goes_on_after_the_members_read(
    site, make_image, make_cfg, monkeypatch, caplog, suffix
):
    server, folder = site
    members = {f"cat/{i}.png": make_image(i, size=(64, 64)) for i in range(8)}
    packed = conftest.zip_bytes(members) if suffix == "zip" else conftest.tar_bytes(members)
    publish(server, folder, {f"pets.{suffix}": packed})
    path = f"/flaky/{folder}/pets.{suffix}"
    cfg = make_cfg(f"{server.url}{path}", read_retries=1)
    [unit] = registry.list_units(cfg)
    # Zips are read in range requests: small ones, so that one fails half-way through the file.
    monkeypatch.setattr(archives, "BLOCK_BYTES", 16 << 10)
    size = len(packed)
    server.cut[path] = (0, 1) if suffix == "tar.gz" else (size // 4, size * 3 // 4)

    entries = list(registry.read_unit(unit, cfg))

    assert path not in server.cut
    assert [item.uri.split("!")[1] for item, _ in entries] == list(members)
    assert [data for _, data in entries] == list(members.values())
    [warning] = [
        record.getMessage() for record in caplog.records if "retrying" in record.getMessage()
    ]
    assert " failed after 0 members" not in warning


def test_a_missing_archive_url_is_a_source_error(site, make_cfg):
    server, folder = site
    with pytest.raises(base.SourceError, match="archive .*nope.zip does not exist"):
        registry.list_units(make_cfg(f"{server.url}/{folder}/nope.zip"))


def test_a_missing_manifest_url_is_a_source_error(site, make_cfg):
    server, folder = site
    with pytest.raises(base.SourceError, match="manifest .*nope.csv does not exist"):
        registry.list_units(make_cfg(f"{server.url}/{folder}/nope.csv"))


def test_a_url_to_something_else_is_a_source_error(make_cfg):
    with pytest.raises(base.SourceError, match="neither a manifest nor an archive"):
        registry.list_units(make_cfg("http://127.0.0.1:9/images/"))
