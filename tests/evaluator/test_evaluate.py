"""`imgclf evaluate` end to end on a real digits run: TFRecords, class folders, manifests,
unknown classes, broken images, and `imgclf train` leaving the evaluation in its run."""

import html as html_lib
import json
import shutil
from pathlib import Path

import pytest

import cli
from tests.conftest import export_dense_model
from tracking import records

pytestmark = pytest.mark.slow

CONTRACT_KEYS = {
    "accuracy",
    "macro_f1",
    "num_examples",
    "num_classes",
    "class_names",
    "top_k_accuracy",
    "precision",
    "recall",
    "f1",
    "per_class",
    "confusion_matrix",
    "confusion_matrix_normalized",
    "roc_auc",
    "calibration",
    "most_confused",
    "dataset_version",
    "split",
    "model_path",
}
CHARTS = ("confusion_matrix.png", "per_class.png", "reliability.png")
DIGITS = [str(d) for d in range(10)]


def keras_model_metrics(run_dir: Path, version_dir: Path) -> dict:
    """The test split's metrics of the run's model.keras, predicted in memory as a trainer
    scoring it itself would."""
    import keras

    from configs import loader
    from trainer import evaluate as metrics_lib
    from transforms import dataset, dataset_info

    cfg = loader.load(run_dir / "config.yaml")
    info = dataset_info.load(version_dir)
    test = dataset.build_dataset(
        version_dir, "test", cfg.data, False, num_examples=info["splits"]["test"]["count"]
    )
    model = keras.saving.load_model(run_dir / "model.keras")
    return metrics_lib.classification_metrics(*metrics_lib.predict(model, test), DIGITS)


def evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def run_copy(trained_digits_run, tmp_path) -> Path:
    """The session's trained run, copied: evaluating a run writes into its folder."""
    return Path(shutil.copytree(trained_digits_run.run_dir, tmp_path / "run"))


@pytest.fixture
def model_copy(trained_digits_run, tmp_path) -> Path:
    """The run's SavedModel alone, as `<tmp>/digits/1/`: a model outside any run."""
    shutil.copytree(trained_digits_run.export_dir, tmp_path / "digits" / "1")
    return tmp_path / "digits"


@pytest.fixture(scope="module")
def digits_tree(tmp_path_factory, digits_dir) -> Path:
    """12 images of every digit as class folders: test data that is not TFRecords."""
    root = tmp_path_factory.mktemp("digits_tree")
    for digit in DIGITS:
        (root / digit).mkdir()
        for path in sorted((digits_dir / digit).iterdir())[:12]:
            shutil.copy(path, root / digit / path.name)
    return root


