"""Ingest at scale: images/s, wall time and peak memory of `imgclf ingest` on synthetic JPEGs.

For each size in --sizes, synthetic class images are generated once (cached under --work) and
`imgclf ingest` runs as a subprocess with the DirectRunner in multi_processing mode, while the
resident set size of its whole process tree (driver and Beam workers, summed) is sampled every
--interval seconds. Baseline, in the same run: the same ingest in in_memory mode (one process) on
--baseline-size images. Memory should stay flat in the number of images: the target is peak RSS
at the largest size within 1.2x of peak RSS at the smallest. Writes bench/results/ingest.json.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import synthetic_images  # beside this script, which Python puts first on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MIB = 1024 * 1024
RSS_TARGET = 1.2  # peak RSS at the largest size / at the smallest
PROGRESS = re.compile(r"ingest: worker (\d+): \d+ units, (\d+) images read")


def ensure_images(work: Path, count: int, classes: int, seed: int) -> Path:
    """The cached synthetic tree for `count` images, generated when missing or different."""
    source = work / f"images-{count}"
    wanted = {"count": count, "classes": classes, "seed": seed, "size": [320, 240]}
    if synthetic_images.read_marker(source) == wanted:
        found = sum(1 for _ in source.glob("class_*/*.jpg"))
        if found == count:
            print(f"bench: reusing {count} synthetic images in {source}")
            return source
    shutil.rmtree(source, ignore_errors=True)
    print(f"bench: generating {count} synthetic images in {source}", flush=True)
    started = time.perf_counter()
    synthetic_images.write_synthetic(source, count, classes=classes, seed=seed)
    seconds = time.perf_counter() - started
    print(f"bench: generated {count} images in {seconds:.1f}s ({count / seconds:.0f}/s)")
    return source


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
    for marker in ("sdk_worker_main", "tfx_pipeline.cli"):
        if any(marker in part for part in cmdline):
            return "beam-worker" if marker == "sdk_worker_main" else "driver"
    return os.path.basename(cmdline[0]) if cmdline else "?"


def run_ingest(
    source: Path, out_dir: Path, mode: str, interval: float, log_path: Path, max_seconds: float
) -> dict:
    """Runs one ingest subprocess; wall seconds, peak tree RSS and its composition, the report."""
    shutil.rmtree(out_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "tfx_pipeline.cli",
        "ingest",
        "--set",
        f"data.source={source}",
        "--set",
        f"data.output_dir={out_dir}",
        "--set",
        f"data.beam_direct_mode={mode}",
    ]
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
    while process.poll() is None:
        parts = tree_rss(root)
        total = sum(rss for rss, _ in parts.values())
        elapsed = time.perf_counter() - started
        if total > peak:
            peak, peak_at, peak_parts = total, elapsed, parts
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
    result = {
        "mode": mode,
        "seconds": round(seconds, 2),
        "startup_seconds": round(listed_at[0], 2) if listed_at else None,
        "peak_rss_mib": round(peak / MIB, 1),
        "peak_at_seconds": round(peak_at, 1),
        "peak_processes": sorted(
            ({"name": name, "rss_mib": round(rss / MIB, 1)} for rss, name in peak_parts.values()),
            key=lambda p: -p["rss_mib"],
        ),
        "returncode": process.returncode,
        "timed_out": timed_out,
        "log": str(log_path),
        "rss_timeline": timeline,
    }
    dataset = out_dir / "latest"
    if process.returncode == 0 and dataset.is_file():
        info = json.loads((out_dir / dataset.read_text().strip() / "dataset.json").read_text())
        result.update(files_seen=info["files_seen"], written=info["written"])
        result["images_per_s"] = round(info["files_seen"] / seconds, 1)
    elif timed_out:
        read = sum(read_by_worker.values())
        result.update(images_read_before_stop=read)
    shutil.rmtree(out_dir, ignore_errors=True)  # tens of GB at scale: keep only the figures
    return result


def summarize(runs: list[dict]) -> dict:
    """Median figures over repeats; the first run's peak composition and timeline."""
    ok = [r for r in runs if r["returncode"] == 0]
    if not ok:
        return {**runs[0], "repeats": len(runs)}
    figures = dict(ok[0])
    for key in ("seconds", "peak_rss_mib", "images_per_s", "startup_seconds"):
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            figures[key] = round(statistics.median(values), 2)
    figures["repeats"] = len(ok)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", default="/tmp/imgclf-bench-ingest", help="image cache, logs")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="ingest runs per figure (median)")
    parser.add_argument("--interval", type=float, default=0.2, help="RSS sampling period (s)")
    parser.add_argument(
        "--baseline-size", type=int, help="in_memory baseline size (default: 10000 if in --sizes)"
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=2400, help="stop one ingest after")
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    baseline_size = args.baseline_size or (10_000 if 10_000 in sizes else sizes[0])
    work = Path(args.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)

    plan = [(size, "multi_processing") for size in sizes]
    if not args.no_baseline:
        plan.insert(
            sizes.index(baseline_size) + 1 if baseline_size in sizes else 0,
            (baseline_size, "in_memory"),
        )
    rows = []
    for size, mode in plan:
        source = ensure_images(work, size, args.classes, args.seed)
        runs = []
        for repeat in range(args.repeats):
            print(
                f"bench: ingest {size} images, {mode} (run {repeat + 1}/{args.repeats})", flush=True
            )
            result = run_ingest(
                source,
                work / f"out-{size}-{mode}",
                mode,
                args.interval,
                work / "logs" / f"ingest-{size}-{mode}-{repeat}.log",
                args.max_seconds,
            )
            print(
                f"bench:   {result['seconds']:.1f}s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                f"exit {result['returncode']}{' (timed out)' if result['timed_out'] else ''}",
                flush=True,
            )
            runs.append(result)
        rows.append({"size": size, **summarize(runs)})

    parallel = {r["size"]: r for r in rows if r["mode"] == "multi_processing"}
    smallest, largest = parallel.get(sizes[0]), parallel.get(sizes[-1])
    ratio = None
    if smallest and largest and largest is not smallest and smallest["peak_rss_mib"]:
        ratio = round(largest["peak_rss_mib"] / smallest["peak_rss_mib"], 3)
    baseline = next((r for r in rows if r["mode"] == "in_memory"), None)
    speedup = None
    if (
        baseline
        and baseline.get("images_per_s")
        and parallel.get(baseline["size"], {}).get("images_per_s")
    ):
        speedup = round(parallel[baseline["size"]]["images_per_s"] / baseline["images_per_s"], 3)
    figures = {
        "runs": rows,
        "rss_ratio_largest_to_smallest": ratio,
        "rss_ratio_sizes": [sizes[0], sizes[-1]],
        "rss_target": RSS_TARGET,
        "rss_within_target": None if ratio is None else ratio <= RSS_TARGET,
        "multi_processing_speedup_vs_in_memory": speedup,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "total_memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(figures, indent=2) + "\n")

    print(
        f"{'images':>8}  {'mode':18}{'images/s':>10}{'seconds':>10}{'startup s':>10}"
        f"{'peak RSS MiB':>14}"
    )
    for row in rows:
        rate = f"{row['images_per_s']:10.1f}" if row.get("images_per_s") else f"{'-':>10}"
        startup = f"{row['startup_seconds']:10.1f}" if row.get("startup_seconds") else f"{'-':>10}"
        print(
            f"{row['size']:8d}  {row['mode']:18}{rate}{row['seconds']:10.1f}{startup}"
            f"{row['peak_rss_mib']:14.0f}"
        )
    if speedup is not None:
        print(f"multi_processing / in_memory images/s at {baseline['size']}: {speedup:.2f}x")
    if ratio is not None:
        verdict = "within" if ratio <= RSS_TARGET else "OVER"
        print(
            f"peak RSS {sizes[-1]} / {sizes[0]}: {ratio:.2f}x ({verdict} the {RSS_TARGET}x target)"
        )
    print(f"bench: wrote {RESULTS / 'ingest.json'}")


if __name__ == "__main__":
    main()
