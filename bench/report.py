"""The benchmarks' results: one file per benchmark, BENCHMARKS.md and the regression check.

A benchmark measures imgclf and a baseline alternately in one run and records each pair as a
`harness.comparison.Comparison`, whose ratio says how many times better imgclf is.
`bench/recorded.json` (committed) holds the ratios of the last recorded run; `bench/run.py
--check` fails when a ratio fell below its recorded value by more than the tolerance. Ratios, not
absolute figures, are compared: they carry over between machines far better.
"""

import json
import re
import time
from dataclasses import asdict
from pathlib import Path

from harness import comparison, machine

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
RECORDED = BENCH / "recorded.json"
MARKDOWN = BENCH.parent / "BENCHMARKS.md"


def write_results(
    name: str, comparisons: list[comparison.Comparison], details: dict | None = None
) -> Path:
    """bench/results/<name>.json: the machine, every comparison and the benchmark's own details;
    prints the side-by-side table."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine.describe(),
        "comparisons": [asdict(c) for c in comparisons],
        "details": details or {},
    }
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    comparison.print_table(comparisons)
    print(f"bench: wrote {path}")
    return path


def load_results() -> dict[str, dict]:
    """Every results file by benchmark name."""
    if not RESULTS.is_dir():
        return {}
    return {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))}


def kept_sections(markdown: str, rerun: set[str]) -> dict[str, str]:
    """The `## <name> (measured ...)` sections of an existing BENCHMARKS.md whose benchmark is
    not in `rerun`, by name: a run of some benchmarks keeps the others' last figures."""
    sections = re.split(r"^(?=## )", markdown, flags=re.MULTILINE)[1:]
    kept = {}
    for section in sections:
        name = section.split(maxsplit=2)[1]
        if name not in rerun:
            kept[name] = section.rstrip("\n") + "\n"
    return kept


def render_markdown(results: dict[str, dict], notes: str = "", kept: dict | None = None) -> str:
    """BENCHMARKS.md: the machine, then one table per benchmark: those of `results`, and the
    `kept` sections of benchmarks not run this time, in name order."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); do not edit by hand.",
        "",
    ]
    machines = {json.dumps(r["machine"], sort_keys=True) for r in results.values()}
    for described in sorted(machines):
        m = json.loads(described)
        lines.append(
            f"Machine: {m['cpu']}, {m['cpu_count']} CPU cores, {m['gpus']} GPU(s); "
            f"{m['platform']}; Python {m['python']}, TensorFlow {m['tensorflow']}, "
            f"Keras {m['keras']}."
        )
    lines += [
        "",
        "Each row: imgclf's figure and the baseline's, measured alternately in the same run "
        "(medians of repeats). Ratio = how many times better imgclf is (above 1: imgclf wins).",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    kept = kept or {}
    for name in sorted({*results, *kept}):
        if name not in results:
            lines.append(kept[name])
            continue
        result = results[name]
        lines += [
            f"## {name} (measured {result['measured']})",
            "",
            "| figure | unit | imgclf | baseline | ratio | target |",
            "|---|---|---:|---:|---:|---|",
        ]
        for c in result["comparisons"]:
            met = {True: " ✅", False: " ❌", None: ""}[c["target_met"]]
            lines.append(
                f"| {c['what']} | {c['unit']} | {c['imgclf']:.2f} | {c['baseline']:.2f} "
                f"({c['baseline_name']}) | {c['ratio']:.2f} | {c['target']}{met} |"
            )
        lines.append("")
    return "\n".join(lines)


def recorded_ratios() -> dict[str, float]:
    return json.loads(RECORDED.read_text()) if RECORDED.is_file() else {}


def record(results: dict[str, dict]) -> dict[str, float]:
    """Stores the ratios of `results` as the new reference for --check (merging others)."""
    ratios = recorded_ratios()
    for result in results.values():
        for c in result["comparisons"]:
            ratios[c["key"]] = round(c["ratio"], 4)
    RECORDED.write_text(json.dumps(dict(sorted(ratios.items())), indent=2) + "\n")
    return ratios


def check(results: dict[str, dict], tolerance: float) -> list[str]:
    """Regressions: every ratio that fell below its recorded value by more than `tolerance`
    (a fraction). Comparisons that were never recorded are reported, not failed."""
    recorded = recorded_ratios()
    regressions = []
    for result in results.values():
        for c in result["comparisons"]:
            before = recorded.get(c["key"])
            if before is None:
                print(f"bench check: {c['key']} has no recorded ratio yet ({c['ratio']:.2f})")
                continue
            floor = before * (1 - tolerance)
            verdict = "ok" if c["ratio"] >= floor else "REGRESSED"
            print(
                f"bench check: {c['key']}: ratio {c['ratio']:.2f}, recorded {before:.2f}, "
                f"floor {floor:.2f}: {verdict}"
            )
            if c["ratio"] < floor:
                regressions.append(
                    f"{c['key']} ({c['what']}): ratio {c['ratio']:.2f} < {floor:.2f} "
                    f"(recorded {before:.2f} - {tolerance:.0%})"
                )
    return regressions
