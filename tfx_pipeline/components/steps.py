"""The pipeline's components: each declares its artifacts and config keys and calls one step."""

import json
import logging
import os
import shutil
from pathlib import Path

from configs import loader, schema
from core import jsonio
from tfx_pipeline import component as component_lib
from tfx_pipeline import metadata
from tfx_pipeline.component import Component, ComponentError, Context

log = logging.getLogger(__name__)

# Artifact types.
EXTERNAL_SOURCE = "ExternalSource"
EXAMPLES = "Examples"
STATISTICS = "ExampleStatistics"
ANOMALIES = "ExampleAnomalies"
HYPERPARAMETERS = "HyperParameters"
MODEL = "Model"
REGISTRY_MODEL = "RegistryModel"
EVALUATION = "ModelEvaluation"
BLESSING = "ModelBlessing"
INFRA_BLESSING = "InfraBlessing"
PUSHED_MODEL = "PushedModel"
PREDICTIONS = "BulkPredictions"

# Keys only training reads: changing them must not re-ingest.
TRAINING_ONLY_DATA_KEYS = (
    "version",
    "image_size",
    "resize",
    "crop_fraction",
    "channels",
    "batch_size",
    "shuffle_buffer",
)
# What the Trainer (and the Tuner, which trains) reads; ingest-only data keys are already in the
# examples' fingerprint.
TRAINER_KEYS = ("name", "seed", "data", "augment", "model", "optimizer", "train")
TRAINER_EXCLUDE = tuple(
    f"data.{key}"
    for key in schema.DataConfig.model_fields
    if key not in TRAINING_ONLY_DATA_KEYS or key == "version"
)
# Keys of a run that the pipeline decides, whatever the tuned best.yaml says.
PIPELINE_OWN_KEYS = (
    "train.runs_dir",
    "train.run_id",
    "serving",
    "registry",
    "evaluation",
    "tracking",
    "tuning",
    "pipeline",
)


def artifact(type_: str, uri, **properties) -> metadata.Artifact:
    return metadata.Artifact(type_, None if uri is None else str(uri), properties)


def push_model_name(cfg: schema.Config) -> str:
    return cfg.pipeline.push.model or cfg.serving.model_name


# ExampleGen ------------------------------------------------------------------------------------
def source_fingerprint(source: str, data_cfg: schema.DataConfig) -> str:
    """What a source holds now, cheaply: every object's name, size and modification stamp.

    Local trees are walked; a bucket (s3://, gs://, ...) or URL is listed through the same
    filesystem layer ingest reads with (an object's ETag or modification time). `tfds:` names and
    a listing that fails (logged) fall back to the URI: re-ingest those with --no-cache.
    """
    from transforms.sources import storage

    if source.startswith("tfds:"):
        return component_lib.digest({"uri": source})
    try:
        fs, path = storage.filesystem(source, data_cfg.model_copy(update={"source": source}))
        if fs.isdir(path):
            found = fs.find(path, detail=True)
        else:
            found = {path: fs.info(path)}
    except Exception as error:  # noqa: BLE001 - any listing failure means "known by URI only"
        log.warning("cannot list %s to fingerprint it (%s); known by its URI only", source, error)
        return component_lib.digest({"uri": source})
    return component_lib.digest(
        [[name, info.get("size"), stamp_of(info)] for name, info in sorted(found.items())]
    )


