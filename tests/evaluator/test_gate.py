"""evaluator.gate: a model must beat always answering the majority class, whatever else is set;
every configured threshold becomes a check in blessing.json; baselines (auto: the production
version in the registry) are evaluated on the same images, from a folder or a registry label."""

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import cli
from configs import loader, schema
from evaluator import gate, run
from registry import store
from tests.conftest import export_dense_model
from tests.evaluator import tiny_models
from trainer import evaluate

CLASSES = ["cat", "dog", "owl"]


def metrics_of(pairs: list[tuple[int, int]], classes=CLASSES) -> dict:
    """Real metrics for (true, predicted) index pairs."""
    y_true = np.array([t for t, _ in pairs])
    probabilities = np.full((len(pairs), len(classes)), 0.1)
    probabilities[np.arange(len(pairs)), [p for _, p in pairs]] = 0.8
    return evaluate.classification_metrics(y_true, probabilities, classes)


# cat: 12/12 right; dog: 9/12 right; owl: 3/6 right. Accuracy 0.8, far above the majority
# rate (0.4, cat) on 30 images, so only the thresholds below decide.
CANDIDATE = metrics_of(([(0, 0)] * 4 + [(1, 1)] * 3 + [(1, 0)] + [(2, 2), (2, 1)]) * 3)
# cat 12/12, dog 12/12, owl 6/6: the baseline is perfect.
BASELINE = metrics_of(([(0, 0)] * 4 + [(1, 1)] * 4 + [(2, 2)] * 2) * 3)


def gate_config(**settings) -> schema.GateConfig:
    return schema.GateConfig(**settings)


def by_name(blessing: dict) -> dict[str, dict]:
    return {check["name"]: check for check in blessing["checks"]}


def test_with_no_thresholds_the_model_must_still_beat_the_majority_class():
    blessing = gate.bless(gate_config(), CANDIDATE)
    [check] = blessing["checks"]
    assert check["name"] == "beats_majority" and check["passed"] is True
    assert check["value"] == pytest.approx(0.8) and check["majority_class"] == "cat"
    assert check["majority_rate"] == pytest.approx(0.4) and check["num_examples"] == 30
    assert check["threshold"] == pytest.approx(0.46)  # 0.4 + 0.1 x (1 - 0.4)
    assert check["correct"] == 24 and check["p_value"] < 1e-5
    assert blessing["blessed"] is True and "note" not in blessing and "reason" not in blessing
    assert blessing["baseline"] is None and blessing["evaluated_at"].endswith("Z")
    assert blessing["summary"].startswith(
        "blessed: accuracy 0.8000 beats always answering 'cat' (0.4000 of the 30 images) by the "
        "required margin (>= 0.4600 and p < 0.01: p = "
    )


def always_answering(index: int, supports: list[int], classes: list[str]) -> dict:
    """Metrics of a model that answers classes[index] whatever the image."""
    return metrics_of(
        [(true, index) for true, count in enumerate(supports) for _ in range(count)], classes
    )


def test_a_chance_level_model_is_refused_with_no_thresholds_set():
    moon = always_answering(0, [25, 25, 25, 25], ["moon", "star", "sun", "cloud"])
    blessing = gate.bless(gate_config(), moon)
    assert blessing["blessed"] is False
    expected = (
        "accuracy 0.2500 does not beat always answering 'moon' (0.2500 of the 100 images) by the "
        "required margin: needs >= 0.3250 and p < 0.01 (p = 0.54)"
    )
    assert blessing["reason"] == expected
    assert blessing["summary"] == f"NOT blessed: {expected}"


def test_the_majority_class_is_the_most_frequent_one_of_the_evaluated_images():
    # 70 of 100 images are sun: 0.7 accuracy is only what always answering sun scores.
    sun = always_answering(2, [10, 10, 70, 10], ["moon", "star", "sun", "cloud"])
    [check] = gate.bless(gate_config(), sun)["checks"]
    assert check["majority_class"] == "sun" and check["majority_rate"] == pytest.approx(0.7)
    assert check["value"] == pytest.approx(0.7) and check["passed"] is False
    assert check["threshold"] == pytest.approx(0.73)


