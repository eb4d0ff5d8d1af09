"""Local zip and tar archives: member labels and splits, skipped members, corrupt archives."""

import io
import tarfile

import pytest

from tests.transforms.sources import conftest
from transforms.sources import archives, base, registry

PACKERS = {
    "zip": conftest.zip_bytes,
    "tar.gz": conftest.tar_bytes,
    "tgz": conftest.tar_bytes,
    "tar": lambda files: conftest.tar_bytes(files, "w"),
    "tar.xz": lambda files: conftest.tar_bytes(files, "w:xz"),
}


@pytest.mark.parametrize("suffix", PACKERS)
def test_members_stream_with_labels_from_their_folder(tmp_path, image_files, make_cfg, suffix):
    members = {f"flowers/{name}": data for name, data in image_files.items()}
    members |= {"flowers/.DS_Store": b"x", "__MACOSX/flowers/._cat": b"x", "README.txt": b"hi"}
    archive = tmp_path / f"flowers.{suffix}"
    archive.write_bytes(PACKERS[suffix](members))

    cfg = make_cfg(archive)
    assert registry.list_units(cfg) == [base.ReadUnit(kind="archive", uri=str(archive))]
    read = conftest.read_all(cfg)

    expected = {
        f"{archive}!flowers/{name}": (
            base.SourceItem(f"{archive}!flowers/{name}", name.split("/")[-2]),
            data,
        )
        for name, data in image_files.items()
    }
    expected[f"{archive}!README.txt"] = (
        base.SourceItem(f"{archive}!README.txt", None),
        base.ReadFailure("archive member is not inside a class folder"),
    )
    assert read == expected


@pytest.mark.parametrize("suffix", ["zip", "tar.gz"])
def test_presplit_archive_members_carry_splits(tmp_path, make_cfg, suffix):
    members = {"train/cat/1.png": b"a", "./val/dog/1.png": b"b", "test/train/1.png": b"c"}
    archive = tmp_path / f"data.{suffix}"
    archive.write_bytes(PACKERS[suffix](members))
    read = conftest.read_all(make_cfg(archive))
    assert {(item.uri.split("!")[1], item.label, item.split) for item, _ in read.values()} == {
        ("train/cat/1.png", "cat", "train"),
        ("val/dog/1.png", "dog", "val"),
        ("test/train/1.png", "train", "test"),
    }


def test_tar_links_fail_alone(tmp_path, make_cfg):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cat/1.png")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
        link = tarfile.TarInfo("cat/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "1.png"
        tar.addfile(link)
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(buffer.getvalue())
    read = conftest.read_all(make_cfg(archive))
    assert read[f"{archive}!cat/link.png"][1] == base.ReadFailure(
        "archive member is a link, not a file"
    )
    assert read[f"{archive}!cat/1.png"][1] == b"a"


def test_a_truncated_tar_keeps_the_members_before_the_damage(tmp_path, make_cfg, make_image):
    members = {f"cat/{i}.png": make_image(i, size=(64, 64)) for i in range(6)}
    data = conftest.tar_bytes(members)
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: len(data) * 2 // 3])

    entries = list(registry.read_unit(registry.list_units(make_cfg(archive))[0], make_cfg(archive)))

    *good, (last_item, failure) = entries
    assert good and all(isinstance(data, bytes) for _, data in good)
    assert [members[item.uri.split("!")[1]] for item, _ in good] == [data for _, data in good]
    assert last_item == base.SourceItem(str(archive), None)
    assert failure.reason.startswith("corrupt archive: ")


@pytest.mark.parametrize("suffix", ["zip", "tar.gz"])
def test_a_file_that_is_no_archive_is_one_failure(tmp_path, make_cfg, suffix):
    archive = tmp_path / f"fake.{suffix}"
    archive.write_bytes(b"not an archive at all" * 10)
    [(item, failure)] = conftest.read_all(make_cfg(archive)).values()
    assert item == base.SourceItem(str(archive), None)
    assert failure.reason.startswith("corrupt archive: ")


def test_a_corrupt_zip_member_fails_alone(tmp_path, make_cfg):
    data = bytearray(conftest.zip_bytes({"cat/1.png": b"a" * 1000, "dog/1.png": b"b" * 1000}))
    first = data.index(b"cat/1.png") + len("cat/1.png")
    data[first + 2 : first + 6] = b"\x00\x00\x00\x00"  # Inside the first member's deflated data.
    archive = tmp_path / "bad.zip"
    archive.write_bytes(bytes(data))
    read = conftest.read_all(make_cfg(archive))
    assert read[f"{archive}!dog/1.png"][1] == b"b" * 1000
    assert read[f"{archive}!cat/1.png"][1].reason.startswith("unreadable archive member: ")


def test_a_missing_archive_is_a_source_error(tmp_path, make_cfg):
    with pytest.raises(
        base.SourceError, match=r"archive .*nope.zip does not exist \(expected a .zip"
    ):
        registry.list_units(make_cfg(tmp_path / "nope.zip"))


@pytest.mark.parametrize(
    ("uri", "suffix"),
    [
        ("a/b.ZIP", ".zip"),
        ("https://h/x.tar.gz?token=1", ".tar.gz"),
        ("s3://b/x.tgz", ".tgz"),
        ("x.gz", ""),
        ("x.tar.bz2", ".tar.bz2"),
    ],
)
def test_archive_suffixes(uri, suffix):
    assert archives.suffix_of(uri) == suffix
