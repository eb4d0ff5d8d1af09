"""Runs the benchmarks one after another, then writes BENCHMARKS.md.

    python bench/run.py                  # every benchmark; record its ratios (make bench)
    python bench/run.py --check          # every benchmark; fail on a ratio that regressed
    python bench/run.py --only serving --quick
    python bench/run.py --no-run --check # compare the results already in bench/results/

Benchmarks run sequentially in their own processes: on a small machine two at once would
measure each other.
"""

import argparse
import subprocess
import sys
import time

import report
from harness import arguments

# name -> (script, arguments of a full run); a --quick run passes --quick alone.
BENCHMARKS = {
    "serving": ("bench_serving.py", ["--requests", "1000", "--duration", "8"]),
    "input": ("bench_input.py", []),
    "training": ("bench_training.py", ["--repeats", "2"]),
    "ingest": ("bench_ingest.py", ["--sizes", "10000", "100000"]),
    "formats": ("bench_formats.py", []),
    # Quick: 1 seed, 2 epochs; the Ultralytics peer only when bench/.peer-venv exists.
    "photos": ("bench_photos.py", ["--seeds", "3"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs (not recorded)")
    parser.add_argument("--check", action="store_true", help="compare ratios, do not record")
    parser.add_argument("--tolerance", type=float, default=0.25, help="allowed ratio drop (0.25)")
    parser.add_argument("--no-run", action="store_true", help="use the results already there")
    args = parser.parse_args()
    names = arguments.subset(parser, args.only, list(BENCHMARKS), "benchmark")

    failed = []
    if not args.no_run:
        for index, name in enumerate(names, start=1):
            script, full = BENCHMARKS[name]
            print(f"bench: [{index}/{len(names)}] {name}", flush=True)
            started = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    str(report.BENCH / script),
                    *(["--quick"] if args.quick else full),
                ],
                cwd=report.BENCH.parent,
            )
            minutes = (time.monotonic() - started) / 60
            print(
                f"bench: {name} {'ok' if done.returncode == 0 else 'FAILED'} in {minutes:.1f} min"
            )
            if done.returncode:
                failed.append(name)

    results = {name: r for name, r in report.load_results().items() if name in names}
    if not results:
        print("bench: no results to report", file=sys.stderr)
        return 1
    if args.check:
        regressions = report.check(results, args.tolerance)
        for line in regressions:
            print(f"bench: regression: {line}", file=sys.stderr)
        print(
            f"bench: checked {sum(len(r['comparisons']) for r in results.values())} ratios of "
            f"{len(results)} benchmark(s): {len(regressions)} regression(s)"
        )
        return 1 if regressions or failed else 0

    if args.quick:
        print(f"bench: {len(results)} quick benchmark(s) in {report.RESULTS} (not recorded)")
    else:
        fresh = report.load_results()
        previous = report.MARKDOWN.read_text() if report.MARKDOWN.is_file() else ""
        kept = report.kept_sections(previous, set(fresh))
        report.MARKDOWN.write_text(report.render_markdown(fresh, kept=kept))
        report.record(results)
        print(
            f"bench: {len(results)} benchmark(s) reported in {report.MARKDOWN}, ratios recorded "
            f"in {report.RECORDED}" + (f"; FAILED: {', '.join(failed)}" if failed else "")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
