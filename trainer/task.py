"""The trainer: one run on an ingested dataset, from its folder to the trained model and what
training found (epochs, best epoch, time, diagnoses). `python -m trainer.task --config X` runs
the whole flow (train, export, evaluate, record: tfx_pipeline/flow.py), as `imgclf train` does;
the evaluator scores the test split there, on the export."""

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import console

if __name__ == "__main__":  # before keras and TensorFlow, imported below, load
    sys.argv[1:] = console.setup(sys.argv[1:])

import keras
import tensorflow as tf

from configs import loader, schema
from core import errors, locations, run_layout
from tracking import hparams
from tracking import recorder as run_recorder
from trainer import (
    diagnose,
    distribute,
    evaluate,
    loop,
    losses,
    mirror,
    models,
    optim,
    runs,
    summaries,
    transfer,
)
from transforms import augment, dataset, dataset_info, dataset_store


class TrainingError(errors.UserError):
    """Training could not produce a usable model; the message says why."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    export_dir: Path | None  # the SavedModel once exported; None on workers other than the chief
    # What training found: dataset_version, class_names and run_layout.TRAINING_KEYS.
    training: dict
    # Test-split metrics: the trainer's with score_test, the evaluator's after the flow, else {}.
    metrics: dict
    # The bucket copy of a remote runs_dir: whoever adds to the run folder later pushes again.
    run_mirror: mirror.RunMirror | None = None
    model: keras.Model | None = None  # the trained model, on the chief


def run(cfg: schema.Config, dry_run: bool = False, *, score_test: bool = False) -> RunResult | None:
    """Trains; everything lands in runs_dir/<run_id>/ (model.keras, history, checkpoints,
    TensorBoard), but no SavedModel and no metrics.json: tfx_pipeline/flow.py exports the model
    and the evaluator scores the export.

    `score_test` also predicts the test split with the model in memory, for callers that export
    nothing (tuning trials, benches): its metrics are returned and recorded in run.json.
    A run whose folder already holds checkpoints (same train.run_id) resumes where it stopped.
    `dry_run` stops after validating the dataset and building the model, and prints both.
    From the moment its folder exists the run is recorded in its run.json (and in MLflow when
    tracking.mlflow.uri is set): running, then completed, or failed with the reason.
    """
    recorder = run_recorder.Recorder(cfg)
    run_mirror = (
        mirror.RunMirror(cfg.train.runs_dir) if locations.is_url(cfg.train.runs_dir) else None
    )
    try:
        result = train(cfg, dry_run, recorder, run_mirror, score_test)
    except BaseException as error:
        recorder.fail(error)
        # Only the chief records, and pushes: the failed record and the last checkpoint.
        if run_mirror is not None and recorder.run_dir is not None:
            try:
                run_mirror.push()
            except Exception as push_error:  # the training error is the one to report
                logging.getLogger(__name__).warning(
                    "could not sync %s: %s", run_mirror.url, push_error
                )
        raise
    if result is not None:
        training = {key: result.training[key] for key in run_layout.TRAINING_KEYS}
        recorder.complete(training, result.metrics)
    if run_mirror is not None and recorder.run_dir is not None:
        run_mirror.push()
        print(f"train: run synced to {run_mirror.url}")
        if result is not None:
            result = dataclasses.replace(result, run_mirror=run_mirror)
    return result


def train(
    cfg: schema.Config,
    dry_run: bool,
    recorder: run_recorder.Recorder,
    run_mirror: mirror.RunMirror | None = None,
    score_test: bool = False,
) -> RunResult | None:
    """The body of `run`: calls recorder.start once the run folder exists; with `run_mirror`
    the run folder is its staging copy, pushed after every epoch."""
    started = time.time()
    version_dir = dataset_store.local_version_dir(cfg.data)  # a bucket's: its cached copy
    info = dataset_info.load(version_dir)
    class_names, splits = info["label_map"], info["splits"]
    check_splits(cfg, splits)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = distribute.build_strategy(cfg.train)
    precision = distribute.resolve_precision(cfg.train)
    distribute.set_precision(precision)
    replicas = strategy.num_replicas_in_sync
    accumulation = cfg.train.gradient_accumulation_steps
    micro_batch = check_batch(cfg, replicas, accumulation)
    steps_per_epoch = max(1, splits["train"]["count"] // cfg.data.batch_size)
    input_shape = (*cfg.data.image_size, cfg.data.channels)
    augmenter = augment.build_augmenter(cfg.augment, cfg.seed, len(class_names))
    momentum = models.resolve_batch_norm_momentum(cfg.model.batch_norm_momentum, steps_per_epoch)

    def make_train_data(epoch: int, skip_batches: int):
        def per_pipeline(context: tf.distribute.InputContext):
            return dataset.build_training_dataset(
                version_dir,
                cfg.data,
                cfg.seed + epoch,
                micro_batch,
                accumulation,
                augmenter,
                shard=(context.num_input_pipelines, context.input_pipeline_id),
                skip_batches=skip_batches,
                random_resized_crop=cfg.augment.random_resized_crop,
            )

        return strategy.distribute_datasets_from_function(per_pipeline)

    def eval_data(split: str):
        return dataset.build_dataset(
            version_dir, split, cfg.data, False, num_examples=splits[split]["count"]
        )

    with strategy.scope():
        model = models.build_model(cfg.model, input_shape, len(class_names), momentum)
        phases = build_phases(cfg, model, steps_per_epoch, precision)
    weights = class_weights(cfg.train.class_weights, class_names, splits["train"]["per_class"])
    # A broken custom loss or metric fails here, dry run included, before the run folder exists.
    losses.build_loss(cfg.train, len(class_names))
    losses.build_metrics(cfg.train, len(class_names))
    if dry_run:
        print(loader.to_yaml(cfg), end="")
        model.summary()
        if any(layer.name == models.BACKBONE for layer in model.layers):
            model.get_layer(models.BACKBONE).summary()
        for phase in phases:
            phase.set_trainable()
            print(
                f"train: phase {phase.name} from epoch {phase.first_epoch + 1}: "
                f"{loop.count_trainable(model):,} trainable parameters"
            )
        print(
            f"train: dry run OK: dataset {info['version']}, model {cfg.model.backbone} with "
            f"{model.count_params():,} parameters, {precision}, {replicas} replica(s); "
            "nothing was written"
        )
        return None
    chief = distribute.is_chief(strategy)
    run_dir = runs.create(cfg, write=chief, run_mirror=run_mirror)
    recorder.start(run_dir, info["version"], chief)
    print(
        f"train: run {run_dir.name} on dataset {info['version']} "
        f"({splits['train']['count']} train / {splits['val']['count']} val images, "
        f"{len(class_names)} classes, model {cfg.model.backbone}, "
        f"{model.count_params():,} parameters, {precision}, {replicas} replica(s) "
        f"x {accumulation} micro-batch(es) of {micro_batch}{batch_norm_note(model)})"
    )
    if chief:
        log_tensorboard_extras(cfg, run_dir, version_dir, class_names, augmenter)
    training = loop.TrainingLoop(
        model,
        phases,
        strategy,
        cfg.train,
        cfg.data.batch_size,
        len(class_names),
        run_dir,
        chief,
        class_weights=weights,
        plateau=optim.plateau(cfg.optimizer),
        on_epoch_done=(lambda epoch: run_mirror.push()) if run_mirror and chief else None,
        stop_early=cfg.train.early_stopping.active(cfg.optimizer.schedule),
    )
    with reading_shards(version_dir):
        fitted = training.fit(
            make_train_data, steps_per_epoch, eval_data("val") if splits["val"]["count"] else None
        )
    training.cleanup()
    train_seconds = time.time() - started
    fingerprint = loop.weights_fingerprint(model)
    training_facts = {
        "dataset_version": info["version"],
        "class_names": class_names,
        "epochs_run": fitted.epochs_run,
        "best_epoch": fitted.best_epoch,
        "resumed_from": fitted.resumed_from,
        "train_seconds": round(train_seconds, 1),
        "diagnoses": diagnoses(fitted.history, splits["val"]["per_class"], model, momentum),
    }
    if not chief:
        print(
            f"train: worker done in {train_seconds:.0f}s (weights {fingerprint}); "
            "the chief writes the run"
        )
        return RunResult(run_dir=run_dir, export_dir=None, training=training_facts, metrics={})

    for note in training_facts["diagnoses"]:
        print(f"train: warning: {note}")
    metrics = {}
    scored = ""
    if score_test:
        with reading_shards(version_dir):
            y_true, probabilities = evaluate.predict(model, eval_data("test"))
        metrics = evaluate.classification_metrics(y_true, probabilities, class_names)
        metrics.update(dataset_version=info["version"], split="test")
        scored = f", test accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}"
    model.save(run_dir / run_layout.KERAS_MODEL)
    if any(layer.name == models.BACKBONE for layer in model.layers):
        # What `model.weights: <file>` takes to start another run from this one's backbone.
        model.get_layer(models.BACKBONE).save_weights(run_dir / run_layout.BACKBONE_WEIGHTS)

    print(
        f"train: done in {time.time() - started:.0f}s, {fitted.epochs_run} epoch(s){scored} "
        f"(weights {fingerprint}); run in {run_dir}"
    )
    return RunResult(
        run_dir=run_dir, export_dir=None, training=training_facts, metrics=metrics, model=model
    )


def build_phases(
    cfg: schema.Config, model: keras.Model, steps_per_epoch: int, precision: str
) -> list[loop.Phase]:
    """One loop.Phase per transfer-learning phase, each with its own optimizer and schedule."""
    phases = []
    for plan in transfer.plan(cfg.train):
        optimizer_cfg = cfg.optimizer.model_copy(
            update={"learning_rate": cfg.optimizer.learning_rate * plan.learning_rate_factor}
        )
        optimizer = optim.build_optimizer(
            optimizer_cfg, steps_per_epoch, plan.epochs, cfg.train.ema
        )
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        setter = transfer.trainable_setter(model, plan, cfg.train.fine_tune)
        phases.append(loop.Phase(plan.first_epoch, optimizer, setter, plan.name))
    return phases


def batch_norm_note(model: keras.Model) -> str:
    """`, BatchNorm momentum 0.92` for the start line: the momenta the model's layers use."""
    momenta = sorted(
        {
            x.momentum
            for x in models.nested_layers(model)
            if isinstance(x, keras.layers.BatchNormalization)
        }
    )
    if not momenta:
        return ""
    return f", BatchNorm momentum {' and '.join(f'{m:.3g}' for m in momenta)}"


