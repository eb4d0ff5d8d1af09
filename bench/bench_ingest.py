"""Ingest at scale: images/s, wall time and peak memory of `imgclf ingest` on synthetic JPEGs.

For each size in --sizes, synthetic class images are generated once (cached under --work) and
`imgclf ingest` runs as a subprocess with the DirectRunner in its default mode, while the
resident set size of its whole process tree (driver and Beam workers, summed) is sampled every
--interval seconds. Baseline (issue 9), alternating with it on the same images: a plain
single-process Python loop that walks the class folders, decodes each JPEG with PIL and writes
tf.train.Examples to one TFRecord file, sampled the same way. imgclf must reach 1.5x the loop's
images/s on 2 cores (two cores against one), peak RSS within 1.5 GiB, and hold memory flat:
peak RSS at the largest size within 1.2x of the smallest. Also measured: the same ingest in
multi_processing mode (a worker process per core) on --baseline-size images.
Writes bench/results/ingest.json through bench/report.py.
"""

import argparse
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import report  # beside this script, which Python puts first on sys.path
import synthetic_images
from harness import arguments, comparison, machine, timing

from configs import schema

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
RSS_TARGET = 1.2  # peak RSS at the largest size / at the smallest
SPEED_TARGET = 1.5  # imgclf's images/s / the loop's
PEAK_RSS_TARGET_MIB = 1536
DEFAULT_MODE = schema.DataConfig.model_fields["beam_direct_mode"].default
OTHER_MODE = "multi_processing"
PIL_LOOP = "pil_loop"  # the baseline's mode name in the rows
PROGRESS = re.compile(r"ingest: worker (\d+): \d+ units, (\d+) images read")


def tree_rss(root: psutil.Process) -> dict[int, tuple[int, str]]:
    """{pid: (rss bytes, short name)} of `root` and every descendant still alive."""
    found = {}
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            cmdline = process.cmdline()
            found[process.pid] = (process.memory_info().rss, short_name(cmdline))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def short_name(cmdline: list[str]) -> str:
    for marker, name in (
        ("sdk_worker_main", "beam-worker"),
        ("cli", "driver"),
        ("--pil-loop", "pil-loop"),
    ):
        if any(marker in part for part in cmdline):
            return name
    return os.path.basename(cmdline[0]) if cmdline else "?"


