"""fsspec plumbing: source kinds, path resolution, per-protocol options, retries."""

import aiohttp
import multidict
import pytest
import yarl

from transforms.sources import base, registry, storage


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("data/digits", "folders"),
        ("s3://bucket/prefix/", "folders"),
        ("gs://bucket/prefix", "folders"),
        ("labels.csv", "manifest"),
        ("https://host/x/labels.JSONL?sig=1", "manifest"),
        ("s3://bucket/data.tar.gz", "archive"),
        ("http://host/data.zip", "archive"),
        ("tfds:mnist", "tfds"),
    ],
)
def test_kind_of(source, kind):
    assert registry.kind_of(source) == kind
    assert kind in registry.SOURCES


def test_every_unit_kind_has_a_reader():
    assert set(registry.READERS) == {"file", "unlabeled", "archive", "tfds"}


def test_an_unknown_unit_kind_is_an_error(make_cfg):
    with pytest.raises(base.SourceError, match="read unit kind 'ftp' is unknown"):
        list(registry.read_unit(base.ReadUnit(kind="ftp", uri="x"), make_cfg("x")))


@pytest.mark.parametrize(
    ("reference", "manifest", "resolved"),
    [
        ("a/1.png", "/data/m.csv", "/data/a/1.png"),
        ("../b/1.png", "/data/sub/m.csv", "/data/b/1.png"),
        ("/abs/1.png", "/data/m.csv", "/abs/1.png"),
        ("a/1.png", "s3://bucket/meta/m.csv", "s3://bucket/meta/a/1.png"),
        ("../a/1.png", "s3://bucket/meta/m.csv", "s3://bucket/a/1.png"),
        ("/a/1.png", "gs://bucket/meta/m.csv", "gs://bucket/a/1.png"),
        ("a/1.png", "https://host/x/m.csv?sig=2", "https://host/x/a/1.png"),
        ("/a/1.png", "https://host/x/m.csv", "https://host/a/1.png"),
        ("s3://other/1.png", "https://host/x/m.csv", "s3://other/1.png"),
        ("https://cdn/1.png", "/data/m.csv", "https://cdn/1.png"),
    ],
)
def test_resolve(reference, manifest, resolved):
    assert storage.resolve(reference, manifest) == resolved


def test_flat_options_go_to_the_source_protocol_only(make_cfg):
    cfg = make_cfg("s3://bucket/x", storage_options={"endpoint_url": "http://127.0.0.1:9"})
    s3 = storage.storage_options("s3", cfg)
    assert s3["endpoint_url"] == "http://127.0.0.1:9"
    assert s3["config_kwargs"] == {"connect_timeout": 10.0, "read_timeout": 10.0}
    assert "endpoint_url" not in storage.storage_options("https", cfg)
    assert storage.storage_options("file", cfg) == {}


def test_options_keyed_by_protocol_merge_with_the_timeouts(make_cfg):
    options = {"s3": {"config_kwargs": {"read_timeout": 1}}, "https": {"headers": {"A": "b"}}}
    cfg = make_cfg("labels.csv", storage_options=options)
    assert storage.storage_options("s3a", cfg)["config_kwargs"] == {
        "connect_timeout": 10.0,
        "read_timeout": 1,
    }
    http = storage.storage_options("http", cfg)
    assert http["headers"] == {"A": "b"}
    assert http["client_kwargs"]["timeout"] == aiohttp.ClientTimeout(
        sock_connect=10.0, sock_read=10.0
    )
    assert storage.storage_options("gs", cfg) == {"requests_timeout": 10.0}


def test_retries_back_off_and_give_up(make_cfg, monkeypatch):
    sleeps = []
    monkeypatch.setattr(storage.time, "sleep", sleeps.append)
    calls = []

    def fail():
        calls.append(1)
        raise ConnectionResetError(104, "Connection reset by peer")

    cfg = make_cfg("s3://b/x", read_retries=3, retry_backoff_s=0.5)
    with pytest.raises(storage.RetriesExhausted) as raised:
        storage.call_with_retries(fail, "s3://b/x", cfg)
    assert len(calls) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert str(raised.value) == (
        "remote read failed after 4 attempts: "
        "ConnectionResetError: [Errno 104] Connection reset by peer"
    )


def test_not_found_is_not_retried_unless_fsspec_hid_a_server_error(make_cfg, monkeypatch):
    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)
    cfg = make_cfg("https://h/x.zip", read_retries=2)
    calls = []

    def not_found():
        calls.append(1)
        raise FileNotFoundError("https://h/x.zip")

    with pytest.raises(storage.RetriesExhausted):
        storage.call_with_retries(not_found, "https://h/x.zip", cfg)
    assert len(calls) == 1

    def hidden_503():
        calls.append(1)
        url = yarl.URL("https://h/x.zip")
        request = aiohttp.RequestInfo(
            url, "GET", multidict.CIMultiDictProxy(multidict.CIMultiDict()), url
        )
        cause = aiohttp.ClientResponseError(request, (), status=503, message="Service Unavailable")
        raise FileNotFoundError("https://h/x.zip") from cause

    with pytest.raises(
        storage.RetriesExhausted, match="after 3 attempts: ClientResponseError: 503"
    ):
        storage.call_with_retries(hidden_503, "https://h/x.zip", cfg)
    assert len(calls) == 4


def test_local_errors_are_not_retried(make_cfg):
    calls = []

    def fail():
        calls.append(1)
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        storage.call_with_retries(fail, "/data/x.png", make_cfg("/data"))
    assert calls == [1]


def test_an_unknown_protocol_is_a_source_error(make_cfg):
    with pytest.raises(base.SourceError, match="protocol 'nope' cannot be read"):
        registry.list_units(make_cfg("nope://bucket/data"))
