"""The prepared GPU check (issue 17): MobileNetV2 at 224x224 on the real-photo crops, trained by
imgclf under float32 and under mixed_float16, with the GPU's utilisation sampled all along.

    python bench/gpu_check.py [--out DIR] [--epochs 3]      # about 3-5 minutes on one GPU

For each precision it runs `python -m trainer.task` as a user would (a fresh process each, so
neither inherits the other's memory), samples utilisation and memory through NVML (nvidia-ml-py)
or `nvidia-smi` every 0.2 s, and reads imgclf's own per-epoch telemetry line (images/s, GPU peak
memory). It writes `<out>/gpu_check.json` and prints one line per precision and a final line
with the mixed/float32 speed-up. Without a GPU it says so and exits 2, having trained nothing.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import photos

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "examples" / "photos_mobilenet.yaml"
PRECISIONS = ("float32", "mixed_float16")
TELEMETRY = re.compile(r"telemetry: (\d+) images/s.*?(?:GPU peak memory (\d+) MiB)?$")
SAMPLE_SECONDS = 0.2


class Sampler(threading.Thread):
    """GPU 0's utilisation (%) and memory in use (MiB), every SAMPLE_SECONDS, until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()
        self.read = nvml_reader() or nvidia_smi_reader()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            sample = self.read()
            if sample is not None:
                self.samples.append(sample)

    def summary(self) -> dict:
        busy = [u for u, _ in self.samples]
        return {
            "samples": len(self.samples),
            "utilization_mean_percent": round(statistics.fmean(busy), 1) if busy else None,
            "utilization_p90_percent": round(sorted(busy)[int(0.9 * (len(busy) - 1))], 1)
            if busy
            else None,
            "memory_used_max_mib": max((m for _, m in self.samples), default=None),
        }


def nvml_reader():
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no module, no driver: fall back to nvidia-smi
        return None

    def read():
        rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return float(rates.gpu), memory.used / 2**20

    return read


def nvidia_smi_reader():
    query = [
        "nvidia-smi",
        "--query-gpu=utilization.gpu,memory.used",
        "--format=csv,noheader,nounits",
    ]

    def read():
        try:
            line = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
            utilization, memory = line.splitlines()[0].split(",")
            return float(utilization), float(memory)
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    return read


def gpu_visible() -> bool:
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return found.returncode == 0 and found.stdout.strip().splitlines()[-1:] != ["0"]


def imgclf(*args: str, env: dict) -> list[str]:
    """Runs `imgclf <args>` (the CLI module, so no console script is needed), echoing its
    output; returns its lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
    if process.wait():
        raise SystemExit(f"gpu_check: `imgclf {args[0]}` failed (exit {process.returncode})")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", REPO / "bench" / "results"))
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the script itself on any device: 64x64 images, 1 epoch, no GPU needed",
    )
    args = parser.parse_args()
    size = 64 if args.smoke else 224
    if args.smoke:
        args.epochs = 1
    elif not gpu_visible():
        print("gpu_check: TensorFlow sees no GPU here; nothing was trained", file=sys.stderr)
        return 2
    work = args.out / "gpu_check_work"
    # The training crops, split by ingest (the holdout plays no part in a speed check).
    data = photos.ensure_sets(work / "photos") / "task" / "train"
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "DATA_OUT": str(work / "tfrecords"),
        "RUNS_DIR": str(work / "runs"),
    }
    common = [
        "--config",
        str(CONFIG),
        "--set",
        f"data.image_size=[{size}, {size}]",
        "--set",
        f"data.batch_size={args.batch_size}",
        "--set",
        "model.weights=null",  # a speed check: no weights file needed
        "--set",
        "train.fine_tune={}",
        "--set",
        f"train.epochs={args.epochs}",
    ]
    imgclf("ingest", *common, env=env)
    results = {}
    for precision in PRECISIONS:
        sampler = Sampler()
        sampler.start()
        started = time.monotonic()
        lines = imgclf("train", *common, "--set", f"train.precision={precision}", env=env)
        sampler.stopped.set()
        sampler.join()
        epochs = [TELEMETRY.search(line) for line in lines]
        epochs = [match for match in epochs if match]
        # The first epoch traces and compiles: the later ones show the steady rate.
        steady = [int(m.group(1)) for m in epochs[1:]] or [int(m.group(1)) for m in epochs]
        peaks = [int(m.group(2)) for m in epochs if m.group(2)]
        results[precision] = {
            "images_per_second": max(steady) if steady else None,
            "images_per_second_by_epoch": [int(m.group(1)) for m in epochs],
            "tf_peak_memory_mib": max(peaks) if peaks else None,
            "wall_seconds": round(time.monotonic() - started, 1),
            **sampler.summary(),
        }
        print(f"gpu_check: {precision}: {json.dumps(results[precision])}")
    speedup = None
    if all(results[p]["images_per_second"] for p in PRECISIONS):
        speedup = (
            results["mixed_float16"]["images_per_second"] / results["float32"]["images_per_second"]
        )
    report = {
        "model": "mobilenet_v2",
        "image_size": size,
        "smoke": args.smoke,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "results": results,
        "mixed_float16_speedup": speedup,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    shown = f"{speedup:.2f}x" if speedup else "unknown"
    where = args.out / "gpu_check.json"
    print(f"gpu_check: mixed_float16 vs float32 speed-up {shown}; report in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
