"""evaluator.run: where an evaluation writes (a run's own record is never overwritten by an
evaluation on other data), what it keeps of training, and test-time augmentation recorded."""

import json
from pathlib import Path

import pytest

import cli
from tests.evaluator import tiny_models

pytestmark = pytest.mark.slow  # exports and loads real SavedModels

DIAGNOSIS = "validation accuracy stayed at chance (0.50) while training accuracy reached 0.98"
RUN_RECORD = ("metrics.json", "report.html", "blessing.json", "predictions.jsonl")


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder as the trainer leaves it: export/1, config, history and its own record."""
    run = tmp_path / "runs" / "20260101-000000-greys"
    tiny_models.export_threshold_model(
        run / "export",
        tiny_models.PERFECT,
        metadata={
            "run_id": run.name,
            "dataset_version": "v-greys",
            "config": {"train": {"early_stopping": {"monitor": "val_accuracy"}}},
        },
    )
    (run / "config.yaml").write_text("name: greys\n")
    (run / "history.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n"
        "0,0.9,0.5,0.8,0.5\n1,0.5,0.8,0.6,0.9\n2,0.3,0.9,0.7,0.85\n"
    )
    trained = {"epochs_run": 3, "best_epoch": 1, "diagnoses": [DIAGNOSIS]}
    (run / "run.json").write_text(json.dumps({"status": "completed", "training": trained}))
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.5, **trained}))
    (run / "report.html").write_text("<html>the run's own report</html>")
    (run / "blessing.json").write_text(json.dumps({"blessed": True, "checks": []}))
    (run / "predictions.jsonl").write_text('{"path": "x.png"}\n')
    return run


def evaluate(capsys, *args) -> str:
    code = cli.main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.strip().splitlines()[-1]


def test_a_run_evaluated_on_other_data_keeps_its_own_record(run_dir, tmp_path, capsys):
    greys = tiny_models.write_greys(tmp_path / "greys")
    before = {name: (run_dir / name).read_bytes() for name in RUN_RECORD}

    line = evaluate(capsys, "--model-path", run_dir, "--test-data", greys)

    assert {name: (run_dir / name).read_bytes() for name in RUN_RECORD} == before
    [out] = (run_dir / "evaluations").iterdir()
    assert out.name.endswith("-greys") and out.name[:8].isdigit()
    assert line.endswith(f"-> {out / 'report.html'}")
    assert "(" + str(greys) + "), blessed: accuracy 1.0000 beats always answering" in line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == 1.0 and metrics["num_examples"] == 20
    # What training recorded travels with the evaluation of the run.
    assert metrics["diagnoses"] == [DIAGNOSIS] and metrics["best_epoch"] == 1
    assert metrics["epochs_run"] == 3 and metrics["tta"] == "none"
    assert json.loads((out / "blessing.json").read_text())["blessed"] is True
    report = (out / "report.html").read_text()
    assert 'class="warning"' in report and "⚠ Diagnoses" in report
    assert "validation accuracy stayed at chance (0.50)" in report
    assert "marks epoch 2, the best val_accuracy, on both charts" in report
    assert (out / "loss.png").is_file() and (out / "accuracy.png").is_file()

    # Again in the same second: a folder of its own, not the first one's.
    evaluate(capsys, "--model-path", run_dir, "--test-data", greys)
    assert len(list((run_dir / "evaluations").iterdir())) == 2


def test_out_wins_over_the_evaluation_folder(run_dir, tmp_path, capsys):
    greys = tiny_models.write_greys(tmp_path / "greys")
    line = evaluate(
        capsys, "--model-path", run_dir, "--test-data", greys, "--out", tmp_path / "chosen"
    )
    assert line.endswith(f"-> {tmp_path / 'chosen' / 'report.html'}")
    assert (tmp_path / "chosen" / "blessing.json").is_file()
    assert not (run_dir / "evaluations").exists()


def test_flip_tta_is_recorded_in_metrics_the_report_and_the_line(run_dir, tmp_path, capsys):
    greys = tiny_models.write_greys(tmp_path / "greys")
    out = tmp_path / "out"
    line = evaluate(
        capsys, "--model-path", run_dir, "--test-data", greys, "--out", out, "--tta", "flip"
    )
    assert f"({greys}, tta flip), blessed: " in line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "flip" and metrics["accuracy"] == 1.0  # grey is its own mirror
    assert "test-time augmentation flip" in (out / "report.html").read_text()


def test_training_facts_come_from_run_json_or_an_older_runs_metrics_json(tmp_path):
    from evaluator import run as evaluation_run

    facts = {"epochs_run": 3, "best_epoch": 1, "diagnoses": [DIAGNOSIS]}
    (tmp_path / "run.json").write_text(json.dumps({"training": facts, "metrics": {}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "epochs_run": 9}))
    assert evaluation_run.training_facts(tmp_path) == facts
    # Trained before run.json held them: the trainer then wrote them into metrics.json.
    (tmp_path / "run.json").unlink()
    assert evaluation_run.training_facts(tmp_path) == {"epochs_run": 9}
