"""`python -m trainer.task --config X`: train on an ingested dataset, evaluate, export a run."""

import argparse
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from configs import errors, loader, schema
from trainer import evaluate, loop, models, optim, runs
from transforms import augment, dataset, dataset_info


class TrainingError(errors.UserError):
    """Training could not produce a usable model; the message says why."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    export_dir: Path
    metrics: dict


def run(cfg: schema.Config) -> RunResult:
    """Trains, evaluates on the test split and exports; everything lands in runs_dir/<run_id>/."""
    started = time.time()
    version_dir = dataset_info.resolve_version_dir(cfg.data.output_dir, cfg.data.version)
    info = dataset_info.load(version_dir)
    class_names, splits = info["label_map"], info["splits"]
    check_splits(cfg, splits)
    keras.utils.set_random_seed(cfg.seed)
    image_size = tuple(cfg.data.image_size)
    input_shape = (*image_size, cfg.data.channels)

    augmenter = augment.build_augmenter(cfg.augment, cfg.seed)

    def split_data(split: str, training: bool = False):
        return dataset.build_dataset(
            version_dir,
            split,
            cfg.data,
            training,
            cfg.seed,
            augmenter if training else None,
            num_examples=splits[split]["count"],
        )

    train_data = split_data("train", training=True)
    val_data = split_data("val") if splits["val"]["count"] else None
    test_data = split_data("test")

    model = models.build_model(cfg.model, input_shape, len(class_names))
    steps_per_epoch = math.ceil(splits["train"]["count"] / cfg.data.batch_size)
    optimizer = optim.build_optimizer(cfg.optimizer, steps_per_epoch, cfg.train.epochs)

    run_dir = runs.create(cfg)
    print(
        f"train: run {run_dir.name} on dataset {info['version']} "
        f"({splits['train']['count']} train / {splits['val']['count']} val images, "
        f"{len(class_names)} classes, model {cfg.model.backbone}, "
        f"{model.count_params():,} parameters)"
    )
    with reading_shards(version_dir):
        history = loop.fit(model, optimizer, train_data, val_data, cfg.train, run_dir)
    if any(not math.isfinite(v) for v in history.history.get("loss", [])):
        raise TrainingError(
            f"loss became NaN/Inf; run stopped (checkpoints in {run_dir / runs.CHECKPOINTS}). "
            "Lower optimizer.learning_rate or check the data."
        )
    train_seconds = time.time() - started

    with reading_shards(version_dir):
        y_true, probabilities = evaluate.predict(model, test_data)
    metrics = evaluate.classification_metrics(y_true, probabilities, class_names)
    metrics.update(
        dataset_version=info["version"],
        split="test",
        epochs_run=len(history.history["loss"]),
        train_seconds=round(train_seconds, 1),
    )
    runs.write_json(run_dir / runs.METRICS, metrics)
    model.save(run_dir / runs.KERAS_MODEL)

    # Entry-point glue: export belongs to serving, which the library half of trainer never imports.
    from serving import export

    export_dir = export.export_saved_model(
        model,
        run_dir / runs.EXPORT,
        version=1,
        image_size=image_size,
        channels=cfg.data.channels,
        class_names=class_names,
        background=tuple(cfg.data.background),
        metadata={
            "run_id": run_dir.name,
            "dataset_version": info["version"],
            "config": loader.to_dict(cfg),
            "metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "num_examples")},
        },
    )
    print(
        f"train: done in {time.time() - started:.0f}s: test accuracy {metrics['accuracy']:.4f}, "
        f"macro F1 {metrics['macro_f1']:.4f}; run in {run_dir}, SavedModel in {export_dir}"
    )
    return RunResult(run_dir=run_dir, export_dir=export_dir, metrics=metrics)


@contextlib.contextmanager
def reading_shards(version_dir: str):
    """A corrupt shard becomes a TrainingError naming the dataset and the fix."""
    try:
        yield
    except tf.errors.DataLossError as error:
        raise TrainingError(
            f"a TFRecord shard in {version_dir} is corrupt ({error.message.splitlines()[0]}); "
            "re-run `imgclf ingest` to rewrite the dataset"
        ) from None


def check_splits(cfg: schema.Config, splits: dict) -> None:
    if not splits["train"]["count"]:
        raise TrainingError("the dataset has no training images; check data.split.train")
    if not splits["test"]["count"]:
        raise TrainingError(
            "the dataset has no test images to evaluate on; set data.split.test > 0 and re-ingest"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.task", description=__doc__)
    loader.add_config_arguments(parser)
    args = parser.parse_args(argv)
    return errors.exit_on_user_error(lambda: run(loader.load(args.config, args.overrides)))


if __name__ == "__main__":
    raise SystemExit(main())