def test_the_ingested_test_split_gives_the_runs_own_accuracy(
    run_copy, trained_digits_run, ingested_digits, capsys
):
    # The run's own evaluation, written by the flow, is written again from scratch.
    for name in (*CHARTS, "metrics.json", "report.html", "blessing.json", "predictions.jsonl"):
        (run_copy / name).unlink()
    code, out, err = evaluate(capsys, "--model-path", run_copy, "--test-data", ingested_digits.path)

    assert code == 0, err
    metrics = read_json(run_copy / "metrics.json")
    trained = keras_model_metrics(run_copy, ingested_digits.path)
    # The same test split through the exported graph: the trained Keras model's figures, not
    # near them.
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    assert metrics["num_examples"] == trained["num_examples"]
    assert metrics["confusion_matrix"] == trained["confusion_matrix"]
    assert CONTRACT_KEYS <= set(metrics)
    assert metrics["dataset_version"] == ingested_digits.version and metrics["split"] == "test"
    assert metrics["class_names"] == DIGITS and metrics["num_skipped"] == 0
    assert metrics["epochs_run"] == trained_digits_run.training["epochs_run"]  # from run.json
    assert Path(metrics["model_path"]) == run_copy / "export" / "1"

    for name in (*CHARTS, "loss.png", "accuracy.png", "report.html", "blessing.json"):
        assert (run_copy / name).is_file(), name
    rows = [
        json.loads(line) for line in (run_copy / "predictions.jsonl").read_text().split("\n")[:-1]
    ]
    assert len(rows) == metrics["num_examples"]
    assert set(rows[0]) >= {"path", "true", "predicted", "confidence"}
    assert sum(row["true"] == row["predicted"] for row in rows) / len(rows) == pytest.approx(
        metrics["accuracy"]
    )
    wrong = [row for row in rows if row["true"] != row["predicted"]]
    assert (run_copy / "misclassified.png").is_file() == bool(wrong)
    blessing = read_json(run_copy / "blessing.json")
    assert blessing["blessed"] is True  # no thresholds set: it beats the majority class
    html = (run_copy / "report.html").read_text()
    assert "data:image/png;base64," in html and ingested_digits.version in html
    assert f'<pre class="dataset-card"># Dataset {ingested_digits.version}' in html
    assert html_lib.escape(blessing["summary"]) in html  # the banner says why
    assert not (run_copy / "evaluations").exists()  # the run's own record, in the run

    [line] = out.strip().splitlines()
    assert line.startswith(f"evaluate: accuracy {metrics['accuracy']:.4f} on ")
    assert f"(dataset {ingested_digits.version} test), {blessing['summary']} -> " in line
    assert blessing["summary"].startswith("blessed: accuracy ")
    assert line.endswith(str(run_copy / "report.html"))


def test_the_default_test_data_is_the_dataset_the_model_was_trained_on(
    run_copy, trained_digits_run, capsys
):
    record = (run_copy / "metrics.json").read_bytes()
    code, out, err = evaluate(capsys, "--model-path", run_copy / "export", "--split", "val")
    assert code == 0, err
    # Its validation split is not the run's record: evaluated beside it, not over it.
    assert (run_copy / "metrics.json").read_bytes() == record
    version = trained_digits_run.training["dataset_version"]
    [evaluation] = (run_copy / "evaluations").iterdir()
    assert evaluation.name.endswith(f"-{version}-val")
    metrics = read_json(evaluation / "metrics.json")
    assert metrics["split"] == "val" and metrics["dataset_version"] == version
    assert metrics["epochs_run"] == trained_digits_run.training["epochs_run"]
    assert out.strip().endswith(str(evaluation / "report.html"))


@pytest.mark.parametrize("given", ["output folder", "latest file"])
def test_an_output_folder_or_its_latest_file_means_the_newest_version(
    given, model_copy, ingested_digits, tmp_path, capsys
):
    root = ingested_digits.path.parent
    test_data = root if given == "output folder" else root / "latest"
    code, _, err = evaluate(
        capsys, "--model-path", model_copy, "--test-data", test_data, "--out", tmp_path / "out"
    )
    assert code == 0, err
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["dataset_version"] == ingested_digits.version


