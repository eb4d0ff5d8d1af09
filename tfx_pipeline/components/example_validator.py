"""ExampleValidator: a dataset version's statistics checked alone and against the previous
version's (transforms/dataset_validation.py); a failing check stops the pipeline."""

import json
import os
from pathlib import Path

from configs import schema
from core import atomic_write
from tfx_pipeline import artifact_types, component, metadata


def resolve_previous_statistics(cfg: schema.Config, store: metadata.Store, inputs) -> dict:
    """The newest statistics recorded for another dataset version: what drift is judged against."""
    current = inputs["statistics"].properties["version"]
    for stats in store.artifacts(artifact_types.STATISTICS):
        if stats.properties.get("version") != current and os.path.exists(stats.uri):
            return {"previous_statistics": stats}
    return {"previous_statistics": None}


def run(ctx: component.Context) -> dict:
    from transforms import dataset_validation

    current = json.loads(Path(ctx.inputs["statistics"].uri).read_text(encoding="utf-8"))
    previous_stats = ctx.inputs.get("previous_statistics")
    previous = None
    if previous_stats is not None:
        previous = json.loads(Path(previous_stats.uri).read_text(encoding="utf-8"))
    report = dataset_validation.validate_examples(current, previous, ctx.cfg.pipeline.validation)
    path = atomic_write.write_json(
        ctx.output_dir("ExampleValidator") / "anomalies.json", report, sort_keys=True
    )
    if not report["passed"]:
        errors = [a["message"] for a in report["anomalies"] if a.get("severity") == "error"]
        raise component.ComponentError(
            f"dataset {current['version']} failed validation against "
            f"{previous['version'] if previous else 'nothing'}: {'; '.join(errors)} (all "
            f"anomalies in {path}; relax pipeline.validation to accept them)"
        )
    return {
        "anomalies": artifact_types.artifact(
            artifact_types.ANOMALIES,
            path,
            version=current["version"],
            previous=previous and previous["version"],
            passed=report["passed"],
            anomalies=len(report["anomalies"]),
        )
    }
