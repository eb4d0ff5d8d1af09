"""What the ingest driver holds for a manifest of a million rows (issue 19, point 6).

The driver lists the source and stages the listed units as chunk files before the Beam job
starts; the job then carries chunk numbers only. This measures that phase alone (metadata only:
the rows need no images) at each size, each in a fresh process, the smallest size being the
baseline the others' growth is read against:

    .venv/bin/python bench/bench_listing.py                      # 100k and 1M rows
    .venv/bin/python bench/bench_listing.py --sizes 10000 100000

Prints, per size: listing and staging seconds, RSS before and after listing, bytes per row and
peak RSS; docs/data.md ("What grows with the dataset") quotes the figures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_manifest(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("path,label\n")
        for i in range(rows):
            out.write(f"images/{i % 1000:04d}/{i:07d}.png,class_{i % 10}\n")


def measure(manifest: str, work: str) -> dict:
    """Runs in the child: lists `manifest` and stages its units, as imgclf ingest does."""
    import resource

    import psutil

    from configs import schema
    from transforms.beam import steps
    from transforms.sources import registry as sources

    process = psutil.Process()
    before = process.memory_info().rss
    started = time.perf_counter()
    units = sources.list_units(schema.DataConfig(source=manifest, output_dir=work))
    listed_s = time.perf_counter() - started
    listed_rss = process.memory_info().rss
    started = time.perf_counter()
    chunks = steps.write_unit_chunks(units, tempfile.mkdtemp(dir=work))
    rows = len(units)
    del units
    return {
        "rows": rows,
        "chunks": chunks,
        "list_s": round(listed_s, 2),
        "stage_s": round(time.perf_counter() - started, 2),
        "rss_before_mib": round(before / 2**20),
        "rss_listed_mib": round(listed_rss / 2**20),
        "bytes_per_row": round((listed_rss - before) / rows),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--work", default="/tmp/imgclf-bench-listing")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    os.makedirs(args.work, exist_ok=True)
    results = []
    for size in sorted(args.sizes):
        manifest = Path(args.work) / f"manifest-{size}.csv"
        if not manifest.exists():
            write_manifest(manifest, size)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(manifest), args.work],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"bench_listing: {json.dumps(result)}", flush=True)
    baseline = results[0]
    for result in results[1:]:
        growth = (result["rss_listed_mib"] - result["rss_before_mib"]) / max(
            1, baseline["rss_listed_mib"] - baseline["rss_before_mib"]
        )
        print(
            f"bench_listing: {result['rows']:,} rows hold {growth:.1f}x the listing memory of "
            f"{baseline['rows']:,} ({result['rows'] / baseline['rows']:.0f}x the rows)"
        )
    print(f"bench_listing: done; manifests in {args.work}")


if __name__ == "__main__":
    main()