def test_above_the_margin_but_not_significant_on_a_small_test_set_is_refused():
    # 8 of 10 right with two balanced classes: 0.8 >= 0.55, but 8 of 10 by luck has p = 0.055.
    few = metrics_of([(0, 0)] * 4 + [(0, 1)] + [(1, 1)] * 4 + [(1, 0)], ["cat", "dog"])
    blessing = gate.bless(gate_config(), few)
    [check] = blessing["checks"]
    assert check["value"] == pytest.approx(0.8) and check["threshold"] == pytest.approx(0.55)
    assert check["p_value"] == pytest.approx(56 / 1024)  # P(X >= 8), X ~ Binomial(10, 0.5)
    assert blessing["blessed"] is False and "(p = 0.055)" in blessing["reason"]
    # The same rate on 10 times the images is significant.
    many = metrics_of(([(0, 0)] * 4 + [(0, 1)] + [(1, 1)] * 4 + [(1, 0)]) * 10, ["cat", "dog"])
    assert gate.bless(gate_config(), many)["blessed"] is True


@pytest.mark.parametrize("images, blessed", [(10, False), (1000, True)])
def test_a_zero_margin_still_requires_significance(images, blessed):
    # 60% right with two balanced classes: above the majority rate, but by luck on 10 images.
    right, wrong = images * 3 // 10, images // 5
    pairs = [(0, 0)] * right + [(0, 1)] * wrong + [(1, 1)] * right + [(1, 0)] * wrong
    blessing = gate.bless(gate_config(majority_margin=0.0), metrics_of(pairs, ["cat", "dog"]))
    [check] = blessing["checks"]
    assert check["threshold"] == 0.5 and check["value"] == pytest.approx(0.6)
    assert blessing["blessed"] is blessed and (check["p_value"] < 0.01) is blessed


def test_images_of_one_class_cannot_show_a_model_beats_always_answering_it():
    cats = metrics_of([(0, 0)] * 50, ["cat", "dog"])
    blessing = gate.bless(gate_config(), cats)
    assert blessing["blessed"] is False
    assert "all 50 evaluated images are 'cat'" in blessing["reason"]
    assert "evaluate on images of several classes" in blessing["reason"]


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
    _, check = blessing["checks"]
    assert check["name"] == "min_class_recall" and check["class"] == "owl"
    assert check["value"] == pytest.approx(0.5) and check["passed"] is False
    assert "(class owl)" in blessing["reason"]


def test_min_class_recall_skips_classes_without_test_images():
    no_owls = metrics_of([(0, 0)] * 4 + [(1, 1)] * 3 + [(1, 0)])
    check = by_name(gate.bless(gate_config(min_class_recall=0.7), no_owls))["min_class_recall"]
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
    check = by_name(blessing)["class_recall[owl]"]
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


def test_a_baseline_without_drop_thresholds_must_not_be_worse():
    settings = gate_config(baseline="runs/x")
    blessing = gate.bless(settings, CANDIDATE, BASELINE, {"spec": "runs/x"})
    drop = by_name(blessing)["accuracy_drop"]
    assert drop["threshold"] == 0.0 and drop["value"] == pytest.approx(0.2)
    assert blessing["blessed"] is False
    assert "accuracy_drop 0.2000 > 0.0 (0.8000 vs baseline 1.0000)" in blessing["reason"]
    assert gate.bless(settings, BASELINE, BASELINE, {"spec": "runs/x"})["blessed"] is True
    assert gate.bless(settings, BASELINE, CANDIDATE, {"spec": "runs/x"})["blessed"] is True


def test_drop_thresholds_need_a_baseline():
    with pytest.raises(loader.ConfigError, match="evaluation.gate.baseline"):
        loader.load(
            None, ["evaluation.gate.baseline=null", "evaluation.gate.max_accuracy_drop=0.01"]
        )
    with pytest.raises(gate.GateError, match="no baseline"):
        gate.bless(gate_config(baseline="x", max_accuracy_drop=0.01), CANDIDATE)


# --- real models: the default gate and baseline auto ---


