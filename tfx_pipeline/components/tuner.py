"""Tuner (with pipeline.tune): a KerasTuner search on the input dataset version; its output is
a copy of the best trial's config, which the Trainer then trains."""

import shutil
from pathlib import Path

from configs import schema
from tfx_pipeline import artifact_types, component, config_pinning


def search_mode(cfg: schema.Config) -> str:
    """`auto` resumes a search of this very config and dataset (one a crash interrupted); a
    search found there for another dataset version or config starts over, as the Tuner's cache
    key already says that something it reads changed."""
    from trainer.tuning import search, trials

    started = search.read_search_file(trials.search_directory(cfg))
    if started is None:
        return "auto"
    if started.get("dataset_version") != cfg.data.version:
        return "overwrite"
    try:
        search.check_unchanged(trials.prepare(cfg, cfg.data.version), started)
    except search.TuningError:
        return "overwrite"
    return "auto"


def run(ctx: component.Context) -> dict:
    from trainer.tuning import search

    examples = ctx.inputs["examples"]
    cfg = config_pinning.pinned_config(ctx.cfg, examples)
    outcome = search.run(cfg, search_mode(cfg))
    if outcome is None:
        raise component.ComponentError(
            "the Tuner ran as a KerasTuner worker (KERASTUNER_TUNER_ID without 'chief'): run the "
            "pipeline on the chief, or unset KERASTUNER_ORACLE_IP"
        )
    best = outcome.best
    if best is None or outcome.best_config is None:
        raise component.ComponentError(
            f"no trial of search {outcome.directory.name} completed, so there is no best "
            f"config (trials and their errors in {outcome.directory})"
        )
    # A copy per execution: a later search under the same name must not change what a cached
    # Tuner execution handed to the Trainer.
    path = shutil.copy(
        outcome.best_config, ctx.output_dir("Tuner") / Path(outcome.best_config).name
    )
    hyperparameters = artifact_types.artifact(
        artifact_types.HYPERPARAMETERS,
        Path(path).absolute(),
        trial_id=best.trial_id,
        objective=outcome.objective,
        objective_value=best.score,
        values=best.values,
        dataset_version=examples.properties["version"],
        search_directory=str(Path(outcome.directory).absolute()),
    )
    hyperparameters.fingerprint = component.digest(
        {
            "type": artifact_types.HYPERPARAMETERS,
            "properties": hyperparameters.properties,
            "config": Path(path).read_text(encoding="utf-8"),
        }
    )
    return {"hyperparameters": hyperparameters}
