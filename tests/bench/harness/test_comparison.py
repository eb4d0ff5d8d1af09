"""bench/harness/comparison.py: ratios point the same way for rates and times, a ratio target
says whether it was met, and a comparison's record (the results file's schema) has no more
fields than before."""

import dataclasses

import pytest

RECORD_FIELDS = [
    "key",
    "what",
    "unit",
    "imgclf",
    "baseline",
    "baseline_name",
    "higher_is_better",
    "target",
    "target_met",
    "ratio",
]


@pytest.fixture(scope="module")
def comparison(bench_import):
    return bench_import("harness.comparison")


def test_ratios_say_how_many_times_better_imgclf_is(sample_comparisons):
    rate, latency = sample_comparisons(rate=150.0, latency_ms=8.0)
    assert rate.ratio == pytest.approx(3.0)
    assert latency.ratio == pytest.approx(10.0)  # 80 ms against 8 ms: 10x better


def test_a_ratio_target_is_met_from_the_ratio_on(comparison):
    def rate(imgclf: float, **target):
        return comparison.Comparison("x", "x", "images/s", imgclf, 100.0, "loop", **target)

    assert (rate(99.0, min_ratio=1.0).target, rate(99.0, min_ratio=1.0).target_met) == (
        "ratio >= 1.0",
        False,
    )
    assert rate(100.0, min_ratio=1.0).target_met is True
    worded = rate(80.0, target=">= 0.8x raw decode", min_ratio=0.8)
    assert (worded.target, worded.target_met) == (">= 0.8x raw decode", True)
    assert rate(79.0, min_ratio=0.8).target_met is False
    slower = comparison.Comparison("t", "t", "s", 12.0, 10.0, "fit", False, min_ratio=1.0)
    assert slower.target_met is False  # 12 s against 10 s: ratio 0.83
    assert (rate(99.0).target, rate(99.0).target_met) == ("", None)


def test_a_record_has_the_results_files_fields(comparison):
    record = dataclasses.asdict(comparison.Comparison("x", "x", "u", 2.0, 1.0, "b", min_ratio=1))
    assert list(record) == RECORD_FIELDS
    assert (record["ratio"], record["target_met"]) == (2.0, True)


def test_the_table_has_both_figures_the_ratio_and_the_target(
    comparison, sample_comparisons, capsys
):
    comparison.print_table(sample_comparisons(rate=150.0, latency_ms=12.0))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [
        "images/s",
        "150.00",
        "50.00",
        "3.00",
        "(images/s;",
        "baseline:",
        "loop)",
    ]
    assert "6.67  <= 10 ms NOT met  (ms; baseline: loop)" in lines[2]
