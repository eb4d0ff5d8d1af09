"""The peer of the real-photo benchmark: Ultralytics' YOLOv8n-cls trained from scratch on the
same crops, in an environment of its own (bench/.peer-venv: torch, torchvision, ultralytics,
about 6 GB; never a dependency of imgclf).

Ultralytics expects `<data>/train/<class>` and `<data>/val/<class>`: train/ is the task's
training crops and val/ is the holdout folder, both as links. With `val=False` Ultralytics looks
at val/ only after the last epoch, so nothing in training is chosen by the holdout (best.pt is
last.pt); the holdout accuracy is then measured by predicting every holdout file with last.pt.
Everything else is Ultralytics' defaults (batch 16, SGD/AdamW auto, RandomResizedCrop, flips,
HSV and erasing augmentation, dataloader workers), run offline: YOLO_OFFLINE=1, a config
folder of its own with settings sync off, AMP off (a CPU), no plots (no font download).

The harness (imgclf's .venv, no torch) calls `run`; this file, run by the peer venv's Python
with --worker, trains and predicts:
    bench/.peer-venv/bin/python bench/photo_peer.py --worker --data D --holdout H --out R.json
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import processes  # beside this script: the peer venv imports it too (stdlib only)

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".peer-venv"
# torch and torchvision pinned to the pair pip takes from this machine's disk (PyPI's torchvision
# does not import beside the torch 2.13.0 file); ultralytics takes what they allow.
PACKAGES = ("torch==2.14.1", "torchvision==0.29.1", "ultralytics")
READY = VENV / ".imgclf-peer-ready"  # written once the packages import
MODEL = "yolov8n-cls.yaml"  # the architecture only: from scratch, nothing downloaded


def python() -> Path:
    return VENV / "bin" / "python"


def venv_ready() -> bool:
    return READY.is_file() and python().is_file()


def ensure_venv() -> Path:
    """The peer venv's Python, creating the venv and installing the peer's packages first when
    they are not there yet (minutes; pip's output goes to bench/.peer-venv/install.log)."""
    if venv_ready():
        return python()
    print(f"peer: creating {VENV} with {' '.join(PACKAGES)} (about 6 GB, several minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    log = VENV / "install.log"
    with log.open("w") as out:
        installed = subprocess.run(
            [str(python()), "-m", "pip", "install", *PACKAGES], stdout=out, stderr=out
        )
    if installed.returncode:
        raise RuntimeError(f"pip install of the peer's packages failed; see {log}")
    subprocess.run([str(python()), "-c", "import torch, torchvision, ultralytics"], check=True)
    READY.write_text(" ".join(PACKAGES) + "\n")
    return python()


def layout(task_dir: Path, work: Path) -> Path:
    """`work/yolo-data` with train/ -> the task's training crops and val/ -> its holdout."""
    data = work / "yolo-data"
    data.mkdir(parents=True, exist_ok=True)
    for name, target in (("train", task_dir / "train"), ("val", task_dir / "holdout")):
        link = data / name
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target.resolve(), target_is_directory=True)
    return data


def run(task_dir: Path, work: Path, seed: int, epochs: int, imgsz: int) -> dict:
    """Trains and scores the peer in its venv; returns the worker's result (see `worker`).
    processes.CommandFailed when it fails."""
    data = layout(task_dir, work)
    out = work / f"peer-result-{seed}.json"
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(work / "yolo-config"),
        "PYTHONPATH": "",
    }
    command = [
        str(ensure_venv()),
        str(Path(__file__).resolve()),
        "--worker",
        f"--data={data}",
        f"--holdout={task_dir / 'holdout'}",
        f"--project={work / 'yolo-runs'}",
        f"--seed={seed}",
        f"--epochs={epochs}",
        f"--imgsz={imgsz}",
        f"--out={out}",
    ]
    log = work / f"peer-{seed}.log"
    processes.run_logged(command, log, env)
    if not out.is_file():
        raise processes.CommandFailed(f"the peer wrote no {out} ({log}): {processes.tail(log)}")
    return json.loads(out.read_text())


# --- in the peer venv ---


def worker(args: argparse.Namespace) -> dict:
    """Trains YOLOv8n-cls from scratch; its training seconds and holdout accuracy with last.pt."""
    from ultralytics import YOLO, settings

    settings.update({"sync": False})
    model = YOLO(MODEL, task="classify")
    started = time.perf_counter()
    model.train(
        data=str(args.data),
        epochs=args.epochs,
        imgsz=args.imgsz,
        seed=args.seed,
        device="cpu",
        pretrained=False,
        amp=False,
        val=False,
        plots=False,
        project=str(args.project),
        name=f"seed{args.seed}",
        exist_ok=True,
        verbose=False,
    )
    train_seconds = time.perf_counter() - started
    save_dir = Path(model.trainer.save_dir)
    trained = YOLO(save_dir / "weights" / "last.pt", task="classify")
    # Counted on the trained model: the YAML's is built for 1000 classes before training.
    parameters = sum(p.numel() for p in trained.model.parameters())
    correct = total = 0
    for class_dir in sorted(p for p in Path(args.holdout).iterdir() if p.is_dir()):
        for result in trained.predict(
            source=str(class_dir), imgsz=args.imgsz, device="cpu", stream=True, verbose=False
        ):
            correct += result.names[result.probs.top1] == class_dir.name
            total += 1
    return {
        "holdout_accuracy": correct / total,
        "holdout_images": total,
        "train_seconds": train_seconds,
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "parameters": parameters,
        "epoch_seconds": epoch_seconds(save_dir / "results.csv"),
        "ultralytics_val_top1": float(model.trainer.metrics.get("metrics/accuracy_top1", -1)),
    }


def epoch_seconds(results_csv: Path) -> list[float]:
    """Ultralytics' cumulative time at the end of each epoch (results.csv's `time` column)."""
    if not results_csv.is_file():
        return []
    lines = results_csv.read_text().strip().splitlines()
    header = [name.strip() for name in lines[0].split(",")]
    if "time" not in header:
        return []
    column = header.index("time")
    return [float(line.split(",")[column]) for line in lines[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", action="store_true", help="train and predict (peer venv)")
    parser.add_argument("--data", type=Path, help="folder with train/ and val/ class folders")
    parser.add_argument("--holdout", type=Path, help="holdout class folders")
    parser.add_argument("--project", type=Path, help="where Ultralytics writes its runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--out", type=Path, help="result JSON")
    args = parser.parse_args()
    if not args.worker:
        print(ensure_venv())
        return
    result = worker(args)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"peer: holdout accuracy {result['holdout_accuracy']:.4f} in {result['train_seconds']:.1f}s"
    )


if __name__ == "__main__":
    main()
