"""tracking.mlflow_backend against a local MLflow file store, read back with MlflowClient."""

import json
import sys

import pytest

from configs import loader, schema
from core import errors, run_layout, saved_models
from tracking import hparams, mlflow_backend, records
from tracking import recorder as run_recorder
from trainer import task

mlflow_tracking = pytest.importorskip("mlflow.tracking")

HISTORY = "epoch,loss,accuracy,val_loss,val_accuracy\n0,2.0,0.3,1.8,0.4\n1,1.0,0.7,0.9,0.75\n"
METRICS = {
    "accuracy": 0.9,
    "macro_f1": 0.85,
    "epochs_run": 2,
    "per_class": {"cat": {"recall": 0.8, "f1": 0.82}, "dog": {"recall": 1.0, "f1": 0.88}},
    "confusion_matrix": [[4, 1], [0, 5]],
    "split": "test",
}


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    """A file: MLflow store; the environment is restored after the test even though
    mlflow_backend opts in to file stores by setting MLFLOW_ALLOW_FILE_STORE."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset-after-test")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    return f"file:{tmp_path / 'mlruns'}"


def mlflow_config(uri: str, **fields) -> schema.MlflowConfig:
    return schema.MlflowConfig(uri=uri, experiment="tests", **fields)


def started_run(tmp_path, config: dict | None = None):
    run_dir = tmp_path / "runs" / "20260101-000000-digits-abc123"
    (run_dir / run_layout.EXPORT).mkdir(parents=True)
    (run_dir / run_layout.CONFIG).write_text("name: digits\n")
    config = config or loader.to_dict(loader.load(None))
    records.start(run_dir, config, "v1", {"commit": "c" * 40, "dirty": True}, {})
    return run_dir


def train(run_dir, epochs: int = 2):
    lines = HISTORY.splitlines()
    (run_dir / run_layout.HISTORY).write_text("\n".join(lines[: epochs + 1]) + "\n")
    (run_dir / run_layout.METRICS).write_text(json.dumps(METRICS))
    model = run_dir / run_layout.EXPORT / "1"
    (model / "variables").mkdir(parents=True)
    (model / saved_models.SAVED_MODEL_FILE).write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"index")
    (run_dir / "curves.png").write_bytes(b"\x89PNG")
    (run_dir / run_layout.CHECKPOINTS).mkdir()
    (run_dir / run_layout.CHECKPOINTS / "ckpt-1.index").write_bytes(b"not logged")


def artefact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for info in client.list_artifacts(run_id, path):
        found |= artefact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_completed_run_is_logged_with_params_metrics_artefacts_and_model(tmp_path, file_store):
    config = loader.to_dict(loader.load(None, ["optimizer.learning_rate=0.02"]))
    config_with_many_keys = {**config, "notes": {f"k{i}": i for i in range(150)}}
    run_dir = started_run(tmp_path, config_with_many_keys)
    tracker = mlflow_backend.start(mlflow_config(file_store), run_dir)
    linked = records.read(run_dir)["mlflow"]
    assert linked == {
        "uri": file_store,
        "experiment": "tests",
        "experiment_id": linked["experiment_id"],
        "run_id": tracker.run_id,
    }
    train(run_dir)
    records.complete(run_dir)
    line = tracker.finish(run_dir)
    assert line.startswith(f"train: logged to MLflow run {tracker.run_id} (experiment tests")

    client = mlflow_tracking.MlflowClient(file_store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.tags["imgclf.run_id"] == run_dir.name
    assert run.data.tags["mlflow.source.git.commit"] == "c" * 40
    assert run.data.tags["imgclf.dataset_version"] == "v1"
    expected = hparams.flatten_hparams(config_with_many_keys)
    assert len(expected) > mlflow_backend.MAX_PARAMS_PER_BATCH  # several batches
    assert run.data.params == {key: str(value) for key, value in expected.items()}
    assert run.data.params["optimizer.learning_rate"] == "0.02"
    assert history(client, tracker.run_id, "val_accuracy") == [(0, 0.4), (1, 0.75)]
    assert history(client, tracker.run_id, "loss") == [(0, 2.0), (1, 1.0)]
    assert history(client, tracker.run_id, "test_accuracy") == [(0, 0.9)]
    assert history(client, tracker.run_id, "epochs_run") == [(0, 2)]  # about the run: no prefix
    assert run.data.metrics["test_per_class.cat.recall"] == 0.8
    assert run.data.metrics["duration_s"] == records.read(run_dir)["duration_s"]
    assert not any("confusion" in key for key in run.data.metrics)
    assert artefact_paths(client, tracker.run_id) == {
        "config.yaml",
        "history.csv",
        "metrics.json",
        "run.json",
        "curves.png",
        "model/saved_model.pb",
        "model/variables/variables.index",
    }
    experiment = client.get_experiment_by_name("tests")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [
        tracker.run_id
    ]


def test_log_model_false_leaves_the_model_out(tmp_path, file_store):
    run_dir = started_run(tmp_path)
    tracker = mlflow_backend.start(mlflow_config(file_store, log_model=False), run_dir)
    train(run_dir)
    records.complete(run_dir)
    tracker.finish(run_dir)
    paths = artefact_paths(mlflow_tracking.MlflowClient(file_store), tracker.run_id)
    assert "config.yaml" in paths and not any(p.startswith("model/") for p in paths)


def test_a_failed_run_is_failed_in_mlflow_with_its_reason_and_epochs(tmp_path, file_store):
    run_dir = started_run(tmp_path)
    tracker = mlflow_backend.start(mlflow_config(file_store), run_dir)
    (run_dir / run_layout.HISTORY).write_text("\n".join(HISTORY.splitlines()[:2]) + "\n")
    error = task.TrainingError("out of memory: lower data.batch_size")
    records.fail(run_dir, error)
    tracker.fail(run_dir, error)

    client = mlflow_tracking.MlflowClient(file_store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["imgclf.failure_reason"] == (
        "TrainingError: out of memory: lower data.batch_size"
    )
    assert history(client, tracker.run_id, "loss") == [(0, 2.0)]
    assert artefact_paths(client, tracker.run_id) == {"run.json"}


def test_log_evaluation_adds_what_the_evaluator_wrote(tmp_path, file_store):
    run_dir = started_run(tmp_path)
    tracker = mlflow_backend.start(mlflow_config(file_store), run_dir)
    train(run_dir)
    records.complete(run_dir)
    tracker.finish(run_dir)
    (run_dir / "report.html").write_text("<html></html>")
    (run_dir / run_layout.METRICS).write_text(json.dumps({**METRICS, "top_k_accuracy": {"3": 1.0}}))

    line = mlflow_backend.log_evaluation(mlflow_config(file_store), run_dir)
    assert line.startswith("evaluate: logged ") and tracker.run_id in line
    client = mlflow_tracking.MlflowClient(file_store)
    assert history(client, tracker.run_id, "test_top_k_accuracy.3") == [(0, 1.0)]
    assert history(client, tracker.run_id, "test_accuracy") == [(0, 0.9)]  # not logged twice
    assert {"report.html", "model/saved_model.pb"} <= artefact_paths(client, tracker.run_id)
    assert mlflow_backend.log_evaluation(schema.MlflowConfig(), run_dir) is None


def test_no_uri_means_no_mlflow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # would fail any import of it
    assert mlflow_backend.start(schema.MlflowConfig(), tmp_path) is None


def test_a_missing_mlflow_fails_the_run_naming_the_extra(tmp_path, monkeypatch):
    for name in ("mlflow", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)
    cfg = loader.load(None, [f"train.runs_dir={tmp_path}", f"tracking.mlflow.uri=file:{tmp_path}"])
    run_dir = tmp_path / "run"
    (run_dir / run_layout.EXPORT).mkdir(parents=True)
    recorder = run_recorder.Recorder(cfg)
    with pytest.raises(errors.UserError, match=r"pip install imgclf\[mlflow\]") as raised:
        recorder.start(run_dir, "v1", chief=True)
    recorder.fail(raised.value)  # what task.run does with it
    record = records.read(run_dir)
    assert record["status"] == records.FAILED
    assert record["reason"].startswith("MlflowError: tracking.mlflow.uri is set but MLflow is not")


def test_a_database_store_without_sqlalchemy_says_what_to_install(tmp_path):
    pytest.importorskip("mlflow")
    try:
        import sqlalchemy  # noqa: F401

        pytest.skip("SQLAlchemy is installed: sqlite stores work")
    except ImportError:
        pass
    run_dir = started_run(tmp_path)
    with pytest.raises(mlflow_backend.MlflowError, match="pip install mlflow"):
        mlflow_backend.start(mlflow_config(f"sqlite:///{tmp_path / 'mlflow.db'}"), run_dir)
