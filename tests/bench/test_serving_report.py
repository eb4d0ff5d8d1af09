"""bench/serving_report.py: every API at one client and the throughput at 32 clients, each beside
the naive model.predict service measured in the same run."""

import pytest


@pytest.fixture(scope="module")
def serving_report(bench_import):
    return bench_import("serving_report")


def cell(p50: float, p99: float, images_per_s: float) -> dict:
    return {"p50_ms": p50, "p99_ms": p99, "images_per_s": images_per_s}


def rows() -> list[dict]:
    """Measured rows as the benchmark records them: one per (api, batching), cells per client
    count. Figures differ per api so a mixed-up row shows in the comparison."""
    naive = {"1": cell(60.0, 90.0, 15.0), "32": cell(1500.0, 2300.0, 20.0)}
    found = [{"api": "baseline_rest_predict", "batching": "off", "cells": naive}]
    for api, p50 in (("rest_predict", 9.0), ("grpc_predict", 12.0), ("classify_images", 30.0)):
        for batching, rate in (("off", 170.0), ("on", 210.0)):
            cells = {"1": cell(p50, 2 * p50, 1000 / p50), "32": cell(200.0, 300.0, rate)}
            found.append({"api": api, "batching": batching, "cells": cells})
    return found


def test_every_api_is_compared_with_the_naive_service_at_one_client(serving_report):
    in_process = {"onnx_jpeg_batch1_ms": 7.0, "signature_jpeg_batch1_ms": 16.0}
    found = {c.key: c for c in serving_report.comparisons(rows(), in_process)}

    for key, p50, met in (("rest", 9.0, True), ("grpc", 12.0, False), ("upload", 30.0, False)):
        median, tail = found[f"serving.{key}_p50_ms.c1"], found[f"serving.{key}_p99_ms.c1"]
        assert (median.imgclf, median.baseline) == (p50, 60.0)
        assert (tail.imgclf, tail.baseline) == (2 * p50, 90.0)
        assert median.ratio == pytest.approx(60.0 / p50)  # times faster than the naive service
        assert median.target == "<= 10 ms" and median.target_met is met
    assert found["serving.upload_p99_ms.c1"].target_met is False  # 60 ms > 25 ms

    batching = found["serving.rest_images_per_s.c32.batching_on"]
    assert (batching.imgclf, batching.baseline, batching.ratio) == (210.0, 20.0, 10.5)
    assert batching.target_met is True  # >= 150 images/s and >= 10x the naive service
    assert found["serving.rest_images_per_s.c32.batching_off"].target_met is None
    assert found["serving.model_jpeg_batch1_ms"].ratio == pytest.approx(16.0 / 7.0)
