"""Local class-folder trees: labels, pre-split trees, hidden files, symlinks and the errors."""

import os
from pathlib import Path

import pytest

from tests.transforms.sources import conftest
from transforms.sources import base, registry


def test_tree_gives_one_labelled_item_per_image_with_its_bytes(tmp_path, image_files, make_cfg):
    root = conftest.write_files(tmp_path / "data", image_files)
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    conftest.write_files(root, {".cache/x/1.png": b"junk"})

    read = conftest.read_all(make_cfg(root))

    assert read == {
        f"{root}/{relative}": (
            base.SourceItem(uri=f"{root}/{relative}", label=relative.split("/")[0]),
            content,
        )
        for relative, content in image_files.items()
    }


def test_units_are_sorted_and_stable(tmp_path, image_files, make_cfg):
    root = conftest.write_files(tmp_path, image_files)
    units = registry.list_units(make_cfg(root))
    assert [unit.uri for unit in units] == sorted(f"{root}/{name}" for name in image_files)
    assert registry.list_units(make_cfg(str(root) + "/")) == units


def test_relative_source_gives_absolute_uris(tmp_path, image_files, make_cfg, monkeypatch):
    conftest.write_files(tmp_path / "data", image_files)
    monkeypatch.chdir(tmp_path)
    units = registry.list_units(make_cfg("data"))
    assert units[0].uri == f"{tmp_path}/data/cat/1.png"


def test_presplit_tree_carries_splits(tmp_path, image_files, make_cfg):
    files = {
        f"{split}/{name}": content
        for name, content in image_files.items()
        for split in ("train", "test")
    }
    root = conftest.write_files(tmp_path, files)

    read = conftest.read_all(make_cfg(root))

    assert len(read) == len(files)
    for relative, content in files.items():
        split, label = relative.split("/")[:2]
        assert read[f"{root}/{relative}"] == (
            base.SourceItem(uri=f"{root}/{relative}", label=label, split=split),
            content,
        )


def test_files_beside_the_split_folders_are_ignored(tmp_path, make_cfg):
    files = {"README.md": b"x", "train/cat/1.png": b"a", "train/dog/1.png": b"b", "train/x": b""}
    root = conftest.write_files(tmp_path, files)
    assert [unit.uri for unit in registry.list_units(make_cfg(root))] == [
        f"{root}/train/cat/1.png",
        f"{root}/train/dog/1.png",
    ]


def test_a_class_named_like_a_split_without_subfolders_is_a_class(tmp_path, make_cfg):
    root = conftest.write_files(tmp_path, {"train/1.png": b"a", "bus/1.png": b"b"})
    assert {unit.label for unit in registry.list_units(make_cfg(root))} == {"train", "bus"}


def test_symlinks_are_followed_and_broken_ones_fail_alone(tmp_path, image_files, make_cfg):
    elsewhere = conftest.write_files(
        tmp_path / "elsewhere", {"wolf/1.png": image_files["cat/1.png"]}
    )
    root = conftest.write_files(tmp_path / "data", {"cat/1.png": image_files["fox/2.png"]})
    (root / "wolf").symlink_to(elsewhere / "wolf")
    (root / "cat" / "linked.png").symlink_to(elsewhere / "wolf" / "1.png")
    (root / "cat" / "broken.png").symlink_to(tmp_path / "missing.png")

    read = conftest.read_all(make_cfg(root))

    assert read[f"{root}/wolf/1.png"][1] == image_files["cat/1.png"]
    assert read[f"{root}/cat/linked.png"][1] == image_files["cat/1.png"]
    assert read[f"{root}/cat/broken.png"] == (
        base.SourceItem(uri=f"{root}/cat/broken.png", label="cat"),
        base.ReadFailure("broken symlink"),
    )
    assert read[f"{root}/cat/1.png"][1] == image_files["fox/2.png"]


