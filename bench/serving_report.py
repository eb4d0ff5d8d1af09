"""What the serving benchmark reports: the table of every row's cells, each beside the baseline
at the same load, the issue's targets, the comparisons recorded and the cells other processes
disturbed.

A row is one (API, batching) of one server, with a cell per client count:
`{"api", "batching", "cells": {"<clients>": {"p50_ms", "p99_ms", "images_per_s", ...}}}`.
"""

import serving_load
from harness import comparison

BASELINE_NAME = "FastAPI + Pillow + model.predict"
# Targets (issue 9), on 2 CPU cores: one client, p50 <= 10 ms and p99 <= 25 ms end to end over
# REST; >= 150 images/s with batching at 32 clients, >= 10x the baseline's throughput.
TARGETS = {"concurrency": 1, "p50_ms": 10.0, "p99_ms": 25.0}
THROUGHPUT_TARGET = {"concurrency": 32, "images_per_s": 150.0, "times_baseline": 10.0}
APIS = (
    ("rest_predict", "rest", "REST :predict (b64 JSON)"),
    ("grpc_predict", "grpc", "gRPC PredictionService.Predict"),
    ("classify_images", "upload", "REST :classify-images (multipart upload)"),
)


def print_table(rows: list[dict], concurrencies: list[int]) -> None:
    header = f"{'api':22}{'batching':>9}" + "".join(
        f"{f'{c} client' + ('s' if c > 1 else ''):>24}" for c in concurrencies
    )
    print(header)
    print(f"{'':31}" + f"{'p50 ms  p99 ms  img/s':>24}" * len(concurrencies))
    for row in rows:
        cells = "".join(
            f"{cell['p50_ms']:8.1f}{cell['p99_ms']:8.1f}{cell['images_per_s']:8.1f}"
            for cell in (row["cells"][str(c)] for c in concurrencies)
        )
        print(f"{row['api']:22}{row['batching']:>9}{cells}")


def print_ratios(rows: list[dict], baseline: dict, concurrencies: list[int]) -> None:
    print("\nvs the baseline at the same concurrency (images/s: higher is better; p50: lower):")
    print(
        f"{'api':22}{'batching':>9}"
        + "".join(f"{f'{c} cl img/s':>12}{'p50':>8}" for c in concurrencies)
    )
    for row in rows:
        ratios = ""
        for c in concurrencies:
            ours, base = row["cells"][str(c)], baseline["cells"][str(c)]
            ratios += f"{ours['images_per_s'] / base['images_per_s']:11.2f}x"
            ratios += f"{ours['p50_ms'] / base['p50_ms']:7.2f}x"
        print(f"{row['api']:22}{row['batching']:>9}{ratios}")


def check_targets(rows: list[dict]) -> list[dict]:
    """Each of imgclf's rows against the one-client latency targets; printed and returned."""
    verdicts = []
    print(f"\ntargets at {TARGETS['concurrency']} client (2-core goal; clients share the CPUs):")
    for row in rows:
        cell = row["cells"].get(str(TARGETS["concurrency"]))
        if cell is None or row["api"].startswith("baseline"):
            continue
        p50_ok, p99_ok = cell["p50_ms"] < TARGETS["p50_ms"], cell["p99_ms"] < TARGETS["p99_ms"]
        verdicts.append(
            {"api": row["api"], "batching": row["batching"], "p50_pass": p50_ok, "p99_pass": p99_ok}
        )
        p50, p99 = ("PASS" if ok else "FAIL" for ok in (p50_ok, p99_ok))
        print(
            f"  {row['api']:16}batching {row['batching']:4}"
            f"p50 {cell['p50_ms']:6.1f} ms < {TARGETS['p50_ms']:.0f}: {p50}   "
            f"p99 {cell['p99_ms']:6.1f} ms < {TARGETS['p99_ms']:.0f}: {p99}"
        )
    return verdicts


def disturbed_cells(rows: list[dict]) -> list[str]:
    """`api/batching/clients` of every cell where other processes took over the limit's share of
    the CPUs; says so when there are any."""
    limit = serving_load.OTHER_CPU_LIMIT
    disturbed = [
        f"{row['api']}/{row['batching']}/{concurrency}"
        for row in rows
        for concurrency, cell in row["cells"].items()
        if cell["other_cpu_fraction"] > limit
    ]
    if disturbed:
        print(
            f"\nNOTE: other processes took over {limit:.0%} of the CPUs during "
            f"{len(disturbed)} of {sum(len(row['cells']) for row in rows)} cells; rerun on a "
            "quiet machine for figures to compare"
        )
    return disturbed


def comparisons(rows: list[dict], in_process: dict) -> list[comparison.Comparison]:
    """The issue's figures, each beside the naive model.predict service at the same load."""
    cells = {(row["api"], row["batching"]): row["cells"] for row in rows}
    base = cells[("baseline_rest_predict", "off")]
    one, many = str(TARGETS["concurrency"]), str(THROUGHPUT_TARGET["concurrency"])
    found = []
    for api, key, what in APIS:
        ours = cells[(api, "off")][one]
        found += [
            comparison.Comparison(
                key=f"serving.{key}_{stat}.c1",
                what=f"{what}, 1 client, {stat.split('_')[0]}",
                unit="ms",
                imgclf=ours[stat],
                baseline=base[one][stat],
                baseline_name=BASELINE_NAME,
                higher_is_better=False,
                target=f"<= {TARGETS[stat]:.0f} ms",
                target_met=ours[stat] <= TARGETS[stat],
            )
            for stat in ("p50_ms", "p99_ms")
        ]
    if many in base:
        wanted = THROUGHPUT_TARGET["images_per_s"]
        times = THROUGHPUT_TARGET["times_baseline"]
        for batching in ("off", "on"):
            ours = cells[("rest_predict", batching)][many]
            found.append(
                comparison.Comparison(
                    key=f"serving.rest_images_per_s.c{many}.batching_{batching}",
                    what=f"REST :predict, {many} clients, batching {batching}",
                    unit="images/s",
                    imgclf=ours["images_per_s"],
                    baseline=base[many]["images_per_s"],
                    baseline_name=BASELINE_NAME,
                    target=f">= {wanted:.0f} images/s and >= {times:.0f}x" * (batching == "on"),
                    target_met=(
                        ours["images_per_s"] >= wanted
                        and ours["images_per_s"] >= times * base[many]["images_per_s"]
                    )
                    if batching == "on"
                    else None,
                )
            )
    found.append(
        comparison.Comparison(
            key="serving.model_jpeg_batch1_ms",
            what="one JPEG through the served model in-process (onnxruntime path)",
            unit="ms",
            imgclf=in_process["onnx_jpeg_batch1_ms"],
            baseline=in_process["signature_jpeg_batch1_ms"],
            baseline_name="SavedModel serving_default",
            higher_is_better=False,
        )
    )
    return found
