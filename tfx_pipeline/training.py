"""`imgclf train` as users run it: the trainer, then the evaluator on the run, then the run's
record and MLflow run brought up to date with what the evaluation added."""

from configs import schema


def train_and_evaluate(cfg: schema.Config, dry_run: bool = False):
    """The trainer's RunResult (None on a dry run); the chief also leaves the evaluation
    (metrics.json, charts, report.html, blessing.json) in the run folder."""
    from evaluator import cli as evaluator_cli
    from tracking import mlflow_backend, records
    from trainer import task

    result = task.run(cfg, dry_run=dry_run)
    # Only the chief has an export; other workers and dry runs stop here.
    if result is None or result.export_dir is None:
        return result
    evaluation = evaluator_cli.evaluate_run(cfg, result.run_dir, result.metrics["dataset_version"])
    records.refresh(result.run_dir)
    logged = mlflow_backend.log_evaluation(cfg.tracking.mlflow, result.run_dir)
    if logged:
        print(logged)
    result.metrics.update(evaluation.metrics)
    if result.run_mirror is not None:
        result.run_mirror.push()
        print(f"evaluate: report synced to {result.run_mirror.url}")
    return result
