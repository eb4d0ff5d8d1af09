"""Real digits runs: their run.json, TensorBoard's HParams view, MLflow, and `imgclf runs`."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import pytest
import tensorflow as tf
import yaml

import cli
from configs import loader
from core import run_layout
from tests.conftest import DIGITS_CONFIG
from tfx_pipeline import flow
from tracking import environment, records
from trainer import task

pytestmark = [pytest.mark.slow, pytest.mark.beam]

LEARNING_RATES = (0.003, 0.001)


@dataclass(frozen=True)
class TwoRuns:
    runs_dir: Path
    first: Path  # learning rate 0.003, logged to MLflow
    second: Path  # learning rate 0.001
    mlflow_uri: str


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, ingested_digits, digits_dir):
    """Two 2-epoch digits runs under one runs folder, differing in their learning rate."""
    root = tmp_path_factory.mktemp("tracked")
    uri = f"file:{root / 'mlruns'}"
    with pytest.MonkeyPatch.context() as patch:
        # Restored at the end: the MLflow backend opts in to file stores through the environment.
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset-after-module")
        patch.delenv("MLFLOW_ALLOW_FILE_STORE")
        results = []
        for number, rate in enumerate(LEARNING_RATES):
            overrides = [
                f"data.source={digits_dir}",
                f"data.output_dir={ingested_digits.path.parent}",
                f"train.runs_dir={root / 'runs'}",
                "train.epochs=2",
                f"optimizer.learning_rate={rate}",
            ]
            if number == 0:
                overrides += [f"tracking.mlflow.uri={uri}", "tracking.mlflow.experiment=digits"]
            results.append(flow.run(loader.load(DIGITS_CONFIG, overrides)))
        yield TwoRuns(root / "runs", results[0].run_dir, results[1].run_dir, uri)


def test_every_run_records_what_it_ran_with_and_what_it_got(trained_digits_run):
    run_dir = trained_digits_run.run_dir
    record = json.loads((run_dir / run_layout.RECORD).read_text())
    assert record["run_id"] == run_dir.name and record["name"] == "digits"
    assert record["status"] == records.COMPLETED and record["reason"] is None
    assert record["config"] == yaml.safe_load((run_dir / run_layout.CONFIG).read_text())
    assert record["config"]["train"]["epochs"] == 4
    metrics = json.loads((run_dir / run_layout.METRICS).read_text())
    assert record["metrics"] == metrics
    assert record["dataset_version"] == metrics["dataset_version"]
    # What training found, recorded by the trainer and copied beside the test figures.
    assert record["training"]["epochs_run"] == metrics["epochs_run"] == 4
    assert record["training"] == {key: metrics[key] for key in run_layout.TRAINING_KEYS}
    history = (run_dir / run_layout.HISTORY).read_text().splitlines()
    assert (
        [epoch["epoch"] for epoch in record["epochs"]]
        == [0, 1, 2, 3]
        == list(range(len(history) - 1))
    )
    assert record["epochs"][-1]["val_accuracy"] == pytest.approx(
        float(history[-1].split(",")[history[0].split(",").index("val_accuracy")])
    )
    assert 0 < record["duration_s"] <= records.seconds_between(record["started"], record["ended"])
    assert record["environment"]["tensorflow"] == tf.__version__
    assert record["environment"]["keras"] == keras.__version__
    assert record["environment"]["devices"]
    assert record["git"] == environment.git_commit(Path(task.__file__).parents[1])
    assert record["git"] is None or re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"])
    assert record["artefacts"]["export"] == "export/1"
    assert record["artefacts"]["keras_model"] == run_layout.KERAS_MODEL
    for name in ("config", "history", "metrics", "tensorboard", "checkpoints"):
        assert (run_dir / record["artefacts"][name]).exists(), name
    assert "mlflow" not in record  # tracking.mlflow.uri unset


def session_groups(log_root: Path):
    """The HParams dashboard's session groups, computed by TensorBoard's own plugin code."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(log_root))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(log_root))
    tb_context = base_plugin.TBContext(
        logdir=str(log_root), multiplexer=multiplexer, data_provider=provider
    )
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0,
        slice_size=100,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_RUNNING],
    )
    handler = list_session_groups.Handler(
        context.RequestContext(), backend_context.Context(tb_context), "", request
    )
    return handler.run().session_groups


