"""The one train -> export -> evaluate -> record flow. `imgclf train`, `python -m trainer.task`
and the pipeline's Trainer and Evaluator components all run these steps; a tuning trial runs
the trainer alone (no SavedModel per trial: best.yaml is trained through this flow).

1. train: the trainer's run folder, model.keras, and what training found in run.json;
2. export: the SavedModel, `<run>/export/<n>/` (the chief only);
3. evaluate: the evaluator scores the export on the dataset's test split, the one time the
   test split is predicted, and writes the run's metrics.json (training's facts beside the test
   figures), charts, report.html and blessing.json;
4. record: run.json and the run's MLflow run take what the evaluation added, and a run folder
   in a bucket gets the new files.
"""

import dataclasses
from pathlib import Path

from configs import schema
from core import locations
from trainer import mirror, task


def run(cfg: schema.Config, dry_run: bool = False) -> task.RunResult | None:
    """Every step; the trainer's RunResult with the evaluation's metrics (None on a dry run)."""
    result = train_and_export(cfg, dry_run)
    if result is None or result.export_dir is None:
        return result
    from transforms import dataset_store

    # The version's location (a bucket URL stays one): the evaluator records it and reads its
    # local copy.
    version_dir = dataset_store.resolve_version_dir(
        cfg.data.output_dir, result.training["dataset_version"], cfg.data
    )
    evaluation = evaluate_and_record(cfg, result.run_dir, version_dir, run_mirror=result.run_mirror)
    return dataclasses.replace(result, metrics=evaluation.metrics)


def train_and_export(cfg: schema.Config, dry_run: bool = False) -> task.RunResult | None:
    """Steps 1 and 2; workers other than the chief (and dry runs) stop after training."""
    from artifacts import export

    result = task.run(cfg, dry_run=dry_run)
    if result is None or result.model is None:
        return result
    from tracking import records

    export_dir = export.export_trained_model(
        cfg,
        result.model,
        result.run_dir,
        result.training["class_names"],
        result.training["dataset_version"],
    )
    records.refresh(result.run_dir)  # run.json lists the export among the run's artefacts
    print(f"export: SavedModel in {export_dir}")
    if result.run_mirror is not None:
        result.run_mirror.push()
    return dataclasses.replace(result, export_dir=export_dir)


def evaluate_and_record(
    cfg: schema.Config,
    run_dir: Path,
    version_dir: str,
    baseline: str | None = None,
    run_mirror: mirror.RunMirror | None = None,
):
    """Steps 3 and 4 for a run folder holding an export, on the test split of the dataset
    version in `version_dir`: the evaluator's Result."""
    from evaluator import run as evaluation_run
    from tracking import mlflow_backend, records

    evaluation = evaluation_run.evaluate(cfg, str(run_dir), version_dir, "test", run_dir, baseline)
    print(evaluation.line())
    records.refresh(run_dir)
    logged = mlflow_backend.log_evaluation(cfg.tracking.mlflow, run_dir)
    if logged:
        print(logged)
    if run_mirror is None and locations.is_url(cfg.train.runs_dir):
        run_mirror = mirror.RunMirror(cfg.train.runs_dir).attach(run_dir)
    if run_mirror is not None:
        run_mirror.push()
        print(f"evaluate: report synced to {run_mirror.url}")
    return evaluation
