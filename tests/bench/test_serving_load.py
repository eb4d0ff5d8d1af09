"""bench/serving_load.py: the cells of several rounds merge into one, of medians and counts that
add up."""

import pytest


@pytest.fixture(scope="module")
def serving_load(bench_import):
    return bench_import("serving_load")


def test_rounds_merge_into_medians_with_counts_that_add_up(serving_load):
    def measured(p50: float, requests: int, other: float) -> dict:
        return {
            "requests": requests,
            "errors": 1 if p50 > 20 else 0,
            "first_errors": [f"slow round {p50}"] if p50 > 20 else [],
            "seconds": 2.0,
            "p50_ms": p50,
            "p99_ms": 2 * p50,
            "images_per_s": requests / 2.0,
            "other_cpu_fraction": other,
        }

    merged = serving_load.merge_cells(
        [measured(9.0, 200, 0.01), measured(30.0, 60, 0.4), measured(10.0, 190, 0.02)]
    )

    # One disturbed round moves neither median, and stays visible in the largest other share.
    assert (merged["p50_ms"], merged["p99_ms"], merged["images_per_s"]) == (10.0, 20.0, 95.0)
    assert merged["other_cpu_fraction"] == 0.4
    assert (merged["requests"], merged["errors"], merged["seconds"]) == (450, 1, 6.0)
    assert merged["first_errors"] == ["slow round 30.0"] and merged["rounds"] == 3