@pytest.fixture(scope="module")
def greys(tmp_path_factory) -> Path:
    return tiny_models.write_greys(tmp_path_factory.mktemp("greys"))


@pytest.fixture(scope="module")
def threshold_models(tmp_path_factory) -> dict[str, Path]:
    """SavedModels of tiny_models: perfect, worse (0.8) and always answering dark (0.5)."""
    root = tmp_path_factory.mktemp("threshold_models")
    thresholds = {
        "perfect": tiny_models.PERFECT,
        "worse": tiny_models.WORSE,
        "always_dark": tiny_models.ALWAYS_DARK,
    }
    return {
        name: tiny_models.export_threshold_model(root / name, threshold)
        for name, threshold in thresholds.items()
    }


@pytest.fixture(scope="module")
def production_store(tmp_path_factory, threshold_models) -> Path:
    """A registry store whose model `greys` has the perfect model as its production version."""
    model_store = tmp_path_factory.mktemp("store")
    source = Path(shutil.copytree(threshold_models["perfect"].parent, model_store.parent / "src"))
    (source / "blessing.json").write_text(json.dumps({"blessed": True}))
    pushed = store.push(model_store, source, "greys")
    store.promote(model_store, "greys", pushed.version, store.PRODUCTION)
    return model_store


def evaluate_greys(model: Path | str, greys: Path, out: Path, model_store: Path) -> dict:
    cfg = loader.load(None, [f"registry.store={model_store}", "serving.model_name=greys"])
    result = run.evaluate(cfg, str(model), str(greys), out_dir=out, progress=False)
    assert json.loads((out / "blessing.json").read_text()) == result.blessing
    return result.blessing


@pytest.mark.slow
def test_a_chance_level_savedmodel_is_refused_by_the_default_gate(
    threshold_models, greys, tmp_path, capsys
):
    blessing = evaluate_greys(threshold_models["always_dark"], greys, tmp_path, tmp_path / "none")
    assert blessing["blessed"] is False
    assert blessing["reason"] == (
        "accuracy 0.5000 does not beat always answering 'dark' (0.5000 of the 20 images) by the "
        "required margin: needs >= 0.5500 and p < 0.01 (p = 0.59)"
    )
    report = (tmp_path / "report.html").read_text()
    assert "✗ Not blessed" in report
    # The evaluation says why in words too: one answer, whatever the image.
    one_class = "every one of the 20 images was predicted as 'dark': the model ignores its input"
    assert json.loads((tmp_path / "metrics.json").read_text())["diagnoses"] == [one_class]
    assert f"evaluate: warning: {one_class}" in capsys.readouterr().err
    warning = report[report.index('<div class="warning">') :]
    assert warning.index(html.escape(one_class)) < warning.index("</div>")


@pytest.mark.slow
def test_auto_baseline_refuses_a_model_worse_than_production(
    threshold_models, greys, production_store, tmp_path
):
    blessing = evaluate_greys(threshold_models["worse"], greys, tmp_path, production_store)
    checks = by_name(blessing)
    assert checks["beats_majority"]["passed"] is True  # 16 of 20: clearly above chance
    drop = checks["accuracy_drop"]
    assert (drop["candidate"], drop["baseline"]) == (pytest.approx(0.8), 1.0)
    assert drop["threshold"] == 0.0 and drop["passed"] is False
    assert blessing["blessed"] is False and "accuracy_drop 0.2000 > 0.0" in blessing["reason"]
    assert blessing["baseline"]["spec"] == "registry:greys@production"
    assert Path(blessing["baseline"]["model_path"]) == production_store / "greys" / "1"


@pytest.mark.slow
def test_auto_baseline_blesses_a_model_as_good_as_production(
    threshold_models, greys, production_store, tmp_path
):
    # The same weights exported again: another model as good as production, not production.
    again = tiny_models.export_threshold_model(tmp_path / "again", tiny_models.PERFECT)
    blessing = evaluate_greys(again, greys, tmp_path / "out", production_store)
    assert blessing["blessed"] is True
    assert by_name(blessing)["accuracy_drop"]["value"] == 0.0
    assert blessing["summary"].startswith("blessed: accuracy 1.0000 beats always answering")
    assert "accuracy_drop 0.0000 <= 0.0 (1.0000 vs baseline 1.0000)" in blessing["summary"]


