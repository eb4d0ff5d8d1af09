"""Model server latency and throughput: REST, gRPC and uploads, batching off and on, vs a baseline.

The model is MobileNetV2 at 224x224x3 with random weights and a 10-class softmax head, exported
with artifacts.export to a temporary folder (serving_model.py). Each server runs in its own
process (serving_servers.py); all are started first, then measured in --rounds alternating
rounds (every server's cells once per round), so a slow spell of the machine hits every figure
alike, and each figure is the median over the rounds. The clients (serving_clients.py) are
threads in this process with one httpx.Client or gRPC stub each, sending one synthetic JPEG per
request. A cell (serving_load.py) warms every client up, then runs until its share of
--requests requests or --duration seconds, whichever comes first.

The export is also converted to ONNX (tf2onnx), parity-checked and attached as `imgclf export
--format onnx` does, so the servers (serving.runtime auto) pick onnxruntime when it is faster.

Baseline, in the same run: a minimal FastAPI handler that decodes the image with Pillow and numpy
and calls `model.predict` on the same Keras model per request. Targets (issue 9), on 2 CPU cores:
one client, p50 <= 10 ms and p99 <= 25 ms end to end over REST; >= 150 images/s with batching at
32 clients; >= 10x the baseline's throughput. Clients and server share this machine's CPUs.
Writes bench/results/serving.json.
"""

import argparse
import contextlib
import functools
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path

import keras
import psutil
import report  # beside this script, which Python puts first on sys.path
import serving_clients
import serving_load
import serving_model
import serving_report
import serving_servers
import synthetic_images
import tensorflow as tf
from harness import arguments, machine, timing


def parse_args() -> argparse.Namespace:
    options = arguments.Options(__doc__, "a smoke run: few requests, 1 round, 1 and 8 clients")
    options.add_sized("--requests", 2000, 40, "most requests per cell", type=int)
    options.add_sized("--duration", 10.0, 4.0, "most seconds per cell", type=float)
    options.add_sized("--concurrency", "1,8,32", "1,8", "comma-separated client counts")
    options.add_sized("--warmup-requests", 2, 1, "untimed, per client", type=int)
    options.add_sized("--repeats", 20, 5, "in-process timings (median)", type=int)
    options.add_sized("--rounds", 3, 1, "alternating rounds over the servers (median)", type=int)
    options.add("--image-size", default="320x240", help="nominal JPEG width x height")
    options.add("--images", type=int, default=16, help="distinct JPEGs sent in turn")
    return options.parse()


def measure_servers(
    work: Path, images: list[bytes], concurrencies: list[int], args: argparse.Namespace
) -> tuple[list[dict], dict]:
    """One row per (role, API) with a cell per client count, each the median over the rounds;
    and each server's status round trip."""
    load = serving_load.Load(
        requests=max(1, -(-args.requests // args.rounds)),
        duration=args.duration / args.rounds,
        warmup_requests=args.warmup_requests,
    )
    with contextlib.ExitStack() as stack:
        servers = {role: serving_servers.start(stack, role, work) for role in serving_servers.ROLES}
        round_trips = {
            role: serving_clients.status_round_trip(addresses)
            for role, (addresses, _) in servers.items()
        }
        cells = {}
        for role, (addresses, pid) in servers.items():
            process = psutil.Process(pid)
            for api, open_client in serving_clients.build_clients(addresses, images).items():
                for concurrency in concurrencies:
                    cells[(role, api, concurrency)] = functools.partial(
                        run_cell, role, api, open_client, concurrency, load, process
                    )
        measured = timing.take_turns(
            cells,
            args.rounds,
            before_round=lambda number: print(f"bench: round {number}/{args.rounds}", flush=True),
        )
    rows = []
    for role in serving_servers.ROLES:
        for api in dict.fromkeys(api for r, api, _ in measured if r == role):
            merged = {
                str(c): serving_load.merge_cells(measured[(role, api, c)]) for c in concurrencies
            }
            rows.append(
                {
                    "api": serving_load.row_name(role, api),
                    "batching": serving_load.batching_of(role),
                    "cells": merged,
                }
            )
    return rows, round_trips


def run_cell(role: str, api: str, open_client, concurrency: int, load, process) -> dict:
    """One cell of a round, printed as it ends."""
    cell = serving_load.run_cell(open_client, concurrency, load, process)
    serving_load.print_cell(role, api, concurrency, cell)
    return cell


def main() -> None:
    args = parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    width, height = (int(side) for side in args.image_size.lower().split("x"))
    images = [synthetic_images.render(i, 10, 0, (width, height)) for i in range(args.images)]
    machine.announce(" shared by the clients and the server")

    work = Path(tempfile.mkdtemp(prefix="imgclf-bench-serving-"))
    model = serving_model.build_model()
    model.save(work / "model.keras")
    version_dir = serving_model.export_model(model, work)
    serving_model.attach_onnx(version_dir, work)
    in_process = serving_model.measure_in_process(model, version_dir, images, args.repeats)
    print("bench: in-process, no HTTP: " + ", ".join(f"{k} {v}" for k, v in in_process.items()))

    rows, round_trips = measure_servers(work, images, concurrencies, args)

    baseline, ours = rows[0], rows[1:]
    print(f"\nMobileNetV2 224x224x3, one {args.image_size} JPEG per request; clients and server")
    print(f"share the same {os.cpu_count()} CPUs (server in its own process)\n")
    serving_report.print_table(rows, concurrencies)
    serving_report.print_ratios(ours, baseline, concurrencies)
    verdicts = serving_report.check_targets(ours)
    disturbed = serving_report.disturbed_cells(rows)
    figures = {
        "machine": machine.summary(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "note": "clients (threads in the bench process) and the server process share the CPUs",
        "model": {
            "backbone": "mobilenet_v2",
            "weights": "random",
            "input": list(serving_model.IMAGE_SHAPE),
        },
        "settings": {
            "requests": args.requests,
            "duration_s": args.duration,
            "concurrency": concurrencies,
            "warmup_requests_per_client": args.warmup_requests,
            "image_size": args.image_size,
            "distinct_images": args.images,
            "mean_jpeg_bytes": round(statistics.mean(len(image) for image in images)),
            "batching_on": serving_servers.BATCHING_ON,
            "rounds": args.rounds,
            "quick": args.quick,
        },
        "in_process": in_process,
        "rest_status_round_trip_ms": round_trips,
        "rows": rows,
        "cells_disturbed_by_other_processes": disturbed,
        "targets": {**serving_report.TARGETS, "results": verdicts},
    }
    report.write_results("serving", serving_report.comparisons(rows, in_process), figures)
    shutil.rmtree(work, ignore_errors=True)  # kept on failure: it holds the server logs


if __name__ == "__main__":
    main()
