"""Training benchmark (issue 9): imgclf's training loop beside plain `model.fit`.

Two figures, each measured on both sides alternately (medians of --repeats):
- steady-state training images/s for the digits CNN and MobileNetV2 at 96/160/224: imgclf's loop
  (trainer.loop.TrainingLoop fed by transforms.dataset, as `imgclf train` runs it) against the same
  model, optimizer and loss trained by `model.fit` on `keras.utils.image_dataset_from_directory`
  over the same image files, same batch and image size. The first steps (tracing, pipeline
  start-up) are not timed. Augmentation is off on both sides, so both do the same work;
- time-to-accuracy: seconds for `imgclf train` on the ingested digits to reach 0.98 test accuracy
  (configs/examples/digits_fast.yaml), against plain fit of the same model and config on the same
  train split, evaluated on the same test split after every epoch until it gets there.

    .venv/bin/python bench/bench_training.py [--quick]
"""

import dataclasses
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import report  # beside this script, which Python puts first on sys.path
import synthetic_images
import tensorflow as tf
from harness import arguments, comparison, machine, timing

from configs import loader, schema
from trainer import distribute, loop, models, optim, task
from transforms import dataset, dataset_info, digits, features
from transforms.beam import ingest

WORK = Path("/tmp/imgclf-bench-training")
REPO = Path(__file__).resolve().parent.parent
DIGITS_CONFIG = REPO / "configs" / "digits.yaml"
FAST_CONFIG = REPO / "configs" / "examples" / "digits_fast.yaml"
TARGET_ACCURACY = 0.98
SYNTHETIC_IMAGES = 1024
SYNTHETIC_CLASSES = 10
BATCH = 32


@dataclass(frozen=True)
class Case:
    """One throughput figure: a model at an image size, and how many steps are timed."""

    key: str
    what: str
    data: str  # "digits" or "synthetic"
    overrides: tuple[str, ...]
    warmup_steps: int
    timed_steps: int


CASES = {
    "digits_cnn": Case("digits_cnn", "digits CNN 32x32", "digits", (), 10, 120),
    "mobilenet_v2_96": Case(
        "mobilenet_v2_96",
        "MobileNetV2 96x96",
        "synthetic",
        ("data.image_size=[96, 96]",),
        3,
        15,
    ),
    "mobilenet_v2_160": Case(
        "mobilenet_v2_160",
        "MobileNetV2 160x160",
        "synthetic",
        ("data.image_size=[160, 160]",),
        3,
        8,
    ),
    "mobilenet_v2_224": Case(
        "mobilenet_v2_224",
        "MobileNetV2 224x224",
        "synthetic",
        ("data.image_size=[224, 224]",),
        3,
        5,
    ),
}
QUICK_CASES = ("digits_cnn", "mobilenet_v2_96")
TIME_TO_ACCURACY = "time_to_accuracy"


# --- data, cached under WORK ---


def prepare_digits() -> tuple[Path, Path]:
    """The digits PNG tree and its ingested dataset version: (source, version_dir)."""
    source = WORK / "digits"
    if not (source / "9").is_dir():
        digits.write_digits(source)
    cfg = loader.load(DIGITS_CONFIG, [f"data.source={source}", f"data.output_dir={WORK / 'tfr'}"])
    return source, ingest.run(cfg.data).path


def prepare_synthetic() -> tuple[Path, Path]:
    """Synthetic JPEGs (320x240, 10 classes) and their ingested dataset version."""
    source = synthetic_images.ensure(WORK / "synthetic", SYNTHETIC_IMAGES, SYNTHETIC_CLASSES)
    cfg = loader.load(
        None,
        [
            f"data.source={source}",
            f"data.output_dir={WORK / 'tfr-synthetic'}",
            "data.beam_direct_mode=in_memory",
        ],
    )
    return source, ingest.run(cfg.data).path


