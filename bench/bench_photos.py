"""Real-photo benchmark (issue 17, points 1 and 7): imgclf beside plain Keras and Ultralytics on
labelled crops of real photographs (bench/photos.py), scored on a holdout folder cut from photo
regions no training crop touches.

Contenders, each run once per seed:
- imgclf_cnn: `imgclf ingest`, `imgclf train`, `imgclf evaluate --test-data <holdout>` with
  configs/examples/photos.yaml, as a user runs them (a small CNN from scratch);
- keras_cnn: the same layers and augmentation with plain `model.fit` (bench/photo_keras.py);
- imgclf_mobilenet / keras_mobilenet: configs/examples/photos_mobilenet.yaml, MobileNetV2
  fine-tuned from weights pretrained here on other photos (bench/photo_pretrain.py): imgclf
  fetches them as `model.weights: imagenet` through IMGCLF_WEIGHTS_MIRROR from a mirror on
  127.0.0.1; plain Keras loads the same .h5;
- peer: Ultralytics YOLOv8n-cls from scratch, 96 px, 12 epochs, in bench/.peer-venv
  (bench/photo_peer.py; created on first use, about 6 GB).
Every contender trains on all training crops and is scored on the holdout once, after its fixed
schedule: nothing is selected on the holdout. imgclf's data source is train/ + test/ (the
holdout) so `imgclf train` reports the holdout as its test split; `imgclf evaluate` scores the
holdout files again through the exported SavedModel (the figure reported).

Seconds: imgclf = ingest + train_seconds of metrics.json (reading the dataset to the trained
model); plain Keras = decoding the crops into memory + fit; peer = Ultralytics' train() call.
Accuracy is the mean over seeds, seconds the median; every sample is in the results file.

    .venv/bin/python bench/bench_photos.py [--seeds 3] [--only imgclf_cnn,keras_cnn] [--quick]
"""

import functools
import json
import os
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import photo_keras
import photo_peer
import photo_pretrain
import photos
import report  # beside this script, which Python puts first on sys.path
from harness import arguments, comparison, machine, processes, timing

from configs import loader

WORK = Path("/tmp/imgclf-bench-photos")
REPO = Path(__file__).resolve().parent.parent
IMGCLF = Path(sys.executable).with_name("imgclf")
CONFIGS = {
    "cnn": REPO / "configs" / "examples" / "photos.yaml",
    "mobilenet": REPO / "configs" / "examples" / "photos_mobilenet.yaml",
}
CONTENDERS = ("imgclf_cnn", "keras_cnn", "peer", "imgclf_mobilenet", "keras_mobilenet")
PEER_IMGSZ = 96
# --quick: a smoke run of every path, figures meaningless.
QUICK_OVERRIDES = {
    "cnn": ["train.epochs=2"],
    "mobilenet": ["train.epochs=2", "train.fine_tune.head_epochs=1"],
}


@dataclass
class Sample:
    """One contender's run at one seed."""

    seed: int
    holdout_accuracy: float
    seconds: float  # to a trained model, as compared (see the module docstring)
    parts: dict = field(default_factory=dict)  # the seconds' parts and other figures


# --- data ---


def prepare_data() -> Path:
    return photos.ensure_sets(WORK / "photos", seed=0)


def imgclf_source(task: Path) -> Path:
    """A pre-split class-folder tree for imgclf: train/ the training crops, test/ the holdout."""
    source = WORK / "imgclf-source"
    source.mkdir(parents=True, exist_ok=True)
    for split, target in (("train", task / "train"), ("test", task / "holdout")):
        if not (source / split).is_symlink():
            (source / split).symlink_to(target, target_is_directory=True)
    return source


# --- contenders ---


