"""Local CSV and JSONL manifests: relative and absolute paths, splits, unlabeled rows, bad files."""

import json

import pytest

from tests.transforms.sources import conftest
from transforms.sources import base, registry


@pytest.fixture
def images(tmp_path, image_files):
    return conftest.write_files(tmp_path / "images", image_files)


def test_csv_paths_resolve_against_the_manifest_folder(tmp_path, images, image_files, make_cfg):
    absolute = images / "fox" / "1.jpg"
    manifest = tmp_path / "images" / "labels.csv"
    manifest.write_text(
        "path, label ,split\n"
        "cat/1.png,cat,train\n"
        "../images/dog/1.png,dog,\n"
        f'"{absolute}", fox ,test\n'
    )

    read = conftest.read_all(make_cfg(manifest))

    assert read == {
        f"{images}/cat/1.png": (
            base.SourceItem(f"{images}/cat/1.png", "cat", "train"),
            image_files["cat/1.png"],
        ),
        f"{images}/dog/1.png": (
            base.SourceItem(f"{images}/dog/1.png", "dog", None),
            image_files["dog/1.png"],
        ),
        str(absolute): (base.SourceItem(str(absolute), "fox", "test"), image_files["fox/1.jpg"]),
    }


def test_jsonl_takes_url_or_path_and_numeric_labels(tmp_path, images, image_files, make_cfg):
    manifest = tmp_path / "labels.jsonl"
    rows = [
        {"path": "images/cat/1.png", "label": 3},
        {},
        {"url": "images/dog/puppies/2.png", "label": "dog", "split": "val"},
    ]
    manifest.write_text("\n".join(json.dumps(row) if row else "  " for row in rows) + "\n")

    read = conftest.read_all(make_cfg(manifest))

    assert read == {
        f"{images}/cat/1.png": (
            base.SourceItem(f"{images}/cat/1.png", "3"),
            image_files["cat/1.png"],
        ),
        f"{images}/dog/puppies/2.png": (
            base.SourceItem(f"{images}/dog/puppies/2.png", "dog", "val"),
            image_files["dog/puppies/2.png"],
        ),
    }


def test_a_row_without_a_label_is_quarantined_not_fatal(tmp_path, images, make_cfg):
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nimages/cat/1.png,cat\nimages/dog/1.png,\n")
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"path": "images/cat/1.png", "label": null}\n')

    read = conftest.read_all(make_cfg(manifest))
    failures = {uri: data for uri, (_, data) in read.items() if isinstance(data, base.ReadFailure)}
    assert failures == {f"{manifest}#row=2": base.ReadFailure("no label in manifest row 2")}
    assert conftest.read_all(make_cfg(jsonl)) == {
        f"{jsonl}#row=1": (
            base.SourceItem(f"{jsonl}#row=1", None),
            base.ReadFailure("no label in manifest row 1"),
        )
    }


def test_a_missing_image_fails_alone(tmp_path, images, make_cfg):
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nimages/cat/1.png,cat\nimages/cat/nope.png,cat\n")
    read = conftest.read_all(make_cfg(manifest))
    assert read[f"{images}/cat/nope.png"][1] == base.ReadFailure(
        "unreadable: No such file or directory"
    )
    assert isinstance(read[f"{images}/cat/1.png"][1], bytes)


def test_rows_are_sorted_by_uri(tmp_path, images, make_cfg):
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nimages/fox/2.png,fox\nimages/cat/1.png,cat\n")
    assert [unit.label for unit in registry.list_units(make_cfg(manifest))] == ["cat", "fox"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.csv", "path,class\na.png,cat\n", "has no label column (received ['path', 'class']"),
        ("m.csv", "file,label\na.png,cat\n", "has neither a path nor a url column"),
        (
            "m.csv",
            "path,label,split\na.png,cat,training\n",
            "row 1: split 'training' is not one of train, val, test",
        ),
        ("m.csv", "path,label\n,cat\n", "row 1 has an empty path and url"),
        ("m.csv", "", "is empty"),
        ("m.csv", "path,label\n", "has no rows"),
        ("m.csv", b"path,label\n\xff\xfe.png,cat\n", "is not UTF-8 text"),
        (
            "m.jsonl",
            '{"path": "a.png", "label": "cat"}\n{"path": "b.png"\n',
            "row 2 is not valid JSON",
        ),
        ("m.jsonl", '["a.png", "cat"]\n', "row 1 must be a JSON object"),
        ("m.jsonl", '{"path": "a.png", "class": "cat"}\n', "row 1 has no label key"),
        (
            "m.jsonl",
            '{"file": "a.png", "label": "cat"}\n',
            "row 1 has neither a path nor a url key",
        ),
        (
            "m.jsonl",
            '{"path": "a.png", "label": "cat", "split": "dev"}\n',
            "split 'dev' is not one of",
        ),
        ("m.jsonl", "\n\n", "has no rows"),
        ("m.csv", "path,label\nnope://x/1.png,cat\n", "row 1: nope://x/1.png: protocol 'nope'"),
    ],
)
def test_malformed_manifests_raise_a_clear_error(tmp_path, make_cfg, name, content, message):
    manifest = tmp_path / name
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        manifest.write_text(content)
    with pytest.raises(base.SourceError) as raised:
        registry.list_units(make_cfg(manifest))
    assert message in str(raised.value)
    assert f"manifest {manifest}" in str(raised.value)


def test_a_missing_manifest_is_a_source_error(tmp_path, make_cfg):
    with pytest.raises(base.SourceError, match="manifest .*nope.csv does not exist"):
        registry.list_units(make_cfg(tmp_path / "nope.csv"))
