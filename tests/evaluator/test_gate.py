"""evaluator.gate: every configured threshold becomes a check in blessing.json; baselines are
evaluated on the same images, from a folder or a registry label."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from configs import loader, schema
from evaluator import gate
from registry import store
from tests.conftest import export_dense_model
from tfx_pipeline import cli
from trainer import evaluate

CLASSES = ["cat", "dog", "owl"]


def metrics_of(pairs: list[tuple[int, int]], classes=CLASSES) -> dict:
    """Real metrics for (true, predicted) index pairs."""
    y_true = np.array([t for t, _ in pairs])
    probabilities = np.full((len(pairs), len(classes)), 0.1)
    probabilities[np.arange(len(pairs)), [p for _, p in pairs]] = 0.8
    return evaluate.classification_metrics(y_true, probabilities, classes)


# cat: 4/4 right; dog: 3/4 right; owl: 1/2 right. Accuracy 0.8.
CANDIDATE = metrics_of([(0, 0)] * 4 + [(1, 1)] * 3 + [(1, 0)] + [(2, 2), (2, 1)])
# cat 4/4, dog 4/4, owl 2/2: the baseline is perfect.
BASELINE = metrics_of([(0, 0)] * 4 + [(1, 1)] * 4 + [(2, 2)] * 2)


def gate_config(**settings) -> schema.GateConfig:
    return schema.GateConfig(**settings)


def by_name(blessing: dict) -> dict[str, dict]:
    return {check["name"]: check for check in blessing["checks"]}


def test_no_thresholds_bless_with_a_note():
    blessing = gate.bless(gate_config(), CANDIDATE)
    assert blessing["blessed"] is True and blessing["checks"] == []
    assert "no evaluation.gate thresholds" in blessing["note"]
    assert blessing["baseline"] is None and blessing["evaluated_at"].endswith("Z")
    assert "reason" not in blessing


def test_absolute_minimums_pass_and_fail_with_their_values():
    blessing = gate.bless(gate_config(min_accuracy=0.75, min_macro_f1=0.9), CANDIDATE)
    checks = by_name(blessing)
    assert checks["accuracy"] == {
        "name": "accuracy",
        "value": pytest.approx(0.8),
        "threshold": 0.75,
        "passed": True,
    }
    assert checks["macro_f1"]["value"] == pytest.approx(CANDIDATE["macro_f1"])
    assert checks["macro_f1"]["passed"] is False
    assert blessing["blessed"] is False
    assert blessing["reason"] == f"macro_f1 {CANDIDATE['macro_f1']:.4f} < 0.9"


def test_a_value_exactly_at_its_threshold_passes():
    blessing = gate.bless(gate_config(min_accuracy=0.8), CANDIDATE)
    assert blessing["blessed"] is True


def test_min_class_recall_checks_the_weakest_tested_class():
    blessing = gate.bless(gate_config(min_class_recall=0.6), CANDIDATE)
    [check] = blessing["checks"]
    assert check["name"] == "min_class_recall" and check["class"] == "owl"
    assert check["value"] == pytest.approx(0.5) and check["passed"] is False
    assert "(class owl)" in blessing["reason"]


def test_min_class_recall_skips_classes_without_test_images():
    no_owls = metrics_of([(0, 0)] * 4 + [(1, 1)] * 3 + [(1, 0)])
    [check] = gate.bless(gate_config(min_class_recall=0.7), no_owls)["checks"]
    assert check["class"] == "dog" and check["value"] == pytest.approx(0.75)
    assert check["passed"] is True and check["untested_classes"] == ["owl"]


def test_per_class_recall_floors():
    blessing = gate.bless(gate_config(class_recall_floors={"cat": 1.0, "owl": 0.9}), CANDIDATE)
    checks = by_name(blessing)
    assert checks["class_recall[cat]"]["passed"] is True
    assert checks["class_recall[owl]"]["value"] == pytest.approx(0.5)
    assert checks["class_recall[owl]"]["passed"] is False
    assert blessing["blessed"] is False and "class_recall[owl] 0.5000 < 0.9" in blessing["reason"]


def test_a_floor_for_a_class_without_test_images_fails_with_a_note():
    no_owls = metrics_of([(0, 0)] * 4 + [(1, 1)] * 4)
    blessing = gate.bless(gate_config(class_recall_floors={"owl": 0.5}), no_owls)
    [check] = blessing["checks"]
    assert check["value"] is None and check["passed"] is False
    assert "no test images of class owl" in blessing["reason"]


def test_a_floor_for_a_class_the_model_does_not_have_is_an_error():
    with pytest.raises(gate.GateError, match=r"class_recall_floors.*\bemu\b.*cat, dog, owl"):
        gate.bless(gate_config(class_recall_floors={"emu": 0.5}), CANDIDATE)


def test_drops_against_a_baseline():
    settings = gate_config(
        baseline="runs/x",
        max_accuracy_drop=0.25,
        max_macro_f1_drop=0.05,
        max_class_recall_drop=0.4,
    )
    summary = {"spec": "runs/x", "accuracy": 1.0}
    blessing = gate.bless(settings, CANDIDATE, BASELINE, summary)
    checks = by_name(blessing)
    accuracy = checks["accuracy_drop"]
    assert accuracy["value"] == pytest.approx(0.2) and accuracy["passed"] is True
    assert accuracy["baseline"] == 1.0 and accuracy["candidate"] == pytest.approx(0.8)
    assert checks["macro_f1_drop"]["passed"] is False
    recall = checks["class_recall_drop"]
    assert recall["class"] == "owl" and recall["value"] == pytest.approx(0.5)
    assert recall["passed"] is False
    assert blessing["blessed"] is False and blessing["baseline"] == summary
    assert "class_recall_drop 0.5000 > 0.4 (0.5000 vs baseline 1.0000)" in blessing["reason"]


def test_no_drop_against_itself_passes_a_zero_threshold():
    settings = gate_config(baseline="x", max_accuracy_drop=0.0, max_class_recall_drop=0.0)
    assert gate.bless(settings, CANDIDATE, CANDIDATE)["blessed"] is True


def test_drop_thresholds_need_a_baseline():
    with pytest.raises(loader.ConfigError, match="evaluation.gate.baseline"):
        loader.load(None, ["evaluation.gate.max_accuracy_drop=0.01"])
    with pytest.raises(gate.GateError, match="no baseline"):
        gate.bless(gate_config(baseline="x", max_accuracy_drop=0.01), CANDIDATE)


# --- real models, through `imgclf evaluate` ---


def evaluate_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_an_untrained_model_against_the_trained_baseline_is_not_blessed(
    trained_digits_run, ingested_digits, tmp_path, capsys
):
    candidate = export_dense_model(tmp_path / "dense", 32, 1, [str(d) for d in range(10)])
    out = tmp_path / "out"

    code, stdout, err = evaluate_cli(
        capsys,
        "--model-path",
        candidate,
        "--test-data",
        ingested_digits.path,
        "--out",
        out,
        "--baseline",
        trained_digits_run.run_dir,
        "--set",
        f"evaluation.gate.baseline={trained_digits_run.run_dir}",
        "--set",
        "evaluation.gate.max_accuracy_drop=0.05",
        "--set",
        "evaluation.gate.class_recall_floors={'0': 0.9}",
    )

    assert code == 0, err  # an unblessed model is a result, not an error
    blessing = json.loads((out / "blessing.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    trained = trained_digits_run.metrics["accuracy"]
    assert blessing["blessed"] is False
    checks = by_name(blessing)
    drop = checks["accuracy_drop"]
    assert drop["baseline"] == pytest.approx(trained, abs=1e-6)  # same images, same figure
    assert drop["candidate"] == metrics["accuracy"] < 0.5
    assert drop["value"] == pytest.approx(trained - metrics["accuracy"])
    assert drop["passed"] is False
    assert checks["class_recall[0]"]["value"] == metrics["per_class"]["0"]["recall"]
    assert blessing["baseline"]["accuracy"] == pytest.approx(trained, abs=1e-6)
    assert blessing["baseline"]["num_examples"] == metrics["num_examples"]
    assert "NOT blessed (class_recall[0] " in stdout and "; accuracy_drop 0." in stdout


@pytest.mark.slow
def test_a_registry_label_as_the_baseline(trained_digits_run, ingested_digits, tmp_path, capsys):
    run = Path(shutil.copytree(trained_digits_run.run_dir, tmp_path / "run"))
    model_store = tmp_path / "store"
    test_data = ["--test-data", ingested_digits.path]
    # Evaluating the run blesses it in its folder, which is what the registry reads.
    assert evaluate_cli(capsys, "--model-path", run, *test_data)[0] == 0
    pushed = store.push(model_store, run, "digits")
    assert pushed.blessed
    store.promote(model_store, "digits", pushed.version, store.PRODUCTION)

    code, stdout, err = evaluate_cli(
        capsys,
        "--model-path",
        run,
        *test_data,
        "--set",
        f"registry.store={model_store}",
        "--set",
        "evaluation.gate.baseline=registry:digits@production",
        "--set",
        "evaluation.gate.max_accuracy_drop=0",
        "--set",
        "evaluation.gate.max_class_recall_drop=0",
    )

    assert code == 0, err
    blessing = json.loads((run / "blessing.json").read_text())
    assert blessing["blessed"] is True and len(blessing["checks"]) == 2
    assert blessing["baseline"]["spec"] == "registry:digits@production"
    assert Path(blessing["baseline"]["model_path"]) == model_store / "digits" / "1"
    assert by_name(blessing)["accuracy_drop"]["value"] == 0

    code, _, err = evaluate_cli(
        capsys,
        "--model-path",
        run,
        *test_data,
        "--baseline",
        "registry:digits@staging",
        "--set",
        f"registry.store={model_store}",
    )
    assert code == 2
    assert "no version labelled 'staging'" in err and "production -> 1" in err
    assert "imgclf registry promote digits <version> --label staging" in err


@pytest.mark.slow
def test_before_a_first_promotion_drop_checks_are_skipped(
    trained_digits_run, ingested_digits, tmp_path, capsys
):
    run = Path(shutil.copytree(trained_digits_run.run_dir, tmp_path / "run"))

    code, _, err = evaluate_cli(
        capsys,
        "--model-path",
        run,
        "--test-data",
        ingested_digits.path,
        "--set",
        f"registry.store={tmp_path / 'empty-store'}",
        "--set",
        "evaluation.gate.baseline=registry:digits@production",
        "--set",
        "evaluation.gate.max_accuracy_drop=0",
        "--set",
        "evaluation.gate.min_accuracy=0.5",
    )

    assert code == 0, err
    blessing = json.loads((run / "blessing.json").read_text())
    assert blessing["blessed"] is True
    assert [check["name"] for check in blessing["checks"]] == ["accuracy"]
    assert [check["name"] for check in blessing["skipped_checks"]] == ["max_accuracy_drop"]
    assert "no baseline yet" in err
