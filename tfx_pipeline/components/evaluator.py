"""Evaluator: the Trainer's export scored on the dataset version's test split and judged by the
gate (against the production model with gate.baseline auto), through the one evaluate -> record
flow (tfx_pipeline/flow.py)."""

from pathlib import Path

from configs import schema
from core import run_layout
from tfx_pipeline import artifact_types, component
from tfx_pipeline.components import pusher


def production_version(cfg: schema.Config):
    """The registry version labelled production of the pushed model, or None."""
    from registry import errors as registry_errors
    from registry import store as registry_store

    if not Path(cfg.registry.store).is_dir():
        return None
    try:
        versions = registry_store.list_versions(cfg.registry.store, pusher.push_model_name(cfg))
    except registry_errors.NotFound:  # nothing pushed under this name yet
        return None
    return next((v for v in versions if "production" in v.labels), None)


def resolve_baseline(cfg: schema.Config, store, inputs) -> dict:
    """gate.baseline when it names a model; with `auto`, the production model (when it is not
    this very model), found here so that a moved label re-runs the Evaluator; null: none."""
    baseline = cfg.evaluation.gate.baseline
    if baseline is None:
        return {"baseline": None}
    if baseline != "auto":
        spec = artifact_types.artifact(artifact_types.REGISTRY_MODEL, None, spec=baseline)
        spec.fingerprint = component.digest({"spec": baseline})
        return {"baseline": spec}
    version = production_version(cfg)
    if version is None or version.run_id == inputs["model"].properties["run_id"]:
        return {"baseline": None}
    spec = f"registry:{version.model}@production"
    found = artifact_types.artifact(
        artifact_types.REGISTRY_MODEL,
        version.path,
        spec=spec,
        model=version.model,
        version=version.version,
    )
    found.fingerprint = component.digest({"model": version.model, "version": version.version})
    return {"baseline": found}


def run(ctx: component.Context) -> dict:
    from tfx_pipeline import flow

    model, examples = ctx.inputs["model"], ctx.inputs["examples"]
    baseline = ctx.inputs.get("baseline")
    spec = baseline.properties["spec"] if baseline else None
    if spec == ctx.cfg.evaluation.gate.baseline:
        # Left to evaluate() as the configured baseline: before the first promotion there is
        # nothing labelled, and the first model is then judged on its absolute checks alone.
        spec = None
    run_dir = Path(model.properties["run_dir"])
    result = flow.evaluate_and_record(ctx.cfg, run_dir, examples.uri, spec)
    blessing = result.blessing
    return {
        "evaluation": artifact_types.artifact(
            artifact_types.EVALUATION,
            run_dir / run_layout.METRICS,
            accuracy=result.metrics["accuracy"],
            macro_f1=result.metrics.get("macro_f1"),
            num_examples=result.metrics["num_examples"],
        ),
        "blessing": artifact_types.artifact(
            artifact_types.BLESSING,
            run_dir / run_layout.BLESSING,
            blessed=blessing["blessed"],
            reason=blessing.get("reason"),
            run_id=model.properties["run_id"],
        ),
    }