def stamp_of(info: dict) -> str | None:
    """What changes when an object is rewritten, whichever filesystem described it."""
    for key in ("mtime", "ETag", "LastModified", "etag", "md5Hash", "updated", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return None


def external_source(location: str, data_cfg: schema.DataConfig) -> metadata.Artifact:
    source = artifact(EXTERNAL_SOURCE, location)
    source.fingerprint = source_fingerprint(location, data_cfg)
    return source


def resolve_source(cfg: schema.Config, store, inputs) -> dict:
    return {"source": external_source(cfg.data.source, cfg.data)}


def run_example_gen(ctx: Context) -> dict:
    from transforms.beam import ingest

    result = ingest.run(ctx.cfg.data)
    info = result.dataset
    examples = artifact(
        EXAMPLES,
        Path(result.path).absolute(),
        version=result.version,
        source=info["source"],
        written=info["written"],
        splits={split: s["count"] for split, s in info["splits"].items()},
    )
    # The version is a hash of the content: an identical re-ingest keeps downstream cached.
    examples.fingerprint = component_lib.digest({"type": EXAMPLES, "version": result.version})
    return {"examples": examples}


# StatisticsGen and ExampleValidator ------------------------------------------------------------
def run_statistics_gen(ctx: Context) -> dict:
    from transforms import dataset_info

    examples = ctx.inputs["examples"]
    info = dataset_info.load(examples.uri)
    stats = artifact(
        STATISTICS,
        Path(examples.uri) / dataset_info.DATASET_JSON,
        version=info["version"],
        num_classes=info["num_classes"],
        class_counts=info["class_counts"],
        imbalance_ratio=info["imbalance_ratio"],
        channel_mean=info["stats"]["channel_mean"],
    )
    return {"statistics": stats}


def resolve_previous_statistics(cfg: schema.Config, store: metadata.Store, inputs) -> dict:
    """The newest statistics recorded for another dataset version: what drift is judged against."""
    current = inputs["statistics"].properties["version"]
    for stats in store.artifacts(STATISTICS):
        if stats.properties.get("version") != current and os.path.exists(stats.uri):
            return {"previous_statistics": stats}
    return {"previous_statistics": None}


def run_example_validator(ctx: Context) -> dict:
    from tfx_pipeline.components import validation

    current = json.loads(Path(ctx.inputs["statistics"].uri).read_text(encoding="utf-8"))
    previous_stats = ctx.inputs.get("previous_statistics")
    previous = None
    if previous_stats is not None:
        previous = json.loads(Path(previous_stats.uri).read_text(encoding="utf-8"))
    report = validation.validate_examples(current, previous, ctx.cfg.pipeline.validation)
    path = jsonio.write_json(
        ctx.output_dir("ExampleValidator") / "anomalies.json", report, sort_keys=True
    )
    if not report["passed"]:
        errors = [a["message"] for a in report["anomalies"] if a.get("severity") == "error"]
        raise ComponentError(
            f"dataset {current['version']} failed validation against "
            f"{previous['version'] if previous else 'nothing'}: {'; '.join(errors)} (all "
            f"anomalies in {path}; relax pipeline.validation to accept them)"
        )
    return {
        "anomalies": artifact(
            ANOMALIES,
            path,
            version=current["version"],
            previous=previous and previous["version"],
            passed=report["passed"],
            anomalies=len(report["anomalies"]),
        )
    }


# Tuner and Trainer -----------------------------------------------------------------------------
def pinned_config(cfg: schema.Config, examples: metadata.Artifact) -> schema.Config:
    """A copy of `cfg` reading exactly the input dataset version, whatever 'latest' says now."""
    cfg = cfg.model_copy(deep=True)
    cfg.data.output_dir = str(Path(examples.uri).parent)
    cfg.data.version = examples.properties["version"]
    return cfg


def tuner_mode(cfg: schema.Config) -> str:
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


def run_tuner(ctx: Context) -> dict:
    from trainer.tuning import search

    examples = ctx.inputs["examples"]
    cfg = pinned_config(ctx.cfg, examples)
    outcome = search.run(cfg, tuner_mode(cfg))
    if outcome is None:
        raise ComponentError(
            "the Tuner ran as a KerasTuner worker (KERASTUNER_TUNER_ID without 'chief'): run the "
            "pipeline on the chief, or unset KERASTUNER_ORACLE_IP"
        )
    best = outcome.best
    if best is None or outcome.best_config is None:
        raise ComponentError(
            f"no trial of search {outcome.directory.name} completed, so there is no best "
            f"config (trials and their errors in {outcome.directory})"
        )
    # A copy per execution: a later search under the same name must not change what a cached
    # Tuner execution handed to the Trainer.
    path = shutil.copy(
        outcome.best_config, ctx.output_dir("Tuner") / Path(outcome.best_config).name
    )
    hyperparameters = artifact(
        HYPERPARAMETERS,
        Path(path).absolute(),
        trial_id=best.trial_id,
        objective=outcome.objective,
        objective_value=best.score,
        values=best.values,
        dataset_version=examples.properties["version"],
        search_directory=str(Path(outcome.directory).absolute()),
    )
    hyperparameters.fingerprint = component_lib.digest(
        {
            "type": HYPERPARAMETERS,
            "properties": hyperparameters.properties,
            "config": Path(path).read_text(encoding="utf-8"),
        }
    )
    return {"hyperparameters": hyperparameters}


def tuned_config(cfg: schema.Config, hyperparameters: metadata.Artifact) -> schema.Config:
    """The Tuner's best config, with the keys the pipeline decides taken from `cfg`."""
    tuned = loader.to_dict(loader.load(hyperparameters.uri))
    own = loader.to_dict(cfg)
    for key in PIPELINE_OWN_KEYS:
        head, _, last = key.rpartition(".")
        target = component_lib.lookup(tuned, head, copy=False) if head else tuned
        target[last] = component_lib.lookup(own, key)
    return loader.validate(tuned)


def run_trainer(ctx: Context) -> dict:
    from tfx_pipeline import flow

    examples = ctx.inputs["examples"]
    hyperparameters = ctx.inputs.get("hyperparameters")
    cfg = ctx.cfg if hyperparameters is None else tuned_config(ctx.cfg, hyperparameters)
    result = flow.train_and_export(pinned_config(cfg, examples))
    if result is None or result.export_dir is None:
        raise ComponentError("the Trainer produced no export (not the chief worker?)")
    return {
        "model": artifact(
            MODEL,
            Path(result.export_dir).absolute(),
            run_id=Path(result.run_dir).name,
            run_dir=str(Path(result.run_dir).absolute()),
            dataset_version=examples.properties["version"],
        )
    }


# Evaluator -------------------------------------------------------------------------------------
def production_version(cfg: schema.Config):
    """The registry version labelled production of the pushed model, or None."""
    from registry import errors as registry_errors
    from registry import store as registry_store

    if not Path(cfg.registry.store).is_dir():
        return None
    try:
        versions = registry_store.list_versions(cfg.registry.store, push_model_name(cfg))
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
        spec = artifact(REGISTRY_MODEL, None, spec=baseline)
        spec.fingerprint = component_lib.digest({"spec": baseline})
        return {"baseline": spec}
    version = production_version(cfg)
    if version is None or version.run_id == inputs["model"].properties["run_id"]:
        return {"baseline": None}
    spec = f"registry:{version.model}@production"
    found = artifact(
        REGISTRY_MODEL, version.path, spec=spec, model=version.model, version=version.version
    )
    found.fingerprint = component_lib.digest({"model": version.model, "version": version.version})
    return {"baseline": found}


def run_evaluator(ctx: Context) -> dict:
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
        "evaluation": artifact(
            EVALUATION,
            run_dir / "metrics.json",
            accuracy=result.metrics["accuracy"],
            macro_f1=result.metrics.get("macro_f1"),
            num_examples=result.metrics["num_examples"],
        ),
        "blessing": artifact(
            BLESSING,
            run_dir / "blessing.json",
            blessed=blessing["blessed"],
            reason=blessing.get("reason"),
            run_id=model.properties["run_id"],
        ),
    }