def run_imgclf(kind: str, seed: int, task: Path, overrides: list[str], env_extra: dict) -> Sample:
    """ingest, train and evaluate with the `kind` example config, as separate commands."""
    run_id = f"photos-{kind}-seed{seed}"
    root = WORK / "imgclf" / run_id
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {
        **os.environ,
        "DATA_DIR": str(imgclf_source(task)),
        "DATA_OUT": str(root / "tfrecords"),
        "RUNS_DIR": str(root / "runs"),
        **env_extra,
    }
    config = ["--config", str(CONFIGS[kind])]
    sets = [arg for value in [f"seed={seed}", *overrides] for arg in ("--set", value)]
    ingest_wall = processes.run_logged(
        [str(IMGCLF), "ingest", *config, *sets], root / "ingest.log", env
    )
    train_wall = processes.run_logged(
        [str(IMGCLF), "train", *config, *sets, "--set", f"train.run_id={run_id}"],
        root / "train.log",
        env,
    )
    run_dir = root / "runs" / run_id
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluation = root / "evaluation"
    evaluate_wall = processes.run_logged(
        [
            str(IMGCLF),
            "evaluate",
            f"--model-path={run_dir}",
            f"--test-data={task / 'holdout'}",
            f"--out={evaluation}",
            *config,
            *sets,
        ],
        root / "evaluate.log",
        env,
    )
    evaluated = json.loads((evaluation / "metrics.json").read_text())
    return Sample(
        seed,
        evaluated["accuracy"],
        ingest_wall + trained["train_seconds"],
        {
            "ingest_seconds": ingest_wall,
            "train_seconds": trained["train_seconds"],
            "train_command_seconds": train_wall,
            "evaluate_command_seconds": evaluate_wall,
            "test_split_accuracy": trained["accuracy"],
            "epochs_run": trained.get("epochs_run"),
            "diagnoses": trained.get("diagnoses", []),
        },
    )


def run_keras(kind: str, seed: int, task: Path, overrides: list[str], pretrained) -> Sample:
    cfg = loader.load(CONFIGS[kind], [f"seed={seed}", *overrides])
    keras.backend.clear_session()
    outcome = photo_keras.run(
        cfg, task / "train", task / "holdout", pretrained, photo_pretrain.ALPHA
    )
    return Sample(
        seed,
        outcome.holdout_accuracy,
        outcome.load_seconds + outcome.train_seconds,
        {"load_seconds": outcome.load_seconds, "train_seconds": outcome.train_seconds},
    )


def run_peer(seed: int, task: Path, epochs: int) -> Sample:
    result = photo_peer.run(task, WORK / "peer", seed, epochs, PEER_IMGSZ)
    return Sample(seed, result["holdout_accuracy"], result["train_seconds"], result)


# --- figures ---


def summary(samples: list[Sample]) -> dict:
    accuracies = [s.holdout_accuracy for s in samples]
    seconds = [s.seconds for s in samples]
    return {
        "holdout_accuracy_mean": statistics.mean(accuracies),
        "holdout_accuracy_std": statistics.pstdev(accuracies),
        "holdout_accuracy_min": min(accuracies),
        "holdout_accuracy_max": max(accuracies),
        "seconds_median": statistics.median(seconds),
        "samples": [asdict(s) for s in samples],
    }


def spread(summary_: dict) -> str:
    return f"{summary_['holdout_accuracy_min']:.3f}-{summary_['holdout_accuracy_max']:.3f}"


def compare(name: str, ours: dict, theirs: dict, baseline: str, what: str, seeds: int):
    """(accuracy, seconds) comparisons of imgclf contender `name` against one baseline."""
    accuracy = comparison.Comparison(
        key=f"photos.holdout_accuracy.{name}",
        what=f"{what}: holdout accuracy, mean of {seeds} seed(s) (imgclf {spread(ours)}, "
        f"baseline {spread(theirs)})",
        unit="accuracy",
        imgclf=ours["holdout_accuracy_mean"],
        baseline=theirs["holdout_accuracy_mean"],
        baseline_name=baseline,
        target="mean >= baseline's",
        min_ratio=1.0,
    )
    seconds = comparison.Comparison(
        key=f"photos.seconds.{name}",
        what=f"{what}: seconds to the trained model, median",
        unit="s",
        imgclf=ours["seconds_median"],
        baseline=theirs["seconds_median"],
        baseline_name=baseline,
        higher_is_better=False,
    )
    return accuracy, seconds


PEER_NAME = f"Ultralytics YOLOv8n-cls from scratch, {PEER_IMGSZ} px"


def comparisons(summaries: dict, seeds: int) -> list[comparison.Comparison]:
    found = []
    pairs = (
        ("cnn_vs_fit", "imgclf_cnn", "keras_cnn", "model.fit, same layers", "small CNN"),
        (
            "mobilenet_vs_fit",
            "imgclf_mobilenet",
            "keras_mobilenet",
            "model.fit, same layers",
            "MobileNetV2 fine-tuned",
        ),
        ("cnn_vs_peer", "imgclf_cnn", "peer", PEER_NAME, "small CNN vs peer"),
        ("mobilenet_vs_peer", "imgclf_mobilenet", "peer", PEER_NAME, "MobileNetV2 vs peer"),
    )
    for name, ours, theirs, baseline, what in pairs:
        if ours in summaries and theirs in summaries:
            accuracy, seconds = compare(
                name, summaries[ours], summaries[theirs], baseline, what, seeds
            )
            if theirs == "peer":
                # The bar: as accurate as the peer, in no more time.
                seconds.target = "<= peer's, at >= its accuracy"
                seconds.target_met = accuracy.target_met and seconds.imgclf <= seconds.baseline
            found += [accuracy, seconds]
    return found


