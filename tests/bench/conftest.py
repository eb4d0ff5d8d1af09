"""The benchmarks' modules, imported as the benchmarks import them (with bench/ first on
sys.path, for their siblings and bench/harness), and comparisons to report."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def import_bench(name: str):
    """bench/<name>.py (or a module of bench/harness, "harness.timing")."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="session")
def bench_import():
    return import_bench


@pytest.fixture(scope="session")
def sample_comparisons():
    """A rate and a latency of imgclf beside a loop's 50 images/s and 80 ms."""
    comparison = import_bench("harness.comparison")

    def build(rate: float, latency_ms: float) -> list:
        return [
            comparison.Comparison("x.rate", "images/s", "images/s", rate, 50.0, "loop"),
            comparison.Comparison(
                "x.p50",
                "p50",
                "ms",
                latency_ms,
                80.0,
                "loop",
                higher_is_better=False,
                target="<= 10 ms",
                target_met=latency_ms <= 10,
            ),
        ]

    return build