# InfraValidator and Pusher ---------------------------------------------------------------------
def run_infra_validator(ctx: Context) -> dict:
    from tfx_pipeline.components import infra

    model = ctx.inputs["model"]
    report = infra.infra_validate(
        Path(model.uri), ctx.cfg.pipeline.infra_validation, push_model_name(ctx.cfg)
    )
    path = jsonio.write_json(
        ctx.output_dir("InfraValidator") / "infra_blessing.json", report, sort_keys=True
    )
    keys = ("passed", "p50_ms", "p99_ms", "requests", "errors", "budget_ms", "reason")
    return {"infra_blessing": artifact(INFRA_BLESSING, path, **{k: report.get(k) for k in keys})}


def run_pusher(ctx: Context) -> dict:
    from registry import store as registry_store

    model, blessing = ctx.inputs["model"], ctx.inputs["blessing"]
    infra_blessing = ctx.inputs.get("infra_blessing")
    name, label = push_model_name(ctx.cfg), ctx.cfg.pipeline.push.label
    lineage = {
        "model": name,
        "run_id": model.properties["run_id"],
        "dataset_version": model.properties["dataset_version"],
    }
    reason = None
    if not blessing.properties["blessed"]:
        reason = f"not blessed ({blessing.properties.get('reason')})"
    elif infra_blessing is not None and not infra_blessing.properties["passed"]:
        reason = "infra validation failed"
    if reason is not None:
        print(f"pusher: {name} not pushed: {reason}")
        return {
            "pushed_model": artifact(PUSHED_MODEL, None, pushed=False, reason=reason, **lineage)
        }
    store = ctx.cfg.registry.store
    version = pushed_before(store, name, model.uri)
    if version is None:
        version = registry_store.push(store, model.uri, name)
        done = "pushed"
    else:
        done = "was already in the store"
    if label:
        registry_store.promote(store, name, version.version, label)
    print(f"pusher: {name} version {version.version} {done}" + f", labelled {label}" * bool(label))
    pushed = artifact(
        PUSHED_MODEL,
        Path(version.path).absolute(),
        pushed=True,
        version=version.version,
        label=label,
        **lineage,
    )
    return {"pushed_model": pushed}


def pushed_before(store: str, name: str, export_dir: str):
    """The active version of `name` copied from `export_dir`, or None.

    The Pusher re-runs whenever its blessing does, e.g. after the production label moved and the
    Evaluator judged the same model against another baseline: the model is then labelled again,
    not copied into a new version.
    """
    from registry import errors as registry_errors
    from registry import sources
    from registry import store as registry_store

    source = str(sources.find_export(export_dir))
    try:
        versions = registry_store.list_versions(store, name)
    except registry_errors.NotFound:
        return None
    same = [v for v in versions if v.source == source and v.status == registry_store.ACTIVE]
    return same[-1] if same else None


