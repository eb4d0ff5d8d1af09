"""bench/harness/timing.py: numpy's percentiles without numpy, warm-ups left out of medians,
sides taken in turns (backwards on odd rounds when asked) and medians over runs."""

import time

import numpy as np
import pytest


@pytest.fixture(scope="module")
def timing(bench_import):
    return bench_import("harness.timing")


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100, 1001])
def test_percentiles_are_numpys(timing, count):
    values = list(np.random.default_rng(count).exponential(10.0, count))
    for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
        assert timing.percentile(values, q) == np.percentile(values, q), (count, q)


def test_latency_is_p50_and_p99_to_a_hundredth_of_a_ms(timing):
    assert timing.latency([float(ms) for ms in range(100, 0, -1)]) == {
        "p50_ms": 50.5,
        "p99_ms": 99.01,
    }
    with pytest.raises(ValueError):
        timing.latency([])


def test_median_ms_leaves_the_warm_up_untimed(timing):
    calls = []

    def traced_once():
        if not calls:
            time.sleep(0.2)  # tracing, the first call only
        calls.append(1)

    assert timing.median_ms(traced_once, repeats=5) < 50
    assert len(calls) == 6
    assert 20 <= timing.elapsed_ms(lambda: time.sleep(0.02)) < 200


def test_sides_take_turns_backwards_on_odd_rounds(timing):
    calls = []
    sides = {name: (lambda name=name: calls.append(name) or len(calls)) for name in "abc"}
    rounds = []

    samples = timing.take_turns(
        sides,
        3,
        reverse_odd_rounds=True,
        before_round=lambda number: rounds.append(("before", number)),
        after_round=lambda number, so_far: rounds.append(("after", number, so_far["a"][:])),
    )

    assert "".join(calls) == "abccbaabc"
    assert samples == {"a": [1, 6, 7], "b": [2, 5, 8], "c": [3, 4, 9]}
    assert rounds[:3] == [("before", 1), ("after", 1, [1]), ("before", 2)]
    assert rounds[-1] == ("after", 3, [1, 6, 7])
    assert list(timing.turns("ab", 2)) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    assert list(timing.turns("ab", 2, reverse_odd_rounds=True))[2:] == [(1, "b"), (1, "a")]


def test_medians_of_samples_and_of_runs(timing):
    assert timing.medians({"imgclf": [3.0, 1.0, 2.0], "fit": [4.0, 8.0]}) == {
        "imgclf": 2.0,
        "fit": 6.0,
    }
    runs = [{"seconds": 1.234}, {"seconds": None}, {"seconds": 2.0}, {}, {"seconds": 9.0}]
    assert timing.median_of(runs, "seconds") == 2.0
    assert timing.median_of(runs[:2], "seconds", digits=1) == 1.2
    assert timing.median_of(runs, "peak_rss_mib") is None