def test_a_symlink_cycle_is_listed_once(tmp_path, make_cfg):
    root = conftest.write_files(tmp_path, {"a/1.png": b"a", "b/1.png": b"b"})
    (root / "a" / "loop").symlink_to(root / "a")
    assert [unit.uri for unit in registry.list_units(make_cfg(root))] == [
        f"{root}/a/1.png",
        f"{root}/b/1.png",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_fails_with_the_os_reason(tmp_path, make_cfg):
    root = conftest.write_files(tmp_path, {"a/1.png": b"a", "b/1.png": b"b"})
    (root / "a" / "1.png").chmod(0)
    read = conftest.read_all(make_cfg(root))
    assert read[f"{root}/a/1.png"][1] == base.ReadFailure("unreadable: Permission denied")


def test_a_file_that_vanished_after_listing_fails_with_the_os_reason(tmp_path, make_cfg):
    root = conftest.write_files(tmp_path, {"a/1.png": b"a", "b/1.png": b"b"})
    cfg = make_cfg(root)
    units = registry.list_units(cfg)
    (root / "a" / "1.png").unlink()
    assert list(registry.read_unit(units[0], cfg)) == [
        (
            base.SourceItem(uri=f"{root}/a/1.png", label="a"),
            base.ReadFailure("unreadable: No such file or directory"),
        )
    ]


def _tree(root: Path, files: dict[str, bytes], folders: tuple[str, ...] = ()) -> Path:
    root.mkdir()
    conftest.write_files(root, files)
    for folder in folders:
        (root / folder).mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    ("files", "folders", "message"),
    [
        ({"cat/1.png": b"a", "dog/1.png": b"b"}, ("fox",), "class folder fox is empty"),
        ({"cat/1.png": b"a", "dog/.hidden": b"b"}, (), "class folder dog is empty"),
        ({"cat/1.png": b"a"}, ("dog/inner",), "class folder dog is empty"),
        (
            {"train/cat/1.png": b"a", "train/dog/1.png": b"b"},
            ("test/dog",),
            "class folder test/dog is empty",
        ),
        ({"train/cat/1.png": b"a", "train/dog/1.png": b"b"}, ("val",), "split folder val"),
        (
            {"cat/1.png": b"a", "cat/2.png": b"b"},
            (),
            "has 1 class folder(s) ['cat']; a classifier needs at least 2",
        ),
        ({"1.png": b"a"}, (), "has 0 class folder(s)"),
        ({}, (), "has 0 class folder(s)"),
    ],
)
def test_unusable_trees_raise_a_clear_error(tmp_path, make_cfg, files, folders, message):
    root = _tree(tmp_path / "data", files, folders)
    with pytest.raises(base.SourceError) as raised:
        registry.list_units(make_cfg(root))
    assert message in str(raised.value)
    assert str(root) in str(raised.value)


def test_a_missing_source_names_what_was_expected(tmp_path, make_cfg):
    with pytest.raises(
        base.SourceError, match="does not exist .*expected <source>/<class>/<image>"
    ):
        registry.list_units(make_cfg(tmp_path / "nope"))


def test_a_plain_file_source_is_not_a_tree(tmp_path, make_cfg):
    (tmp_path / "image.png").write_bytes(b"a")
    with pytest.raises(base.SourceError, match="is a file, not a folder"):
        registry.list_units(make_cfg(tmp_path / "image.png"))


def test_an_empty_source_string_is_refused(make_cfg):
    with pytest.raises(base.SourceError, match="data.source is empty"):
        registry.list_units(make_cfg(""))


def test_a_linked_class_folder_inside_the_tree_is_its_own_class(tmp_path, make_cfg):
    root = conftest.write_files(tmp_path, {"cat/1.png": b"a", "dog/1.png": b"b"})
    (root / "kitty").symlink_to(root / "cat")
    (root / "cat" / "dogs").symlink_to(root / "dog")
    (root / "dog" / "cats").symlink_to(root / "cat")
    labels = {
        unit.uri.removeprefix(f"{root}/"): unit.label
        for unit in registry.list_units(make_cfg(root))
    }
    assert labels["kitty/1.png"] == "kitty"
    assert labels["cat/1.png"] == "cat"
    assert labels["cat/dogs/1.png"] == "cat"