# BulkInferrer ----------------------------------------------------------------------------------
def resolve_bulk_source(cfg: schema.Config, store, inputs) -> dict:
    return {"images": external_source(cfg.pipeline.bulk_inference.source, cfg.data)}


def run_bulk_inferrer(ctx: Context) -> dict:
    from tfx_pipeline.components import bulk_inference

    pushed, model = ctx.inputs["pushed_model"], ctx.inputs["model"]
    source = ctx.cfg.pipeline.bulk_inference.source
    if not pushed.properties["pushed"]:
        note = f"nothing was pushed ({pushed.properties.get('reason')}); {source} not classified"
        print(f"bulk inference: {note}")
        return {"predictions": artifact(PREDICTIONS, None, note=note, source=source)}
    output = ctx.cfg.pipeline.bulk_inference.output
    output = output or str(Path(model.properties["run_dir"]) / "bulk_inference")
    counts = bulk_inference.run_bulk_inference(Path(pushed.uri), source, output, ctx.cfg)
    predictions = artifact(
        PREDICTIONS,
        Path(output).absolute() if "://" not in output else output,
        source=source,
        format=ctx.cfg.pipeline.bulk_inference.format,
        images=counts["images"],
        errors=counts["errors"],
        model=pushed.properties["model"],
        version=pushed.properties["version"],
    )
    return {"predictions": predictions}


def build_components(tune: bool = False) -> list[Component]:
    """The pipeline, in order: ingest, statistics, validation, (with pipeline.tune) a
    hyperparameter search, training, evaluation, infra validation, push, and (with
    pipeline.bulk_inference.source) bulk inference. `tune` (pipeline.tune) makes the Trainer
    read the Tuner's best config; without it the Trainer's inputs and cache key stay as
    they were before the Tuner existed."""
    trainer_inputs = {"examples": "ExampleGen.examples", "anomalies": "ExampleValidator.anomalies"}
    if tune:
        trainer_inputs["hyperparameters"] = "Tuner.hyperparameters"
    return [
        Component(
            "ExampleGen",
            run_example_gen,
            outputs={"examples": EXAMPLES},
            config_keys=("data",),
            config_exclude=tuple(f"data.{key}" for key in TRAINING_ONLY_DATA_KEYS),
            resolve=resolve_source,
        ),
        Component(
            "StatisticsGen",
            run_statistics_gen,
            inputs={"examples": "ExampleGen.examples"},
            outputs={"statistics": STATISTICS},
        ),
        Component(
            "ExampleValidator",
            run_example_validator,
            inputs={"statistics": "StatisticsGen.statistics"},
            outputs={"anomalies": ANOMALIES},
            config_keys=("pipeline.validation",),
            resolve=resolve_previous_statistics,
        ),
        Component(
            "Tuner",
            run_tuner,
            inputs={"examples": "ExampleGen.examples", "anomalies": "ExampleValidator.anomalies"},
            outputs={"hyperparameters": HYPERPARAMETERS},
            config_keys=(*TRAINER_KEYS, "tuning"),
            config_exclude=TRAINER_EXCLUDE,
            enabled=lambda cfg: cfg.pipeline.tune,
        ),
        Component(
            "Trainer",
            run_trainer,
            inputs=trainer_inputs,
            outputs={"model": MODEL},
            config_keys=TRAINER_KEYS,
            config_exclude=TRAINER_EXCLUDE,
        ),
        Component(
            "Evaluator",
            run_evaluator,
            inputs={"model": "Trainer.model", "examples": "ExampleGen.examples"},
            outputs={"evaluation": EVALUATION, "blessing": BLESSING},
            config_keys=("evaluation", "data.image_size", "data.channels"),
            resolve=resolve_baseline,
        ),
        Component(
            "InfraValidator",
            run_infra_validator,
            inputs={"model": "Trainer.model"},
            outputs={"infra_blessing": INFRA_BLESSING},
            config_keys=("pipeline.infra_validation", "serving.model_name", "pipeline.push.model"),
            enabled=lambda cfg: cfg.pipeline.infra_validation.enabled,
        ),
        Component(
            "Pusher",
            run_pusher,
            inputs={
                "model": "Trainer.model",
                "blessing": "Evaluator.blessing",
                "infra_blessing": "InfraValidator.infra_blessing?",
            },
            outputs={"pushed_model": PUSHED_MODEL},
            config_keys=("pipeline.push", "registry.store", "serving.model_name"),
        ),
        Component(
            "BulkInferrer",
            run_bulk_inferrer,
            inputs={"pushed_model": "Pusher.pushed_model", "model": "Trainer.model"},
            outputs={"predictions": PREDICTIONS},
            config_keys=("pipeline.bulk_inference", "serving.top_k"),
            # The images are an outside input: new or changed files re-run it.
            resolve=resolve_bulk_source,
            enabled=lambda cfg: cfg.pipeline.bulk_inference.source is not None,
        ),
    ]