def case_config(case: Case, source: Path, version_dir: Path) -> schema.Config:
    base = DIGITS_CONFIG if case.data == "digits" else None
    model = [] if case.data == "digits" else ["model.backbone=mobilenet_v2", "model.weights=null"]
    return loader.load(
        base,
        [
            f"data.source={source}",
            f"data.output_dir={version_dir.parent}",
            f"data.version={version_dir.name}",
            f"data.batch_size={BATCH}",
            f"train.runs_dir={WORK / 'runs'}",
            "augment.layers=[]",
            *model,
            *case.overrides,
        ],
    )


# --- imgclf: the training loop of `imgclf train`, driven for a fixed number of steps ---


def imgclf_images_per_s(cfg: schema.Config, warmup: int, timed: int) -> float:
    """One epoch of warmup + timed steps through trainer.loop, as trainer.task sets it up; images/s
    over the timed steps, from the loop's own per-execution progress reports."""
    version_dir = dataset_info.resolve_version_dir(cfg.data.output_dir, cfg.data.version)
    class_names = dataset_info.load(version_dir)["label_map"]
    keras.utils.set_random_seed(cfg.seed)
    strategy = distribute.build_strategy(cfg.train)
    precision = distribute.resolve_precision(cfg.train)
    distribute.set_precision(precision)
    micro_batch = task.check_batch(cfg, strategy.num_replicas_in_sync, 1)
    steps = warmup + timed

    def make_train_data(epoch: int, skip_batches: int):
        return strategy.distribute_datasets_from_function(
            lambda context: dataset.build_training_dataset(
                version_dir,
                cfg.data,
                cfg.seed + epoch,
                micro_batch,
                shard=(context.num_input_pipelines, context.input_pipeline_id),
                skip_batches=skip_batches,
            )
        )

    with strategy.scope():
        model = models.build_model(cfg.model, input_shape(cfg), len(class_names))
        phases = task.build_phases(cfg, model, steps, precision)
    clock = StepClock()
    run_dir = WORK / "runs" / f"throughput-{time.time_ns()}"
    train_cfg = cfg.train.model_copy(update={"epochs": 1})
    training = loop.TrainingLoop(
        model,
        phases,
        strategy,
        train_cfg,
        cfg.data.batch_size,
        len(class_names),
        run_dir,
        on_steps_done=clock.record,
    )
    training.fit(make_train_data, steps, None)
    return clock.images_per_s(warmup, steps, cfg.data.batch_size)


class StepClock(keras.callbacks.Callback):
    """Wall-clock time after each step (Keras callback) or run of steps (imgclf's loop)."""

    def __init__(self):
        super().__init__()
        self.times: dict[int, float] = {}  # steps done -> perf_counter

    def record(self, epoch: int, steps_done: int) -> None:
        self.times[steps_done] = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.record(0, batch + 1)

    def images_per_s(self, warmup: int, steps: int, batch_size: int) -> float:
        """Over the steps after the first report at or past `warmup` (the loop may run several
        steps per call, so it reports fewer points than steps)."""
        start = min(done for done in self.times if done >= warmup)
        if start >= steps:
            raise RuntimeError(f"no report between step {warmup} and {steps}: {sorted(self.times)}")
        return (steps - start) * batch_size / (self.times[steps] - self.times[start])


# --- baseline: plain model.fit on image_dataset_from_directory ---


def input_shape(cfg: schema.Config) -> tuple[int, int, int]:
    return (*cfg.data.image_size, cfg.data.channels)


def directory_dataset(folder: Path, cfg: schema.Config, shuffle: bool = True) -> tf.data.Dataset:
    """What a plain Keras script feeds fit: image_dataset_from_directory, scaled to [0, 1]."""
    images = keras.utils.image_dataset_from_directory(
        folder,
        image_size=tuple(cfg.data.image_size),
        color_mode="grayscale" if cfg.data.channels == 1 else "rgb",
        batch_size=cfg.data.batch_size,
        shuffle=shuffle,
        seed=cfg.seed,
        verbose=False,
    )
    return images.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)


