"""Runs that fail or stop: run.json says failed and why; MLflow marks them FAILED too."""

import json

import pytest

import cli
from configs import loader
from core import run_layout
from tests.conftest import tiny_class_tree, tiny_run_overrides
from tracking import records
from trainer import loop, task
from transforms.beam import ingest

pytestmark = [pytest.mark.slow, pytest.mark.beam]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_image, make_tree):
    """Overrides for a 2-class dataset of 8x8 images (ingested) and a 1-epoch run."""
    root = tmp_path_factory.mktemp("tiny")
    # Each test names its own train.runs_dir after these; the later --set wins.
    overrides = tiny_run_overrides(tiny_class_tree(root, make_image, make_tree), root)
    result = ingest.run(loader.load(None, overrides).data)
    return root, overrides, result


def only_run(runs_dir):
    [run_dir] = list(runs_dir.iterdir())
    return run_dir


def test_a_run_failing_mid_training_records_why_and_reraises(tiny, tmp_path, monkeypatch, capsys):
    root, overrides, ingested = tiny
    # A corrupt shard: the dataset loads and the run starts; reading the train split fails.
    data = tmp_path / "data"
    version = data / ingested.version
    version.mkdir(parents=True)
    for item in ingested.path.iterdir():
        (version / item.name).write_bytes(item.read_bytes())
    shard = version / ingested.dataset["splits"]["train"]["shards"][0]
    content = bytearray(shard.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 32] = bytes(b ^ 0xFF for b in content[middle : middle + 32])
    shard.write_bytes(bytes(content))
    uri = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset-after-test")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    cfg = loader.load(
        None,
        [
            *overrides,
            f"data.output_dir={data}",
            f"data.version={ingested.version}",
            f"train.runs_dir={tmp_path / 'runs'}",
            f"tracking.mlflow.uri={uri}",
        ],
    )

    with pytest.raises(task.TrainingError, match="is corrupt") as raised:
        task.run(cfg)

    record = records.read(only_run(tmp_path / "runs"))
    assert record["status"] == records.FAILED
    assert record["reason"] == f"TrainingError: {raised.value}"
    assert record["ended"] is not None and record["duration_s"] >= 0
    assert record["dataset_version"] == ingested.version and record["metrics"] == {}
    assert record["config"]["tracking"]["mlflow"]["uri"] == uri

    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(record["mlflow"]["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["imgclf.failure_reason"] == record["reason"]

    capsys.readouterr()
    runs_dir = str(tmp_path / "runs")
    assert cli.main(["runs", "list", "--runs-dir", runs_dir, "--filter", "status=failed"]) == 0
    header, row, summary = capsys.readouterr().out.splitlines()
    assert row.split()[:2] == [record["run_id"], "failed"]
    assert summary.startswith("runs list: 1 of 1 run(s)")


def test_an_interrupted_run_is_failed_with_keyboard_interrupt(tiny, tmp_path, monkeypatch):
    _, overrides, _ = tiny

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.TrainingLoop, "fit", interrupted)
    cfg = loader.load(None, [*overrides, f"train.runs_dir={tmp_path / 'runs'}"])
    with pytest.raises(KeyboardInterrupt):
        task.run(cfg)
    record = records.read(only_run(tmp_path / "runs"))
    assert (record["status"], record["reason"]) == (records.FAILED, "KeyboardInterrupt")


def test_a_completed_tiny_run_after_a_failed_one_lists_both(tiny, tmp_path, capsys):
    _, overrides, _ = tiny
    runs_dir = tmp_path / "runs"
    ok = task.run(loader.load(None, [*overrides, f"train.runs_dir={runs_dir}"]))
    assert records.read(ok.run_dir)["status"] == records.COMPLETED
    bad = [*overrides, f"train.runs_dir={runs_dir}", "train.run_id=bad"]
    # Validated before the run folder exists: no run, nothing recorded.
    with pytest.raises(task.TrainingError, match="does not have: bird"):
        task.run(loader.load(None, [*bad, "train.class_weights={bird: 2}"]))
    assert not (runs_dir / "bad").exists()
    assert cli.main(["runs", "list", "--runs-dir", str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("runs list: 1 of 1 run(s)")
    assert json.loads((ok.run_dir / run_layout.RECORD).read_text())["epochs"][0]["epoch"] == 0