def diagnoses(history, val_counts, model, momentum) -> list[str]:
    """What went visibly wrong in training, in words, for the console and run.json (the
    evaluator adds them to metrics.json and the report)."""
    note = diagnose.chance_validation(history, val_counts, models.has_batch_norm(model), momentum)
    return [note] if note else []


def log_tensorboard_extras(cfg, run_dir, version_dir, class_names, augmenter):
    """The run's hyperparameters and a grid of augmented training images, for TensorBoard."""
    log_dir = run_dir / run_layout.TENSORBOARD
    # The session is tensorboard/ itself: the HParams plugin looks each metric up in the session
    # folder's train/ and validation/ sub-folders, where the training loop writes them.
    summaries.write_hparams(
        log_dir, hparams.flatten_hparams(loader.to_dict(cfg)), summaries.METRIC_TAGS
    )
    # The first batch of the train split in file order, through the run's own augmentation.
    images, labels = next(iter(dataset.build_dataset(version_dir, "train", cfg.data, False)))
    images, labels = images[:16], labels[:16]
    if augmenter is not None:
        # Under a mixed precision policy the layers compute, and return, bfloat16 or float16.
        images = tf.cast(augmenter(images, training=True), tf.float32)
    summaries.write_image_grid(
        log_dir / "train", "augmented_training_images", images, labels, class_names
    )