def measure(command: list[str], interval: float, log_path: Path, max_seconds: float) -> dict:
    """Runs `command` as a subprocess, sampling its process tree's RSS: wall seconds, peak RSS
    (summed over the tree), the peak's composition, per-process peaks and a timeline."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a timeout can end all of it
    )
    listed_at: list[float] = []
    read_by_worker: dict[str, int] = {}

    def pump():
        with log_path.open("w") as log:
            for line in process.stdout:
                elapsed = time.perf_counter() - started
                log.write(f"{elapsed:8.2f} {line}")
                log.flush()
                if "read units from" in line and not listed_at:
                    listed_at.append(elapsed)
                if match := PROGRESS.search(line):
                    read_by_worker[match.group(1)] = int(match.group(2))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    root = psutil.Process(process.pid)
    peak, peak_at, peak_parts, timeline, timed_out = 0, 0.0, {}, [], False
    process_peaks: dict[int, tuple[int, str]] = {}
    while process.poll() is None:
        parts = tree_rss(root)
        total = sum(rss for rss, _ in parts.values())
        elapsed = time.perf_counter() - started
        if total > peak:
            peak, peak_at, peak_parts = total, elapsed, parts
        for pid, (rss, name) in parts.items():
            if rss > process_peaks.get(pid, (0, ""))[0]:
                process_peaks[pid] = (rss, name)
        if not timeline or elapsed - timeline[-1][0] >= 1.0:
            timeline.append((round(elapsed, 1), round(total / MIB, 1), len(parts)))
        if elapsed > max_seconds:
            timed_out = True
            os.killpg(process.pid, 15)
            process.wait(30)
            break
        time.sleep(interval)
    seconds = time.perf_counter() - started
    reader.join(10)
    return {
        "seconds": round(seconds, 2),
        "startup_seconds": round(listed_at[0], 2) if listed_at else None,
        "peak_rss_mib": round(peak / MIB, 1),
        "peak_at_seconds": round(peak_at, 1),
        "peak_processes": by_size(peak_parts),
        # Each process's own peak, whenever it came: which process grows with the dataset.
        "process_peaks": by_size(process_peaks),
        "returncode": process.returncode,
        "timed_out": timed_out,
        "log": str(log_path),
        "rss_timeline": timeline,
        "images_read_before_stop": sum(read_by_worker.values()) if timed_out else None,
    }


def by_size(parts: dict[int, tuple[int, str]]) -> list[dict]:
    """[{name, rss_mib}] of the processes that hold memory, largest first."""
    listed = ({"name": name, "rss_mib": round(rss / MIB, 1)} for rss, name in parts.values())
    return sorted((p for p in listed if p["rss_mib"] >= 10), key=lambda p: -p["rss_mib"])


def run_ingest(
    source: Path, out_dir: Path, mode: str, interval: float, log_path: Path, max_seconds: float
) -> dict:
    """Runs one `imgclf ingest`; wall seconds, peak tree RSS and its composition, the report."""
    shutil.rmtree(out_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "cli",
        "ingest",
        "--set",
        f"data.source={source}",
        "--set",
        f"data.output_dir={out_dir}",
        "--set",
        f"data.beam_direct_mode={mode}",
    ]
    result = {"mode": mode, **measure(command, interval, log_path, max_seconds)}
    dataset = out_dir / "latest"
    if result["returncode"] == 0 and dataset.is_file():
        info = json.loads((out_dir / dataset.read_text().strip() / "dataset.json").read_text())
        result.update(files_seen=info["files_seen"], written=info["written"])
        result["images_per_s"] = round(info["files_seen"] / result["seconds"], 1)
    shutil.rmtree(out_dir, ignore_errors=True)  # tens of GB at scale: keep only the figures
    return result


def run_pil_loop(
    source: Path, out_dir: Path, interval: float, log_path: Path, max_seconds: float
) -> dict:
    """Runs the baseline loop (this script with --pil-loop) as its own process."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    command = [sys.executable, __file__, "--pil-loop", str(source), str(out_dir / "all.tfrecord")]
    result = {"mode": PIL_LOOP, **measure(command, interval, log_path, max_seconds)}
    written = out_dir / "written.json"
    if result["returncode"] == 0 and written.is_file():
        result.update(json.loads(written.read_text()))
        result["images_per_s"] = round(result["files_seen"] / result["seconds"], 1)
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def pil_loop(source: Path, out_path: Path) -> None:
    """The baseline: what a hand-written conversion script does, in one process. Walks the class
    folders, decodes every JPEG with PIL (to validate it and read its size) and writes each as a
    tf.train.Example (original bytes, size, label) to one TFRecord file."""
    import io

    import tensorflow as tf
    from PIL import Image

    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    seen = written = 0
    with tf.io.TFRecordWriter(str(out_path)) as writer:
        for label, name in enumerate(classes):
            for path in sorted((source / name).glob("*.jpg")):
                seen += 1
                data = path.read_bytes()
                try:
                    with Image.open(io.BytesIO(data)) as image:
                        width, height = image.convert("RGB").size
                except OSError:
                    continue
                feature = {
                    "image/encoded": bytes_feature(tf, data),
                    "image/height": int_feature(tf, height),
                    "image/width": int_feature(tf, width),
                    "image/class/label": int_feature(tf, label),
                    "image/class/text": bytes_feature(tf, name.encode()),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
                written += 1
    summary = {"files_seen": seen, "written": written}
    (out_path.parent / "written.json").write_text(json.dumps(summary))


def bytes_feature(tf, value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def int_feature(tf, value: int):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def summarize(runs: list[dict]) -> dict:
    """Median figures over repeats; the first run's peak composition and timeline."""
    ok = [r for r in runs if r["returncode"] == 0]
    if not ok:
        return {**runs[0], "repeats": len(runs)}
    figures = dict(ok[0])
    for key in ("seconds", "peak_rss_mib", "images_per_s", "startup_seconds"):
        median = timing.median_of(ok, key)
        if median is not None:
            figures[key] = median
    figures["repeats"] = len(ok)
    return figures


def parse_args():
    options = arguments.Options(__doc__, "500 and 2,000 images")
    options.add_sized("--sizes", [10_000, 100_000], [500, 2000], "images", type=int, nargs="+")
    options.add("--work", default="/tmp/imgclf-bench-ingest", help="image cache, logs")
    options.add("--classes", type=int, default=10)
    options.add("--seed", type=int, default=0)
    options.add("--repeats", type=int, default=1, help="runs per figure (median)")
    options.add("--interval", type=float, default=0.2, help="RSS sampling period (s)")
    options.add(
        "--loop-sizes", type=int, nargs="*", help="sizes for the PIL loop (default: --sizes)"
    )
    options.add(
        "--baseline-size", type=int, help="multi_processing run size (default: 10000 if in --sizes)"
    )
    options.add("--no-baseline", action="store_true", help="skip the multi_processing run")
    options.add("--max-seconds", type=float, default=2400, help="stop one run after")
    # Internal: the baseline runs as this script in its own process, so its RSS is its own.
    options.add("--pil-loop", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    return options.parse()


def measure_all(args: argparse.Namespace, sizes: list[int], work: Path) -> list[dict]:
    """Every run, one row per (size, mode): imgclf and the PIL loop alternate on each size (the
    loop first on odd repeats), then the OTHER_MODE run."""
    loop_sizes = set(sizes if args.loop_sizes is None else args.loop_sizes)
    baseline_size = args.baseline_size or (10_000 if 10_000 in sizes else sizes[0])  # OTHER_MODE
    runs: dict[tuple[int, str], list[dict]] = {}

    def run_once(size: int, source: Path, mode: str, repeat: int) -> None:
        print(f"bench: {size} images, {mode} (run {repeat + 1}/{args.repeats})", flush=True)
        log_path = work / "logs" / f"ingest-{size}-{mode}-{repeat}.log"
        out_dir = work / f"out-{size}-{mode}"
        if mode == PIL_LOOP:
            result = run_pil_loop(source, out_dir, args.interval, log_path, args.max_seconds)
        else:
            result = run_ingest(source, out_dir, mode, args.interval, log_path, args.max_seconds)
        print(
            f"bench:   {result['seconds']:.1f}s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
            f"exit {result['returncode']}{' (timed out)' if result['timed_out'] else ''}",
            flush=True,
        )
        runs.setdefault((size, mode), []).append(result)

    for size in sizes:
        source = synthetic_images.ensure(work / f"images-{size}", size, args.classes, args.seed)
        sides = [DEFAULT_MODE, *([PIL_LOOP] if size in loop_sizes else [])]
        for repeat, mode in timing.turns(sides, args.repeats, reverse_odd_rounds=True):
            run_once(size, source, mode, repeat)
        if size == baseline_size and not args.no_baseline:
            for repeat in range(args.repeats):
                run_once(size, source, OTHER_MODE, repeat)
    return [{"size": size, **summarize(results)} for (size, _), results in runs.items()]


def rss_ratio(rows: list[dict], mode: str, sizes: list[int]) -> float | None:
    """Peak RSS at the largest size / at the smallest, for one mode."""
    by_size = {r["size"]: r for r in rows if r["mode"] == mode and r["returncode"] == 0}
    smallest, largest = by_size.get(sizes[0]), by_size.get(sizes[-1])
    if not smallest or not largest or largest is smallest or not smallest["peak_rss_mib"]:
        return None
    return round(largest["peak_rss_mib"] / smallest["peak_rss_mib"], 3)


def build_comparisons(rows: list[dict], sizes: list[int]) -> list[comparison.Comparison]:
    """imgclf (its default mode) beside the PIL loop: images/s and peak RSS per size, and how
    flat peak RSS stays from the smallest size to the largest."""
    parallel = {r["size"]: r for r in rows if r["mode"] == DEFAULT_MODE}
    loop = {r["size"]: r for r in rows if r["mode"] == PIL_LOOP}
    versus_loop = functools.partial(comparison.Comparison, baseline_name="PIL loop, 1 process")
    comparisons = []
    for size in sizes:
        mine, theirs = parallel.get(size, {}), loop.get(size, {})
        if mine.get("images_per_s") and theirs.get("images_per_s"):
            comparisons.append(
                versus_loop(
                    key=f"ingest.images_per_s.{size}",
                    what=f"ingest {size} JPEGs, images/s",
                    unit="images/s",
                    imgclf=mine["images_per_s"],
                    baseline=theirs["images_per_s"],
                    target=f">= {SPEED_TARGET}x the loop",
                    target_met=mine["images_per_s"] >= SPEED_TARGET * theirs["images_per_s"],
                )
            )
            comparisons.append(
                versus_loop(
                    key=f"ingest.peak_rss_mib.{size}",
                    what=f"ingest {size} JPEGs, peak RSS",
                    unit="MiB",
                    imgclf=mine["peak_rss_mib"],
                    baseline=theirs["peak_rss_mib"],
                    higher_is_better=False,
                    target=f"<= {PEAK_RSS_TARGET_MIB} MiB",
                    target_met=mine["peak_rss_mib"] <= PEAK_RSS_TARGET_MIB,
                )
            )
    mine_ratio = rss_ratio(rows, DEFAULT_MODE, sizes)
    loop_ratio = rss_ratio(rows, PIL_LOOP, sizes)
    if mine_ratio is not None and loop_ratio is not None:
        comparisons.append(
            versus_loop(
                key="ingest.rss_flatness",
                what=f"peak RSS {sizes[-1]} / {sizes[0]} images",
                unit="x",
                imgclf=mine_ratio,
                baseline=loop_ratio,
                higher_is_better=False,
                target=f"<= {RSS_TARGET}x",
                target_met=mine_ratio <= RSS_TARGET,
            )
        )
    return comparisons


def build_details(rows: list[dict], sizes: list[int]) -> dict:
    """The figures behind the comparisons: every run, RSS ratios, OTHER_MODE against the
    default."""
    ratio = rss_ratio(rows, DEFAULT_MODE, sizes)
    default = {r["size"]: r for r in rows if r["mode"] == DEFAULT_MODE}
    other = next((r for r in rows if r["mode"] == OTHER_MODE), None)
    speedup = None
    if other and other.get("images_per_s"):
        mine = default.get(other["size"], {}).get("images_per_s")
        speedup = round(other["images_per_s"] / mine, 3) if mine else None
    return {
        "runs": rows,
        "default_mode": DEFAULT_MODE,
        "rss_ratio_largest_to_smallest": ratio,
        "rss_ratio_sizes": [sizes[0], sizes[-1]],
        "rss_target": RSS_TARGET,
        "rss_within_target": None if ratio is None else ratio <= RSS_TARGET,
        "pil_loop_rss_ratio_largest_to_smallest": rss_ratio(rows, PIL_LOOP, sizes),
        f"{OTHER_MODE}_images_per_s_vs_{DEFAULT_MODE}": speedup,
        "machine": machine.summary(),
        "total_memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
    }


def print_rows(rows: list[dict]) -> None:
    print(
        f"{'images':>8}  {'mode':18}{'images/s':>10}{'seconds':>10}{'startup s':>10}"
        f"{'peak RSS MiB':>14}  per process at peak"
    )
    for row in rows:
        rate = f"{row['images_per_s']:10.1f}" if row.get("images_per_s") else f"{'-':>10}"
        startup = f"{row['startup_seconds']:10.1f}" if row.get("startup_seconds") else f"{'-':>10}"
        parts = ", ".join(f"{p['name']} {p['rss_mib']:.0f}" for p in row["peak_processes"])
        print(
            f"{row['size']:8d}  {row['mode']:18}{rate}{row['seconds']:10.1f}{startup}"
            f"{row['peak_rss_mib']:14.0f}  {parts}"
        )


def main() -> None:
    args = parse_args()
    if args.pil_loop:
        pil_loop(Path(args.pil_loop[0]), Path(args.pil_loop[1]))
        return
    sizes = sorted(set(args.sizes))
    machine.announce()
    work = Path(args.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    rows = measure_all(args, sizes, work)
    print_rows(rows)
    details = build_details(rows, sizes)
    speedup = details[f"{OTHER_MODE}_images_per_s_vs_{DEFAULT_MODE}"]
    if speedup is not None:
        print(f"{OTHER_MODE} / {DEFAULT_MODE} images/s: {speedup:.2f}x")
    report.write_results("ingest", build_comparisons(rows, sizes), details)


if __name__ == "__main__":
    main()