@pytest.mark.slow
def test_auto_baseline_is_skipped_for_the_production_model_itself(
    greys, production_store, tmp_path
):
    blessing = evaluate_greys("registry:greys@production", greys, tmp_path, production_store)
    assert blessing["blessed"] is True and blessing["baseline"] is None
    assert blessing["no_baseline"] == "registry:greys@production is the model evaluated"
    assert [check["name"] for check in blessing["checks"]] == ["beats_majority"]


@pytest.mark.slow
def test_auto_baseline_with_other_classes_is_no_baseline(threshold_models, greys, tmp_path):
    model_store = tmp_path / "store"
    other = export_dense_model(tmp_path / "other", tiny_models.SIDE, 1, ["cat", "dog"])
    (other.parent / "blessing.json").write_text(json.dumps({"blessed": True}))
    store.promote(
        model_store, "greys", store.push(model_store, other, "greys").version, "production"
    )

    blessing = evaluate_greys(threshold_models["perfect"], greys, tmp_path / "out", model_store)
    assert blessing["blessed"] is True and blessing["baseline"] is None
    assert blessing["no_baseline"] == "registry:greys@production has other classes (cat, dog)"


@pytest.mark.slow
def test_auto_baseline_without_a_registry_store_judges_the_model_alone(
    threshold_models, greys, tmp_path, capsys
):
    blessing = evaluate_greys(threshold_models["perfect"], greys, tmp_path, tmp_path / "no-store")
    assert blessing["blessed"] is True and blessing["baseline"] is None
    assert blessing["no_baseline"].startswith("registry:greys@production: ")
    assert "no baseline to compare with (registry:greys@production: " in blessing["summary"]
    assert "evaluate: no baseline yet (registry:greys@production" in capsys.readouterr().err


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
    # The untrained model is near chance: refused first for that, then for each threshold.
    assert checks["beats_majority"]["passed"] is False
    assert "NOT blessed: accuracy 0." in stdout and "does not beat always answering" in stdout
    assert "; class_recall[0] " in stdout and "; accuracy_drop 0." in stdout


@pytest.mark.slow
def test_a_registry_label_as_the_baseline(trained_digits_run, ingested_digits, tmp_path, capsys):
    run_dir = Path(shutil.copytree(trained_digits_run.run_dir, tmp_path / "run"))
    model_store = tmp_path / "store"
    test_data = ["--test-data", ingested_digits.path]
    # Evaluating the run blesses it in its folder, which is what the registry reads.
    assert evaluate_cli(capsys, "--model-path", run_dir, *test_data)[0] == 0
    pushed = store.push(model_store, run_dir, "digits")
    assert pushed.blessed
    store.promote(model_store, "digits", pushed.version, store.PRODUCTION)

    code, stdout, err = evaluate_cli(
        capsys,
        "--model-path",
        run_dir,
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
    blessing = json.loads((run_dir / "blessing.json").read_text())
    assert blessing["blessed"] is True
    assert [check["name"] for check in blessing["checks"]] == [
        "beats_majority",
        "accuracy_drop",
        "class_recall_drop",
    ]
    assert blessing["baseline"]["spec"] == "registry:digits@production"
    assert Path(blessing["baseline"]["model_path"]) == model_store / "digits" / "1"
    assert by_name(blessing)["accuracy_drop"]["value"] == 0

    code, _, err = evaluate_cli(
        capsys,
        "--model-path",
        run_dir,
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
    run_dir = Path(shutil.copytree(trained_digits_run.run_dir, tmp_path / "run"))

    code, _, err = evaluate_cli(
        capsys,
        "--model-path",
        run_dir,
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
    blessing = json.loads((run_dir / "blessing.json").read_text())
    assert blessing["blessed"] is True
    assert [check["name"] for check in blessing["checks"]] == ["beats_majority", "accuracy"]
    assert [check["name"] for check in blessing["skipped_checks"]] == ["max_accuracy_drop"]
    assert blessing["no_baseline"].startswith("registry:digits@production: ")
    assert "no baseline yet" in err