def test_tensorboard_hparams_view_compares_the_runs(two_runs):
    groups = session_groups(two_runs.runs_dir)
    by_session = {group.sessions[0].name: group for group in groups}
    assert sorted(by_session) == sorted(
        f"{run.name}/{run_layout.TENSORBOARD}" for run in (two_runs.first, two_runs.second)
    )
    for run_dir, rate in zip((two_runs.first, two_runs.second), LEARNING_RATES, strict=True):
        group = by_session[f"{run_dir.name}/{run_layout.TENSORBOARD}"]
        assert group.hparams["optimizer.learning_rate"].number_value == pytest.approx(rate)
        assert group.hparams["model.backbone"].string_value == "cnn"
        assert group.hparams["train.epochs"].number_value == 2
        # Each metric column is filled from the run's train/ and validation/ scalars.
        values = {(m.name.group, m.name.tag): m.value for m in group.metric_values}
        last = records.read(run_dir)["epochs"][-1]
        assert values == {
            ("train", "epoch_loss"): pytest.approx(last["loss"], rel=1e-5),
            ("train", "epoch_accuracy"): pytest.approx(last["accuracy"], rel=1e-5),
            ("validation", "epoch_loss"): pytest.approx(last["val_loss"], rel=1e-5),
            ("validation", "epoch_accuracy"): pytest.approx(last["val_accuracy"], rel=1e-5),
        }


def test_mlflow_holds_the_run_its_metrics_artefacts_and_model(two_runs):
    from mlflow.tracking import MlflowClient

    linked = records.read(two_runs.first)["mlflow"]
    assert linked["uri"] == two_runs.mlflow_uri and linked["experiment"] == "digits"
    assert "mlflow" not in records.read(two_runs.second)
    client = MlflowClient(two_runs.mlflow_uri)
    run = client.get_run(linked["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == two_runs.first.name
    assert run.data.params["optimizer.learning_rate"] == "0.003"
    assert run.data.params["model.backbone"] == "cnn"
    epochs = records.read(two_runs.first)["epochs"]
    for key in ("loss", "val_accuracy", "learning_rate"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert logged == [(e["epoch"], pytest.approx(e[key])) for e in epochs], key
    metrics = json.loads((two_runs.first / run_layout.METRICS).read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    top = {info.path for info in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "history.csv", "metrics.json", "run.json", "model"} <= top
    model = {info.path for info in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/saved_model.pb", "model/variables"} <= model


def test_runs_list_filters_and_sorts_real_runs(two_runs, capsys):
    folder = str(two_runs.runs_dir)
    assert cli.main(["runs", "list", "--runs-dir", folder, "--filter", "lr<0.002"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("runs list: 0 of 2 run(s)")
    code = cli.main(
        ["runs", "list", "--runs-dir", folder, "--filter", "optimizer.learning_rate<0.002"]
    )
    header, *rows, summary = capsys.readouterr().out.splitlines()
    assert code == 0 and [row.split()[0] for row in rows] == [two_runs.second.name]
    assert summary.startswith("runs list: 1 of 2 run(s)")
    assert cli.main(["runs", "list", "--runs-dir", folder, "--sort=-accuracy"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:-1]
    accuracies = [records.load(two_runs.runs_dir / row.split()[0])["metrics"]["accuracy"]
                  for row in rows]  # fmt: skip
    assert len(rows) == 2 and accuracies == sorted(accuracies, reverse=True)


def test_runs_show_of_a_real_run(two_runs, capsys):
    assert cli.main(["runs", "show", str(two_runs.first)]) == 0
    out = capsys.readouterr().out
    assert f"tensorflow: {tf.__version__}" in out and "status: completed" in out
    assert f"mlflow: run {records.read(two_runs.first)['mlflow']['run_id']}" in out
    assert "per class:" in out and "export: export/1" in out
    assert out.splitlines()[-1].startswith(f"runs show: {two_runs.first.name} completed after")


def test_runs_compare_real_runs_with_html(two_runs, tmp_path, capsys):
    out = tmp_path / "compare.html"
    code = cli.main(
        ["runs", "compare", two_runs.first.name, two_runs.second.name,
         "--runs-dir", str(two_runs.runs_dir), "--html", str(out)]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    first, second = (
        json.loads((run / run_layout.METRICS).read_text())["per_class"]
        for run in (two_runs.first, two_runs.second)
    )
    expected = sum(
        second[name][metric] < first[name][metric] - 1e-9
        for name in first
        for metric in ("recall", "f1")
    )
    assert text.splitlines()[-1] == (
        f"runs compare: 2 runs vs {two_runs.first.name}: 3 config difference(s), "
        f"{expected} per-class regression(s); HTML in {out}"
    )
    for key in ("optimizer.learning_rate", "tracking.mlflow.uri", "tracking.mlflow.experiment"):
        assert re.search(rf"^\s+{re.escape(key)}\s", text, re.MULTILINE), key
    assert text.count("▼ ") >= expected  # each regression listed on its own line too
    page = out.read_text()
    assert page.count('class="num regression"') == expected
    assert page.count("data:image/png;base64,") == 1
