"""bench/report.py: --check catches a regression, BENCHMARKS.md has a row per figure and keeps
the sections of benchmarks not run."""

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def report(bench_import, tmp_path, monkeypatch):
    """bench/report.py with its results, recorded ratios and Markdown under tmp_path."""
    module = bench_import("report")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "RECORDED", tmp_path / "recorded.json")
    monkeypatch.setattr(module, "MARKDOWN", tmp_path / "BENCHMARKS.md")
    return module


def test_check_passes_within_tolerance_and_flags_a_regression(report, sample_comparisons):
    report.write_results("x", sample_comparisons(rate=150.0, latency_ms=8.0))
    report.record(report.load_results())
    assert json.loads(report.RECORDED.read_text()) == {"x.p50": 10.0, "x.rate": 3.0}

    report.write_results("x", sample_comparisons(rate=130.0, latency_ms=9.0))  # -13%, -11%
    assert report.check(report.load_results(), tolerance=0.25) == []

    report.write_results("x", sample_comparisons(rate=150.0, latency_ms=16.0))  # 2x slower
    [regression] = report.check(report.load_results(), tolerance=0.25)
    assert regression.startswith("x.p50 (p50): ratio 5.00 < 7.50")


def test_markdown_has_the_machine_and_a_row_per_figure(report, sample_comparisons):
    report.write_results("x", sample_comparisons(rate=150.0, latency_ms=12.0), {"n": 1})
    text = report.render_markdown(report.load_results())
    assert "Machine: " in text and "CPU cores" in text
    assert "| images/s | images/s | 150.00 | 50.00 (loop) | 3.00 |  |" in text
    assert "| p50 | ms | 12.00 | 80.00 (loop) | 6.67 | <= 10 ms ❌ |" in text


def test_a_partial_run_keeps_the_other_benchmarks_sections(report, sample_comparisons):
    """`bench/run.py --only x` rewrites x's table and keeps the last figures of the others."""
    report.write_results("x", sample_comparisons(rate=150.0, latency_ms=12.0))
    report.write_results("z", sample_comparisons(rate=100.0, latency_ms=12.0))
    before = report.render_markdown(report.load_results())
    (report.RESULTS / "z.json").unlink()
    report.write_results("x", sample_comparisons(rate=300.0, latency_ms=12.0))
    fresh = report.load_results()
    text = report.render_markdown(fresh, kept=report.kept_sections(before, set(fresh)))
    assert "| images/s | images/s | 300.00 | 50.00 (loop) | 6.00 |  |" in text  # x, new
    assert "| images/s | images/s | 150.00 |" not in text
    z_section = before[before.index("## z ") :]
    assert z_section.rstrip() in text  # z, as it was
    assert text.index("## x ") < text.index("## z ")
