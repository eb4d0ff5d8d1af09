"""bench/synthetic_images.py's cache, which the ingest, input and training benchmarks share:
images are written once, reused while they are the ones asked for, rewritten when not."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def synthetic_images(bench_import):
    return bench_import("synthetic_images")


def written(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.glob("class_*/*")}


def test_images_are_reused_while_they_are_the_ones_asked_for(synthetic_images, tmp_path, capsys):
    out = tmp_path / "images"
    assert synthetic_images.ensure(out, 6, classes=2, size=(40, 30)) == out
    first = written(out)
    assert sorted(first) == [f"class_0{i % 2}/{i:07d}.jpg" for i in (0, 2, 4, 1, 3, 5)]

    synthetic_images.ensure(out, 6, classes=2, size=(40, 30))
    assert written(out) == first
    assert f"bench: reusing 6 synthetic images in {out}" in capsys.readouterr().out

    (out / "class_01" / "0000003.jpg").unlink()  # an interrupted copy, say
    synthetic_images.ensure(out, 6, classes=2, size=(40, 30))
    assert sorted(written(out)) == sorted(first)

    synthetic_images.ensure(out, 4, classes=2, size=(40, 30))  # fewer: the others go
    assert len(written(out)) == 4
    synthetic_images.ensure(out, 4, classes=2, size=(48, 30))
    assert synthetic_images.read_marker(out)["size"] == [48, 30]
