"""`imgclf data stats`, `imgclf data diff` and `imgclf ingest`, run as users run them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, StandardOptions
from PIL import Image

import cli
from tests.transforms import shards
from transforms import dataset_info
from transforms.beam import ingest

pytestmark = pytest.mark.beam

REPO = Path(__file__).resolve().parents[2]


def imgclf(*args: str) -> subprocess.CompletedProcess:
    """`python -m cli ARGS` in a fresh interpreter."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def versions(tmp_path_factory, make_image, make_tree):
    """Two versions in one output folder: v2 adds cat/3, drops dog/2 and adds a bird class."""
    root = tmp_path_factory.mktemp("versions")
    old = {
        "cat": {f"{i}.png": make_image(i) for i in range(3)},
        "dog": {f"{i}.png": make_image(10 + i) for i in range(3)},
    }
    new = {
        "cat": old["cat"] | {"3.png": make_image(3)},
        "dog": {name: data for name, data in old["dog"].items() if name != "2.png"},
        "bird": {f"{i}.png": make_image(20 + i) for i in range(2)},
    }
    v1 = shards.run(make_tree(root / "old", old), root / "out")
    card = {"description": "Pets and birds.", "license": "CC-BY-4.0"}
    v2 = shards.run(make_tree(root / "new", new), root / "out", card=card)
    return root, v1, v2


def table_rows(output: str, names) -> dict[str, list[int]]:
    """{class: numbers} from the lines of a per-class table."""
    rows = {}
    for line in output.splitlines():
        match = re.fullmatch(r"  (\S+)\s+([-+\d\s]+)", line)
        if match and match[1] in names:
            rows[match[1]] = [int(n) for n in match[2].split()]
    return rows


@pytest.mark.slow
def test_data_stats_prints_the_class_table_and_writes_a_png(versions, tmp_path):
    _, v1, _ = versions
    chart = tmp_path / "chart.png"

    done = imgclf("data", "stats", str(v1.path), "--png", str(chart))

    assert done.returncode == 0, done.stderr
    assert f"dataset {v1.version} ({v1.path})" in done.stdout
    assert re.search(r"class\s+train\s+val\s+test\s+total", done.stdout)
    splits = v1.dataset["splits"]
    expected = {
        name: [splits[s]["per_class"][name] for s in ("train", "val", "test")] + [3]
        for name in ("cat", "dog")
    }
    assert table_rows(done.stdout, ["cat", "dog"]) == expected
    assert "6 images in 2 classes" in done.stdout
    assert f"class counts chart in {chart}" in done.stdout
    with Image.open(chart) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100
        image.verify()


def test_data_diff_reports_added_removed_and_per_class_changes(versions, capsys):
    _, v1, v2 = versions

    assert cli.main(["data", "diff", str(v1.path), str(v2.path)]) == 0

    output = capsys.readouterr().out
    assert f"dataset {v1.version} -> {v2.version}" in output
    assert table_rows(output, ["bird", "cat", "dog"]) == {
        "bird": [0, 2, 2],
        "cat": [3, 4, 1],
        "dog": [3, 2, -1],
    }
    assert "  added classes: ['bird']" in output
    assert "  removed classes: []" in output
    old, new = shards.read(v1.path), shards.read(v2.path)
    common = set(old) & set(new)
    moved = sum(old[s].split != new[s].split for s in common)
    assert f"  moved split: {moved}" in output
    assert "data diff: 3 examples added, 1 removed, 0 relabelled" in output
    # The dataset card travels with the diff: what the user said of the images changed.
    assert "  card description: '' -> 'Pets and birds.'" in output
    assert "  card license: None -> 'CC-BY-4.0'" in output
    assert "card citation" not in output


def test_data_diff_resolves_versions_under_the_output_dir(versions, capsys):
    root, v1, v2 = versions
    args = ["data", "diff", v1.version, "latest", "--set", f"data.output_dir={root / 'out'}"]
    assert cli.main(args) == 0
    assert f"dataset {v1.version} -> {v2.version}" in capsys.readouterr().out


@pytest.mark.slow
def test_ingest_command_with_runner_and_beam_option(versions, tmp_path):
    root, v1, _ = versions
    out = tmp_path / "out"

    done = imgclf(
        "ingest",
        "--set", f"data.source={root / 'old'}",
        "--set", f"data.output_dir={out}",
        "--set", "data.beam_direct_mode=in_memory",
        "--runner", "DirectRunner",
        "--beam-option", "direct_num_workers=1",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "apitools not found" not in done.stderr  # Beam's BigQuery notice, irrelevant here
    # Same images and ingest settings as v1, so the same version.
    assert f"ingest: dataset {v1.version}: 6 images" in done.stdout
    assert (out / dataset_info.LATEST).read_text().strip() == v1.version
    assert shards.read(out / v1.version).keys() == shards.read(v1.path).keys()


def test_beam_options_reach_the_pipeline(versions, tmp_path, monkeypatch):
    root, _, _ = versions
    seen = []

    class Stop(Exception):
        pass

    def pipeline(options=None, **kwargs):
        seen.append(options)
        raise Stop

    monkeypatch.setattr(ingest.beam, "Pipeline", pipeline)
    with pytest.raises(Stop):
        cli.main(
            [
                "ingest",
                "--set", f"data.source={root / 'old'}",
                "--set", f"data.output_dir={tmp_path}",
                "--set", "data.beam_workers=3",
                "--runner", "DirectRunner",
                "--beam-option", "direct_num_workers=1",
                "--beam-option=--job_name=imgclf-test",  # a leading -- is accepted too
            ]
        )  # fmt: skip

    [options] = seen
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 1  # the option beats the config
    assert options.view_as(GoogleCloudOptions).job_name == "imgclf-test"
    assert list(tmp_path.iterdir()) == []  # the staging folder is cleaned up


def test_a_bad_config_exits_2_with_one_error_line():
    done = imgclf("ingest", "--set", "data.batch_size=-4")

    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert "data.batch_size" in line and "-4" in line
