"""Trainer: the run's (or the Tuner's best) config trained and exported on the input dataset
version, through the one train -> export flow (tfx_pipeline/flow.py)."""

from pathlib import Path

from tfx_pipeline import artifact_types, component, config_pinning


def run(ctx: component.Context) -> dict:
    from tfx_pipeline import flow

    examples = ctx.inputs["examples"]
    hyperparameters = ctx.inputs.get("hyperparameters")
    cfg = ctx.cfg
    if hyperparameters is not None:
        cfg = config_pinning.tuned_config(ctx.cfg, hyperparameters)
    result = flow.train_and_export(config_pinning.pinned_config(cfg, examples))
    if result is None or result.export_dir is None:
        raise component.ComponentError("the Trainer produced no export (not the chief worker?)")
    return {
        "model": artifact_types.artifact(
            artifact_types.MODEL,
            Path(result.export_dir).absolute(),
            run_id=Path(result.run_dir).name,
            run_dir=str(Path(result.run_dir).absolute()),
            dataset_version=examples.properties["version"],
        )
    }
