"""`imgclf monitor drift`: the training reference, and the errors a user can make."""

import json
import shutil
from pathlib import Path

import pytest

import cli
from core import errors, image_stats
from monitoring import drift, recorder, reference, stats
from transforms import dataset_info


def test_dataset_json_carries_input_histograms_on_the_fixed_bins(ingested_digits):
    histograms = ingested_digits.dataset["stats"]["input_histograms"]
    assert histograms["edges"] == {name: list(e) for name, e in image_stats.INPUT_EDGES.items()}
    written = ingested_digits.dataset["written"]
    assert all(sum(counts) == written for counts in histograms["counts"].values())
    # The digits are 32x32 PNGs of dark ink on white.
    assert (
        histograms["counts"]["height"][image_stats.bin_index(32, image_stats.SIDE_EDGES)] == written
    )
    brightness = histograms["counts"]["brightness"]
    assert sum(brightness[image_stats.bin_index(0.5, image_stats.UNIT_EDGES) :]) == written


def test_a_dataset_json_without_histograms_falls_back_to_the_train_shards(
    ingested_digits, tmp_path
):
    stored = reference.load_reference(str(ingested_digits.path))
    assert stored.source.startswith("dataset.json")
    old = tmp_path / "old"
    shutil.copytree(ingested_digits.path, old)
    info = json.loads((old / dataset_info.DATASET_JSON).read_text())
    del info["stats"]["input_histograms"]
    (old / dataset_info.DATASET_JSON).write_text(json.dumps(info))
    computed = reference.load_reference(str(old))
    train = info["splits"]["train"]["count"]
    assert computed.source.startswith(f"computed from {train} train images")
    assert computed.classes == stored.classes == info["splits"]["train"]["per_class"]
    for name in image_stats.INPUT_EDGES:
        assert sum(computed.histograms[name]) == train
        assert drift.psi(stored.histograms[name], computed.histograms[name]) < 0.05, name


def run_drift(*args: str) -> int:
    return cli.main(["monitor", "drift", "--model", "digits", *args])


def test_a_missing_stats_folder_is_one_clear_line(tmp_path, capsys):
    status = run_drift("--stats-dir", str(tmp_path / "nowhere"), "--dataset", str(tmp_path))
    error = capsys.readouterr().err
    assert status == errors.USER_ERROR_EXIT
    assert error.count("\n") == 1 and "no statistics of model 'digits'" in error
    assert "--stats-dir" in error


def test_a_bad_since_is_a_user_error(tmp_path, capsys):
    assert run_drift("--since", "soon", "--stats-dir", str(tmp_path)) == errors.USER_ERROR_EXIT
    assert "received 'soon'" in capsys.readouterr().err


def test_no_requests_in_the_span_is_a_user_error(tmp_path, capsys):
    folder = Path(recorder.windows_dir(str(tmp_path), "digits", 1))
    folder.mkdir(parents=True)
    (folder / "19700101T000000Z-old.json").write_text(
        json.dumps(stats.Window(0, 60, 0.5).to_json())
    )
    assert run_drift("--stats-dir", str(tmp_path), "--since", "1h") == errors.USER_ERROR_EXIT
    assert "no requests to digits recorded since" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["/no/such/dataset", "latest"])
def test_an_unknown_dataset_is_a_user_error(tmp_path, capsys, dataset):
    folder = Path(recorder.windows_dir(str(tmp_path), "digits", 1))
    folder.mkdir(parents=True)
    window = stats.Window(0, 4e9, 0.5)
    window.add_predictions(["1"], [0.9])
    (folder / "20261122T000000Z-now.json").write_text(json.dumps(window.to_json()))
    status = run_drift(
        "--stats-dir", str(tmp_path), "--dataset", dataset, "--set",
        f"data.output_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert status == errors.USER_ERROR_EXIT
    assert "dataset" in capsys.readouterr().err