def class_weights(setting, class_names: list[str], train_counts: dict[str, int]):
    """Per-class loss weights in label order, or None; `auto` balances classes by count,
    `{scheme: effective_number}` by their effective numbers."""
    if setting is None:
        return None
    if isinstance(setting, schema.ClassBalanceConfig):
        counts = [train_counts.get(name, 0) for name in class_names]
        return losses.effective_number_weights(counts, setting.beta)
    if setting == "auto":
        total = sum(train_counts.values())
        return [total / (len(class_names) * max(train_counts[name], 1)) for name in class_names]
    unknown = sorted(set(setting) - set(class_names))
    if unknown:
        raise TrainingError(
            f"train.class_weights names classes the dataset does not have: {', '.join(unknown)} "
            f"(classes: {', '.join(class_names)})"
        )
    return [float(setting.get(name, 1.0)) for name in class_names]


def check_batch(cfg: schema.Config, replicas: int, accumulation: int) -> int:
    """The per-replica micro-batch size; the global batch must split evenly."""
    parts = replicas * accumulation
    if cfg.data.batch_size % parts:
        raise TrainingError(
            f"data.batch_size ({cfg.data.batch_size}) must be divisible by replicas ({replicas}) "
            f"x train.gradient_accumulation_steps ({accumulation}) = {parts}"
        )
    return cfg.data.batch_size // parts


@contextlib.contextmanager
def reading_shards(version_dir: str):
    """A corrupt shard or running out of memory becomes a TrainingError naming the fix."""
    try:
        yield
    except tf.errors.DataLossError as error:
        raise TrainingError(
            f"a TFRecord shard in {version_dir} is corrupt ({error.message.splitlines()[0]}); "
            "re-run `imgclf ingest` to rewrite the dataset"
        ) from None
    except tf.errors.ResourceExhaustedError:
        raise TrainingError(
            "out of memory: lower data.batch_size, or keep the batch and raise "
            "train.gradient_accumulation_steps so each step holds a smaller micro-batch"
        ) from None


def check_splits(cfg: schema.Config, splits: dict) -> None:
    if not splits["train"]["count"]:
        raise TrainingError("the dataset has no training images; check data.split.train")
    if not splits["test"]["count"]:
        raise TrainingError(
            "the dataset has no test images to evaluate on; set data.split.test > 0 and re-ingest"
        )


def main(run_flow: Callable[..., object], argv: list[str] | None = None) -> int:
    """`python -m trainer.task`: `run_flow` (the flow of `imgclf train`) on the config given."""
    parser = argparse.ArgumentParser(prog="python -m trainer.task", description=__doc__)
    loader.add_config_arguments(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config and dataset, build the model, print both; train nothing",
    )
    args = parser.parse_args(argv)
    return errors.exit_on_user_error(
        lambda: run_flow(loader.load(args.config, args.overrides), dry_run=args.dry_run)
    )


if __name__ == "__main__":
    # Only the program reaches up to the flow, which imports this module as a library.
    from tfx_pipeline import flow

    raise SystemExit(main(flow.run))