def parse_args():
    options = arguments.Options(
        __doc__, "1 seed, 2 epochs, 1 pretraining epoch; the peer only when its venv exists"
    )
    options.add_sized("--seeds", 3, 1, "runs per contender (seeds 0..N-1)", type=int)
    options.add_sized("--peer-epochs", 12, 2, "Ultralytics' training epochs", type=int)
    options.add_sized(
        "--pretrain-epochs", 15, 1, "epochs of MobileNetV2's local pretraining", type=int
    )
    options.add("--only", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    options.add("--no-peer", action="store_true", help="skip Ultralytics")
    args = options.parse()
    args.only = arguments.subset(options.parser, args.only, CONTENDERS, "contender")
    return args


def main() -> None:
    args = parse_args()
    names, skipped = args.only, {}
    if "peer" in names and (args.no_peer or (args.quick and not photo_peer.venv_ready())):
        names.remove("peer")
        skipped["peer"] = "--no-peer" if args.no_peer else f"--quick without {photo_peer.VENV}"
    overrides = QUICK_OVERRIDES if args.quick else {"cnn": [], "mobilenet": []}

    data = prepare_data()
    task = data / "task"
    mirror = WORK / f"mirror-e{args.pretrain_epochs}"

    @functools.cache
    def pretrained() -> Path:
        # When the first MobileNetV2 contender needs it, so the CNN figures come first.
        return photo_pretrain.pretrain(data / "pretrain" / "train", mirror, args.pretrain_epochs)

    def mirror_env(seed: int, mirror_url: str) -> dict:
        """imgclf's weights mirror, and a Keras cache of its own so that the weights come
        through the mirror in every run."""
        pretrained()
        keras_home = WORK / "imgclf" / f"keras-home-{seed}"
        shutil.rmtree(keras_home, ignore_errors=True)
        return {"IMGCLF_WEIGHTS_MIRROR": mirror_url, "KERAS_HOME": str(keras_home)}

    load_before = machine.announce()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    with photo_pretrain.serve(mirror) as mirror_url:
        runners = {
            "imgclf_cnn": lambda seed: run_imgclf("cnn", seed, task, overrides["cnn"], {}),
            "keras_cnn": lambda seed: run_keras("cnn", seed, task, overrides["cnn"], None),
            "peer": lambda seed: run_peer(seed, task, args.peer_epochs),
            "imgclf_mobilenet": lambda seed: run_imgclf(
                "mobilenet", seed, task, overrides["mobilenet"], mirror_env(seed, mirror_url)
            ),
            "keras_mobilenet": lambda seed: run_keras(
                "mobilenet", seed, task, overrides["mobilenet"], pretrained()
            ),
        }
        for seed, name in timing.turns(names, args.seeds):
            if name in skipped:
                continue
            print(f"bench: photos seed {seed}: {name}", flush=True)
            try:
                sample = runners[name](seed)
            except processes.CommandFailed as error:
                skipped[name] = str(error)
                print(f"bench: photos: {name} SKIPPED: {error}", flush=True)
                continue
            samples[name].append(sample)
            print(
                f"bench: photos seed {seed}: {name}: holdout accuracy "
                f"{sample.holdout_accuracy:.4f}, {sample.seconds:.1f}s",
                flush=True,
            )
    summaries = {name: summary(runs) for name, runs in samples.items() if runs}
    details = {
        "seeds": args.seeds,
        "quick": args.quick,
        "configs": {kind: str(path.relative_to(REPO)) for kind, path in CONFIGS.items()},
        "peer": {"epochs": args.peer_epochs, "imgsz": PEER_IMGSZ, "model": photo_peer.MODEL},
        "pretraining": json.loads((mirror / photo_pretrain.SIDECAR).read_text())
        if pretrained.cache_info().currsize
        else None,
        "data": {"digest": photos.digest(data / "task"), "folder": str(data)},
        "load_average_before_after": [load_before, machine.load_average()],
        "contenders": summaries,
        "skipped": skipped,
    }
    for name, reason in skipped.items():
        print(f"bench: photos: {name} not measured: {reason}")
    report.write_results("photos", comparisons(summaries, seeds=args.seeds), details)


if __name__ == "__main__":
    main()
