"""The pipeline's DAG on one screen: each component, its inputs and outputs, and the config keys
its cache key reads (components/ holds what each one does)."""

from configs import schema
from tfx_pipeline import artifact_types, component
from tfx_pipeline.components import (
    bulk_inferrer,
    evaluator,
    example_gen,
    example_validator,
    infra_validator,
    pusher,
    statistics_gen,
    trainer,
    tuner,
)

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


def build_components(tune: bool = False) -> list[component.Component]:
    """The pipeline, in order: ingest, statistics, validation, (with pipeline.tune) a
    hyperparameter search, training, evaluation, infra validation, push, and (with
    pipeline.bulk_inference.source) bulk inference. `tune` (pipeline.tune) makes the Trainer
    read the Tuner's best config; without it the Trainer's inputs and cache key stay as
    they were before the Tuner existed."""
    trainer_inputs = {"examples": "ExampleGen.examples", "anomalies": "ExampleValidator.anomalies"}
    if tune:
        trainer_inputs["hyperparameters"] = "Tuner.hyperparameters"
    return [
        component.Component(
            "ExampleGen",
            example_gen.run,
            outputs={"examples": artifact_types.EXAMPLES},
            config_keys=("data",),
            config_exclude=tuple(f"data.{key}" for key in TRAINING_ONLY_DATA_KEYS),
            resolve=example_gen.resolve_source,
        ),
        component.Component(
            "StatisticsGen",
            statistics_gen.run,
            inputs={"examples": "ExampleGen.examples"},
            outputs={"statistics": artifact_types.STATISTICS},
        ),
        component.Component(
            "ExampleValidator",
            example_validator.run,
            inputs={"statistics": "StatisticsGen.statistics"},
            outputs={"anomalies": artifact_types.ANOMALIES},
            config_keys=("pipeline.validation",),
            resolve=example_validator.resolve_previous_statistics,
        ),
        component.Component(
            "Tuner",
            tuner.run,
            inputs={"examples": "ExampleGen.examples", "anomalies": "ExampleValidator.anomalies"},
            outputs={"hyperparameters": artifact_types.HYPERPARAMETERS},
            config_keys=(*TRAINER_KEYS, "tuning"),
            config_exclude=TRAINER_EXCLUDE,
            enabled=lambda cfg: cfg.pipeline.tune,
        ),
        component.Component(
            "Trainer",
            trainer.run,
            inputs=trainer_inputs,
            outputs={"model": artifact_types.MODEL},
            config_keys=TRAINER_KEYS,
            config_exclude=TRAINER_EXCLUDE,
        ),
        component.Component(
            "Evaluator",
            evaluator.run,
            inputs={"model": "Trainer.model", "examples": "ExampleGen.examples"},
            outputs={"evaluation": artifact_types.EVALUATION, "blessing": artifact_types.BLESSING},
            config_keys=("evaluation", "data.image_size", "data.channels"),
            resolve=evaluator.resolve_baseline,
        ),
        component.Component(
            "InfraValidator",
            infra_validator.run,
            inputs={"model": "Trainer.model"},
            outputs={"infra_blessing": artifact_types.INFRA_BLESSING},
            config_keys=("pipeline.infra_validation", "serving.model_name", "pipeline.push.model"),
            enabled=lambda cfg: cfg.pipeline.infra_validation.enabled,
        ),
        component.Component(
            "Pusher",
            pusher.run,
            inputs={
                "model": "Trainer.model",
                "blessing": "Evaluator.blessing",
                "infra_blessing": "InfraValidator.infra_blessing?",
            },
            outputs={"pushed_model": artifact_types.PUSHED_MODEL},
            config_keys=("pipeline.push", "registry.store", "serving.model_name"),
        ),
        component.Component(
            "BulkInferrer",
            bulk_inferrer.run,
            inputs={"pushed_model": "Pusher.pushed_model", "model": "Trainer.model"},
            outputs={"predictions": artifact_types.PREDICTIONS},
            config_keys=("pipeline.bulk_inference", "serving.top_k"),
            resolve=bulk_inferrer.resolve_images,
            enabled=lambda cfg: cfg.pipeline.bulk_inference.source is not None,
        ),
    ]