def build_compiled_model(cfg: schema.Config, steps_per_epoch: int, classes: int) -> keras.Model:
    """The model trainer.models builds, with trainer.optim's optimizer and the loop's loss."""
    keras.utils.set_random_seed(cfg.seed)
    distribute.set_precision(distribute.resolve_precision(cfg.train))
    model = models.build_model(cfg.model, input_shape(cfg), classes)
    model.compile(
        optimizer=optim.build_optimizer(cfg.optimizer, steps_per_epoch, cfg.train.epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


def fit_images_per_s(cfg: schema.Config, source: Path, warmup: int, timed: int) -> float:
    steps = warmup + timed
    train_data = directory_dataset(source, cfg).repeat().prefetch(tf.data.AUTOTUNE)
    classes = len([p for p in source.iterdir() if p.is_dir()])
    model = build_compiled_model(cfg, steps, classes)
    clock = StepClock()
    model.fit(
        train_data, epochs=1, steps_per_epoch=steps, callbacks=[clock], verbose=0, shuffle=False
    )
    return clock.images_per_s(warmup, steps, cfg.data.batch_size)


def measure_throughput(case: Case, source: Path, version_dir: Path, repeats: int):
    cfg = case_config(case, source, version_dir)
    print(f"bench: {case.what}: {case.warmup_steps} warm-up + {case.timed_steps} timed steps")
    samples = timing.take_turns(
        {
            "imgclf": lambda: imgclf_images_per_s(cfg, case.warmup_steps, case.timed_steps),
            "fit": lambda: fit_images_per_s(cfg, source, case.warmup_steps, case.timed_steps),
        },
        repeats,
    )
    medians = timing.medians(samples)
    ours_samples, base_samples = samples["imgclf"], samples["fit"]
    found = comparison.Comparison(
        key=f"training.images_per_s.{case.key}",
        what=f"training {case.what}, batch {BATCH}",
        unit="images/s",
        imgclf=medians["imgclf"],
        baseline=medians["fit"],
        baseline_name="model.fit on image_dataset_from_directory",
        min_ratio=1.0,
    )
    print(f"bench: {case.what}: imgclf {ours_samples}, fit {base_samples}")
    return found, {"imgclf_samples": ours_samples, "fit_samples": base_samples}


# --- time-to-accuracy on the digits ---


def split_folders(source: Path, version_dir: Path) -> dict[str, Path]:
    """Class-folder trees of links to the files of the ingested train and test splits, so plain
    fit trains and is tested on exactly the images imgclf trains and is tested on."""
    root = WORK / f"splits-{version_dir.name}"
    folders = {split: root / split for split in ("train", "test")}
    for split, folder in folders.items():
        if folder.is_dir():
            continue
        staging = root / f".{split}-{time.time_ns()}"
        records = tf.data.TFRecordDataset(dataset.shard_files(version_dir, split))
        for record in records.map(features.parse):
            # Relative to data.source for local folders.
            image = source / record[features.SOURCE].numpy().decode()
            link = staging / record[features.LABEL_TEXT].numpy().decode() / image.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(image)
        staging.rename(folder)
    return folders


def fast_config(source: Path, version_dir: Path, seed: int) -> schema.Config:
    return loader.load(
        FAST_CONFIG,
        [
            f"data.source={source}",
            f"data.output_dir={version_dir.parent}",
            f"data.version={version_dir.name}",
            f"train.runs_dir={WORK / 'runs'}",
            f"seed={seed}",
        ],
    )


def imgclf_time_to_accuracy(cfg: schema.Config) -> tuple[float, float]:
    """(seconds, test accuracy) of `imgclf train`: its train_seconds, from reading the dataset's
    description to the trained model (validation every epoch included; test and export not)."""
    result = task.run(cfg, score_test=True)
    return result.training["train_seconds"], result.metrics["accuracy"]


def fit_time_to_accuracy(cfg: schema.Config, folders: dict[str, Path]) -> tuple[float, float, int]:
    """(seconds, test accuracy, epochs) of plain fit with the same config, tested after every
    epoch (the test counted, like imgclf's validation), until it reaches the target or has run
    twice the configured epochs."""
    started = time.perf_counter()
    train_data = directory_dataset(folders["train"], cfg).prefetch(tf.data.AUTOTUNE)
    test_data = directory_dataset(folders["test"], cfg, shuffle=False).prefetch(tf.data.AUTOTUNE)
    steps = int(train_data.cardinality())
    model = build_compiled_model(cfg, steps, len(list(folders["train"].iterdir())))
    for epoch in range(2 * cfg.train.epochs):
        model.fit(train_data, initial_epoch=epoch, epochs=epoch + 1, verbose=0)
        accuracy = model.evaluate(test_data, verbose=0, return_dict=True)["accuracy"]
        if accuracy >= TARGET_ACCURACY:
            break
    return time.perf_counter() - started, accuracy, epoch + 1


def measure_time_to_accuracy(source: Path, version_dir: Path, repeats: int):
    """Alternating sides; repeat i uses seed 42 + i on both, so the accuracy is seen across
    seeds as well as the time."""
    folders = split_folders(source, version_dir)
    ours, base = [], []
    for repeat in range(repeats):
        cfg = fast_config(source, version_dir, 42 + repeat)
        ours.append(imgclf_time_to_accuracy(cfg))
        base.append(fit_time_to_accuracy(cfg, folders))
        print(f"bench: time to accuracy, seed {cfg.seed}: imgclf {ours[-1]}, fit {base[-1]}")
    reached = all(accuracy >= TARGET_ACCURACY for _, accuracy in ours)
    found = comparison.Comparison(
        key="training.seconds_to_098.digits",
        what=f"digits to {TARGET_ACCURACY} test accuracy ({FAST_CONFIG.name})",
        unit="s",
        imgclf=statistics.median(seconds for seconds, _ in ours),
        baseline=statistics.median(seconds for seconds, _, _ in base),
        # The baseline looks at the test split after every epoch and stops as soon as it
        # reaches the target: an oracle a real run lacks, so the issue asks for the seconds
        # alone; the ratio shows how far imgclf's fixed schedule is from that oracle.
        baseline_name="model.fit on image_dataset_from_directory, stopped by a test-set oracle",
        higher_is_better=False,
        target=f"test accuracy >= {TARGET_ACCURACY}",
        target_met=reached,
    )
    details = {
        "config": str(FAST_CONFIG.relative_to(REPO)),
        "seeds": [42 + repeat for repeat in range(repeats)],
        "imgclf_seconds": [seconds for seconds, _ in ours],
        "imgclf_test_accuracy": [accuracy for _, accuracy in ours],
        "fit_seconds": [seconds for seconds, _, _ in base],
        "fit_test_accuracy": [accuracy for _, accuracy, _ in base],
        "fit_epochs": [epochs for _, _, epochs in base],
    }
    return found, details


def main() -> None:
    options = arguments.Options(__doc__, "digits and 96x96 only, half the steps, 1 repeat")
    options.add_sized("--repeats", 3, 1, "samples per side (median)", type=int)
    figures = [*CASES, TIME_TO_ACCURACY]
    options.add_sized(
        "--only", ",".join(figures), ",".join([*QUICK_CASES, TIME_TO_ACCURACY]), "figures"
    )
    args = options.parse()
    names = arguments.subset(options.parser, args.only, figures, "figure")
    machine.announce()
    WORK.mkdir(parents=True, exist_ok=True)
    data = {}
    comparisons, details = [], {"repeats": args.repeats, "batch_size": BATCH}
    shutil.rmtree(WORK / "runs", ignore_errors=True)  # runs of earlier benchmarks
    for name in (name for name in names if name in CASES):
        case = CASES[name]
        if case.data not in data:
            data[case.data] = prepare_digits() if case.data == "digits" else prepare_synthetic()
        if args.quick:  # a smoke run: half the timed steps
            case = dataclasses.replace(case, timed_steps=max(2, case.timed_steps // 2))
        found, samples = measure_throughput(case, *data[case.data], args.repeats)
        comparisons.append(found)
        details[case.key] = {
            **samples,
            "warmup_steps": case.warmup_steps,
            "timed_steps": case.timed_steps,
        }
    if TIME_TO_ACCURACY in names:
        if "digits" not in data:
            data["digits"] = prepare_digits()
        found, details[TIME_TO_ACCURACY] = measure_time_to_accuracy(*data["digits"], args.repeats)
        comparisons.append(found)
    report.write_results("training", comparisons, details)


if __name__ == "__main__":
    main()