def test_a_class_folder_tree_with_broken_files_skips_and_counts_them(
    trained_digits_run, digits_tree, tmp_path, capsys
):
    tree = Path(shutil.copytree(digits_tree, tmp_path / "tree"))
    (tree / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    good = (tree / "4" / sorted(p.name for p in (tree / "4").iterdir())[0]).read_bytes()
    (tree / "4" / "truncated.png").write_bytes(good[: len(good) // 2])
    out_dir = tmp_path / "out"

    code, out, err = evaluate(
        capsys,
        "--model-path",
        trained_digits_run.export_dir,
        "--test-data",
        tree,
        "--out",
        out_dir,
        "--set",
        "evaluation.batch_size=16",
    )

    assert code == 0, err
    assert "Traceback" not in err
    metrics = read_json(out_dir / "metrics.json")
    assert metrics["num_examples"] == 120 and metrics["num_skipped"] == 2
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in metrics["skipped"]}
    assert set(skipped) == {"broken.png", "truncated.png"}
    assert all("decode" in reason for reason in skipped.values())
    assert metrics["dataset_version"] is None and metrics["split"] is None
    assert metrics["accuracy"] > 0.7  # a 4-epoch model, on images it partly trained on
    assert all(metrics["per_class"][d]["support"] == 12 for d in DIGITS)
    assert len((out_dir / "predictions.jsonl").read_text().splitlines()) == 120
    for name in (*CHARTS, "report.html", "blessing.json"):
        assert (out_dir / name).is_file(), name
    assert (out_dir / "loss.png").is_file()  # a run's export: its run's curves
    assert ", 2 skipped (" in out and str(tree) in out


def test_a_manifest_with_a_missing_file(model_copy, digits_tree, tmp_path, capsys):
    rows = ["path,label"]
    for digit in ("1", "7"):
        rows += [f"{p},{digit}" for p in sorted((digits_tree / digit).iterdir())[:5]]
    rows.append("missing.png,1")
    manifest = tmp_path / "test.csv"
    manifest.write_text("\n".join(rows) + "\n")
    monkeypatched_cwd = tmp_path / "cwd"
    monkeypatched_cwd.mkdir()

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(monkeypatched_cwd)
        code, out, err = evaluate(capsys, "--model-path", model_copy, "--test-data", manifest)

    assert code == 0, err
    # Not a run: a new folder in the working directory, named after the model.
    [out_dir] = monkeypatched_cwd.glob("evaluation-digits-v1-*")
    assert not (out_dir / "loss.png").exists()  # no run, no training history
    metrics = read_json(out_dir / "metrics.json")
    assert metrics["num_examples"] == 10 and metrics["num_skipped"] == 1
    assert "missing.png" in metrics["skipped"][0]["path"]
    assert metrics["per_class"]["1"]["support"] == 5 and metrics["per_class"]["0"]["support"] == 0
    assert metrics["per_class"]["0"]["roc_auc"] is None


def test_a_pre_split_tree_gives_only_the_chosen_split(model_copy, digits_tree, tmp_path, capsys):
    tree = tmp_path / "tree"
    for digit in DIGITS:
        files = sorted((digits_tree / digit).iterdir())
        for split, chosen in (("train", files[:3]), ("test", files[3:8])):
            (tree / split / digit).mkdir(parents=True)
            for path in chosen:
                shutil.copy(path, tree / split / digit / path.name)

    code, out, err = evaluate(
        capsys, "--model-path", model_copy, "--test-data", tree, "--out", tmp_path / "out"
    )

    assert code == 0, err
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["split"] == "test" and metrics["num_examples"] == 50
    assert f"({tree} (test split))" in out
    code, _, err = evaluate(
        capsys, "--model-path", model_copy, "--test-data", tree, "--split", "val"
    )
    assert code == 2 and "has test, train images but no val images" in err


def test_a_class_the_model_does_not_know_is_a_clear_error(
    model_copy, digits_tree, tmp_path, capsys
):
    tree = Path(shutil.copytree(digits_tree, tmp_path / "tree"))
    shutil.copytree(tree / "3", tree / "zebra")

    code, out, err = evaluate(
        capsys,
        "--model-path",
        model_copy,
        "--test-data",
        tree,
        "--out",
        tmp_path / "out",
    )

    assert code == 2
    [line] = err.strip().splitlines()[-1:]
    assert line.startswith("error: ") and "zebra" in line
    assert "its classes: 0, 1, 2" in line and "remove or rename" in line
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # stopped before any image was read


def test_a_model_path_without_a_savedmodel_is_a_clear_error(tmp_path, capsys):
    code, _, err = evaluate(capsys, "--model-path", tmp_path, "--test-data", tmp_path)
    assert code == 2 and "holds no SavedModel" in err


def test_a_missing_test_data_folder_is_a_clear_error(model_copy, capsys):
    code, _, err = evaluate(
        capsys,
        "--model-path",
        model_copy,
        "--test-data",
        "no-such-folder",
    )
    assert code == 2 and "no-such-folder" in err and "Traceback" not in err


def test_any_exported_model_evaluates_with_its_own_label_map(digits_tree, tmp_path, capsys):
    """A model that knows only some of the classes, in another order: labels map by name."""
    names = ["7", "1"]
    model = export_dense_model(tmp_path / "model", 32, 1, names)
    tree = tmp_path / "tree"
    for name in names:
        shutil.copytree(digits_tree / name, tree / name)

    code, _, err = evaluate(
        capsys, "--model-path", model, "--test-data", tree, "--out", tmp_path / "out"
    )

    assert code == 0, err
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["class_names"] == names
    assert metrics["per_class"]["7"]["support"] == 12 and metrics["top_k_accuracy"] == {}
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").open()]
    assert {row["true"] for row in rows} == {"1", "7"}
    assert all(row["true"] == Path(row["path"]).parent.name for row in rows)


@pytest.mark.beam
def test_imgclf_train_leaves_the_evaluation_in_its_run_and_its_mlflow_run(
    tmp_path, make_image, make_tree, capsys, monkeypatch
):
    # mlflow_backend opts in to file stores through the environment: restored after the test.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset-after-test")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    spec = {
        name: {f"{i}.png": make_image(10 * c + i, size=(16, 16)) for i in range(6)}
        for c, name in enumerate(["cat", "dog", "owl"])
    }
    source = make_tree(tmp_path / "tree", spec)
    overrides = [
        f"data.source={source}",
        f"data.output_dir={tmp_path / 'data'}",
        "data.beam_direct_mode=in_memory",
        "data.split={train: 0.5, val: 0.17, test: 0.33}",
        "data.image_size=[8, 8]",
        "data.batch_size=2",
        "model.cnn=[{conv: {filters: 2}}]",
        "train.epochs=1",
        f"train.runs_dir={tmp_path / 'runs'}",
        "evaluation.gate.min_accuracy=0.99",
        f"tracking.mlflow.uri=file:{tmp_path / 'mlruns'}",
    ]
    sets = [arg for override in overrides for arg in ("--set", override)]
    assert cli.main(["ingest", *sets]) == 0

    assert cli.main(["train", *sets]) == 0

    out = capsys.readouterr().out
    [run_dir] = (tmp_path / "runs").iterdir()
    for name in (*CHARTS, "loss.png", "accuracy.png", "report.html", "predictions.jsonl"):
        assert (run_dir / name).is_file(), name
    metrics = read_json(run_dir / "metrics.json")
    assert CONTRACT_KEYS <= set(metrics) and metrics["epochs_run"] == 1
    blessing = read_json(run_dir / "blessing.json")
    majority, check = blessing["checks"]
    assert majority["name"] == "beats_majority"
    assert check["name"] == "accuracy" and check["threshold"] == 0.99
    assert check["value"] == metrics["accuracy"]
    assert blessing["blessed"] is (metrics["accuracy"] >= 0.99)
    evaluated, logged = out.strip().splitlines()[-2:]
    assert evaluated.startswith("evaluate: accuracy ")
    assert evaluated.endswith(f"{run_dir}/report.html")

    # The MLflow run opened by training holds what the evaluation added after it finished.
    from mlflow.tracking import MlflowClient

    linked = records.read(run_dir)["mlflow"]
    assert logged.startswith("evaluate: logged ")
    assert logged.endswith(f" artefact(s) to MLflow run {linked['run_id']}")
    client = MlflowClient(linked["uri"])
    artefacts = {info.path for info in client.list_artifacts(linked["run_id"])}
    assert {"report.html", "metrics.json", "blessing.json", *CHARTS} <= artefacts
    # The evaluator's metrics.json, as the run folder holds it.
    copy = client.download_artifacts(linked["run_id"], "metrics.json", str(tmp_path / "copy"))
    assert read_json(Path(copy)) == metrics
    run = client.get_run(linked["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert run.data.metrics["test_num_skipped"] == 0  # only the evaluator records it
