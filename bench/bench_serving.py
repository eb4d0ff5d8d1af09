"""Model server latency and throughput: REST, gRPC and uploads, batching off and on, vs a baseline.

The model is MobileNetV2 at 224x224x3 with random weights and a 10-class softmax head, exported
with artifacts.export to a temporary folder. Each server runs in its own process (this script with
--serve); all are started first, then measured in --rounds alternating rounds (every server's
cells once per round), so a slow spell of the machine hits every figure alike, and each figure
is the median over the rounds. The clients are threads in this process with one httpx.Client or
gRPC stub each, sending one synthetic JPEG per request. A cell warms every client up, then runs
until its share of --requests requests or --duration seconds, whichever comes first.

The export is also converted to ONNX (tf2onnx), parity-checked and attached as `imgclf export
--format onnx` does, so the servers (serving.runtime auto) pick onnxruntime when it is faster.

Baseline, in the same run: a minimal FastAPI handler that decodes the image with Pillow and numpy
and calls `model.predict` on the same Keras model per request. Targets (issue 9), on 2 CPU cores:
one client, p50 <= 10 ms and p99 <= 25 ms end to end over REST; >= 150 images/s with batching at
32 clients; >= 10x the baseline's throughput. Clients and server share this machine's CPUs.
Writes bench/results/serving.json.
"""

import argparse
import base64
import contextlib
import io
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import fastapi
import grpc
import httpx
import keras
import numpy as np
import psutil
import report  # beside this script
import synthetic_images  # beside this script, which Python puts first on sys.path
import tensorflow as tf
import uvicorn
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from artifacts import convert, export, formats, models, parity, runtimes
from configs import schema
from serving.server import server

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_NAME = "mobilenet"
CLASS_NAMES = [f"class_{index}" for index in range(10)]
IMAGE_SHAPE = (224, 224, 3)
TARGETS = {"concurrency": 1, "p50_ms": 10.0, "p99_ms": 25.0}
BASELINE_NAME = "FastAPI + Pillow + model.predict"
THROUGHPUT_TARGET = {"concurrency": 32, "images_per_s": 150.0, "times_baseline": 10.0}
BATCHING_ON = {"enabled": True, "max_batch_size": 32, "batch_timeout_ms": 2}
TIMEOUT_S = 120.0
JSON_HEADERS = {"content-type": "application/json"}
OTHER_CPU_LIMIT = 0.1  # a cell where other processes used more of the CPUs is flagged
STALL_MS = 20  # a trivial keep-alive GET slower than this waits on TCP, not on the server
# As curl, urllib3 and gRPC do; httpx leaves Nagle on, which can hold a request body back.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def build_model() -> keras.Model:
    """MobileNetV2 (random init) on float RGB in [0, 1], as the exported signatures feed it."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE_SHAPE)
    scaled = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)  # [-1, 1], as MobileNetV2 expects
    backbone = keras.applications.MobileNetV2(
        input_shape=IMAGE_SHAPE, include_top=False, weights=None, pooling="avg"
    )
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")(backbone(scaled))
    return keras.Model(inputs, outputs, name="mobilenet_v2_bench")


# --- servers, each in its own process ---


def build_baseline_app(model: keras.Model) -> fastapi.FastAPI:
    """What a quick hand-written service does: Pillow decode, numpy, model.predict per request."""
    app = fastapi.FastAPI()

    @app.get("/v1/models/{name}")
    def status(name: str) -> dict:
        return {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}

    @app.post("/v1/models/{name}:predict")
    def predict(name: str, payload: dict) -> dict:
        data = base64.b64decode(payload["instances"][0]["b64"])
        image = Image.open(io.BytesIO(data)).convert("RGB").resize(IMAGE_SHAPE[:2], Image.BILINEAR)
        pixels = np.asarray(image, np.float32)[np.newaxis] / 255.0
        scores = model.predict(pixels, verbose=0)[0]
        return {"predictions": [{"scores": scores.tolist(), "classes": CLASS_NAMES}]}

    return app


def serve(role: str, work: Path) -> None:
    """Starts one server, prints `READY {addresses}`, serves until stdin closes."""
    if role == "baseline":
        model = keras.saving.load_model(work / "model.keras")
        model.predict(np.zeros((1, *IMAGE_SHAPE), np.float32), verbose=0)  # trace before serving
        # As uvicorn.run(host=..., port=...) binds: an IPPROTO_TCP socket, so that asyncio turns
        # on TCP_NODELAY for each connection (it skips sockets made with proto 0).
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listening.bind(("127.0.0.1", 0))
        web = uvicorn.Server(uvicorn.Config(build_baseline_app(model), log_level="warning"))
        thread = threading.Thread(target=web.run, kwargs={"sockets": [listening]}, daemon=True)
        thread.start()
        while not web.started:
            time.sleep(0.01)
        addresses = {"rest_url": f"http://127.0.0.1:{listening.getsockname()[1]}"}
    else:
        batching = BATCHING_ON if role == "batching" else {"enabled": False}
        config = schema.ServingConfig(
            model_name=MODEL_NAME, port=0, grpc_port=0, poll_seconds=0, batching=batching
        )
        manager = server.build_manager(config, work / "export", None, MODEL_NAME)
        model_server = server.ModelServer(manager, config).start()
        served = manager.resolve(MODEL_NAME)
        addresses = {
            "rest_url": model_server.rest_url,
            "grpc_target": model_server.grpc_target,
            "runtime": f"{served.runtime} ({served.runtime_reason})",
        }
    print("READY " + json.dumps(addresses), flush=True)
    sys.stdin.read()
    if role == "baseline":
        web.should_exit = True
        thread.join(10)
    else:
        model_server.stop()


@contextlib.contextmanager
def server_process(role: str, work: Path):
    """(addresses, psutil.Process) of a server started with --serve; stopped on exit."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = (work / f"server-{role}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", role, "--work", str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        text=True,
    )
    try:
        line = process.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the {role} server did not start; see {log.name}")
        yield json.loads(line[len("READY ") :]), psutil.Process(process.pid)
    finally:
        process.stdin.close()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(10)
        log.close()


# --- clients: factories of per-thread `call(index)` functions ---


def http_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT_S, transport=httpx.HTTPTransport(socket_options=NODELAY))


def round_trip_ms(url: str, repeats: int = 30) -> float:
    """p50 of a trivial GET (model status) on one keep-alive connection: the HTTP floor."""
    with http_client() as client:
        return median_ms(lambda: client.get(url).raise_for_status(), repeats)


def http_api(post, answer_key: str):
    """open_client for an HTTP API: `post(client, index)` sends request `index`."""

    @contextlib.contextmanager
    def open_client():
        with http_client() as client:

            def call(index: int) -> None:
                response = post(client, index)
                if response.status_code != 200 or not response.json().get(answer_key):
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

            yield call

    return open_client


def grpc_api(target: str, images: list[bytes]):
    requests = []
    for image in images:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image]))
        requests.append(request)

    @contextlib.contextmanager
    def open_client():
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def call(index: int) -> None:
                response = stub.Predict(requests[index % len(requests)], timeout=TIMEOUT_S)
                if response.outputs["scores"].tensor_shape.dim[1].size != len(CLASS_NAMES):
                    raise RuntimeError(f"unexpected answer {response}")

            yield call

    return open_client


def build_clients(addresses: dict, images: list[bytes]) -> dict:
    """{api: open_client}, where open_client() is a context manager yielding `call(index)`:
    one client's connection, sending image `index % len(images)` per call."""
    url = f"{addresses['rest_url']}/v1/models/{MODEL_NAME}"
    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
        for image in images
    ]

    def predict(client: httpx.Client, index: int) -> httpx.Response:
        body = bodies[index % len(bodies)]
        return client.post(f"{url}:predict", content=body, headers=JSON_HEADERS)

    def upload(client: httpx.Client, index: int) -> httpx.Response:
        files = [("files", ("image.jpg", images[index % len(images)], "image/jpeg"))]
        return client.post(f"{url}:classify-images", files=files)

    clients = {"rest_predict": http_api(predict, "predictions")}
    if "grpc_target" in addresses:  # not the baseline
        clients["grpc_predict"] = grpc_api(addresses["grpc_target"], images)
        clients["classify_images"] = http_api(upload, "results")
    return clients


def run_cell(open_client, concurrency: int, args, server_process: psutil.Process) -> dict:
    """Closed-loop clients: each warms up, all start together, each sends its next request as
    soon as its last is answered, until --requests or --duration."""
    tickets, stop, lock = itertools.count(), threading.Event(), threading.Lock()
    latencies, errors, ends, marks = [], [], [], {}

    def start_clock():
        marks["started"] = time.perf_counter()
        marks["cpu"] = (cpu_seconds(server_process), cpu_seconds(psutil.Process()), busy_seconds())

    barrier = threading.Barrier(concurrency, action=start_clock)

    def client(number: int) -> None:
        with open_client() as call:
            for warm in range(args.warmup_requests):
                try:
                    call(number + warm * concurrency)
                except Exception as error:  # noqa: BLE001 - reported with the cell
                    errors.append(f"warm-up: {error!r}"[:300])
            barrier.wait(TIMEOUT_S)
            while not stop.is_set() and (ticket := next(tickets)) < args.requests:
                started = time.perf_counter()
                try:
                    call(ticket)
                except Exception as error:  # noqa: BLE001
                    errors.append(repr(error)[:300])
                ended = time.perf_counter()
                with lock:
                    latencies.append(ended - started)
                    ends.append(ended)
                if ended - marks["started"] >= args.duration:
                    stop.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not latencies:
        raise RuntimeError(f"no request was answered: {errors[:3]}")
    seconds = max(ends) - marks["started"]
    server_cpu = cpu_seconds(server_process) - marks["cpu"][0]
    client_cpu = cpu_seconds(psutil.Process()) - marks["cpu"][1]
    other_cpu = busy_seconds() - marks["cpu"][2] - server_cpu - client_cpu
    milliseconds = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(seconds, 2),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 2),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "mean_ms": round(float(milliseconds.mean()), 2),
        "images_per_s": round(len(latencies) / seconds, 2),
        "server_cpu_ms_per_image": round(server_cpu * 1000 / len(latencies), 2),
        "client_cpu_ms_per_image": round(client_cpu * 1000 / len(latencies), 2),
        # Shares of all the machine's CPU time over the cell.
        "bench_cpu_fraction": round((server_cpu + client_cpu) / seconds / os.cpu_count(), 3),
        "other_cpu_fraction": round(max(other_cpu, 0) / seconds / os.cpu_count(), 3),
    }


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (or stolen by the hypervisor) since boot."""
    times = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return sum(getattr(times, field, 0.0) for field in fields)


# --- where the time goes, without HTTP: the server's and the baseline's model paths ---


def median_ms(function, repeats: int) -> float:
    function()  # trace / warm, untimed
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def measure_in_process(
    model: keras.Model, version_dir: Path, images: list[bytes], repeats: int
) -> dict:
    """Median ms of each step of the model paths, in this process, no HTTP."""
    served = models.ServedModel(MODEL_NAME, 1, version_dir, runtimes.SAVEDMODEL)
    on_onnx = models.ServedModel(MODEL_NAME, 1, version_dir, runtimes.ONNX)
    pixels = np.random.default_rng(0).random((1, *IMAGE_SHAPE), np.float32)
    batch = [images[index % len(images)] for index in range(32)]

    def pil_decode_resize():
        image = Image.open(io.BytesIO(images[0])).convert("RGB").resize(IMAGE_SHAPE[:2])
        return np.asarray(image, np.float32) / 255.0

    batch_ms = median_ms(lambda: served.predict(batch), max(repeats // 8, 2))
    return {
        "pil_decode_resize_ms": median_ms(pil_decode_resize, repeats),
        "keras_model_predict_ms": median_ms(lambda: model.predict(pixels, verbose=0), repeats),
        "signature_pixels_batch1_ms": median_ms(
            lambda: served.run("predict_images", {"images": pixels}), repeats
        ),
        "signature_jpeg_batch1_ms": median_ms(lambda: served.predict(images[:1]), repeats),
        "signature_jpeg_batch32_ms": batch_ms,
        "signature_jpeg_batch32_images_per_s": round(32 / batch_ms * 1000, 1),
        "onnx_pixels_batch1_ms": median_ms(
            lambda: on_onnx.run("predict_images", {"images": pixels}), repeats
        ),
        "onnx_jpeg_batch1_ms": median_ms(lambda: on_onnx.predict(images[:1]), repeats),
        "onnx_jpeg_batch32_ms": (
            onnx_batch_ms := median_ms(lambda: on_onnx.predict(batch), max(repeats // 8, 2))
        ),
        "onnx_jpeg_batch32_images_per_s": round(32 / onnx_batch_ms * 1000, 1),
        "preprocess_jpeg_batch1_ms": median_ms(
            lambda: served.run(
                "preprocess_images", {"image_bytes": served.image_array(images[:1])}
            ),
            repeats,
        ),
    }


ROLES = ("baseline", "plain", "batching")


def start_server(stack: contextlib.ExitStack, role: str, work: Path) -> tuple[dict, psutil.Process]:
    """Starts the `role` server for the rest of `stack`; its addresses and process."""
    print(f"bench: starting the {role} server", flush=True)
    addresses, process = stack.enter_context(server_process(role, work))
    if "runtime" in addresses:
        print(f"bench:   serving with {addresses.pop('runtime')}")
    return addresses, process


def status_round_trip(addresses: dict) -> float:
    round_trip = round_trip_ms(f"{addresses['rest_url']}/v1/models/{MODEL_NAME}")
    print(f"bench:   REST round trip of a status GET: {round_trip} ms (p50)")
    if round_trip > STALL_MS:
        print(
            f"bench:   WARNING: a trivial GET takes over {STALL_MS} ms: Nagle and delayed "
            "ACK (is TCP_NODELAY set on the server's connections?)"
        )
    return round_trip


def measure_servers(
    work: Path, images: list[bytes], concurrencies: list[int], args
) -> tuple[list[dict], dict]:
    """One row per (role, API) with a cell per client count, each the median over the rounds;
    and each server's status round trip."""
    per_round = argparse.Namespace(**vars(args))
    per_round.requests = max(1, -(-args.requests // args.rounds))
    per_round.duration = args.duration / args.rounds
    with contextlib.ExitStack() as stack:
        servers = {role: start_server(stack, role, work) for role in ROLES}
        round_trips = {
            role: status_round_trip(addresses) for role, (addresses, _) in servers.items()
        }
        measured: dict[tuple[str, str, int], list[dict]] = {}
        for round_number in range(1, args.rounds + 1):
            print(f"bench: round {round_number}/{args.rounds}", flush=True)
            for role, (addresses, process) in servers.items():
                for api, open_client in build_clients(addresses, images).items():
                    for concurrency in concurrencies:
                        cell = run_cell(open_client, concurrency, per_round, process)
                        measured.setdefault((role, api, concurrency), []).append(cell)
                        print_cell(row_name(role, api), role, concurrency, cell)
    rows = []
    for role in ROLES:
        for api in dict.fromkeys(api for r, api, _ in measured if r == role):
            cells = {str(c): merge_cells(measured[(role, api, c)]) for c in concurrencies}
            rows.append({"api": row_name(role, api), "batching": batching_of(role), "cells": cells})
    return rows, round_trips


def row_name(role: str, api: str) -> str:
    return f"baseline_{api}" if role == "baseline" else api


def batching_of(role: str) -> str:
    return "on" if role == "batching" else "off"


def print_cell(name: str, role: str, concurrency: int, cell: dict) -> None:
    errors = f", {cell['errors']} ERRORS" if cell["errors"] else ""
    if cell["other_cpu_fraction"] > OTHER_CPU_LIMIT:
        errors += f"; other processes took {cell['other_cpu_fraction']:.0%} of the CPUs"
    print(
        f"bench:   {name:22}{batching_of(role):>4}{concurrency:3d} clients: "
        f"p50 {cell['p50_ms']:6.1f} ms  p99 {cell['p99_ms']:6.1f} ms  "
        f"{cell['images_per_s']:5.1f} img/s  {cell['requests']:4d} requests; "
        f"CPU ms/image server {cell['server_cpu_ms_per_image']:.1f} "
        f"client {cell['client_cpu_ms_per_image']:.1f}{errors}",
        flush=True,
    )


def merge_cells(rounds: list[dict]) -> dict:
    """One cell from a cell per round: counts add up, every figure is the median of the rounds
    (other processes' share is the largest, so a disturbed round stays visible)."""
    merged = {
        key: round(statistics.median(cell[key] for cell in rounds), 3 if "fraction" in key else 2)
        for key in rounds[0]
        if key not in ("requests", "errors", "first_errors", "seconds")
    }
    merged["other_cpu_fraction"] = max(cell["other_cpu_fraction"] for cell in rounds)
    merged["requests"] = sum(cell["requests"] for cell in rounds)
    merged["errors"] = sum(cell["errors"] for cell in rounds)
    merged["first_errors"] = [error for cell in rounds for error in cell["first_errors"]][:3]
    merged["seconds"] = round(sum(cell["seconds"] for cell in rounds), 2)
    merged["rounds"] = len(rounds)
    return merged


# --- report ---


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


def attach_onnx(version_dir: Path, work: Path) -> None:
    """As `imgclf export --format onnx` does: convert, check parity, attach to assets.extra."""
    started = time.perf_counter()
    onnx_path = convert.to_onnx(version_dir, work / "formats" / runtimes.ONNX_FILE)
    images = parity.build_parity_images(version_dir, count=8)
    verdict = parity.check_parity(version_dir, onnx_path, images)
    parity.write_parity(verdict, onnx_path)
    if not verdict["passed"]:
        raise RuntimeError(f"the ONNX conversion failed its parity check: {verdict}")
    formats.attach_onnx(version_dir, onnx_path)
    seconds = time.perf_counter() - started
    print(
        f"bench: ONNX conversion attached in {seconds:.0f}s (parity {verdict['max_abs_diff']:.1e})"
    )


def comparisons(rows: list[dict], in_process: dict) -> list[report.Comparison]:
    """The issue's figures, each beside the naive model.predict service at the same load."""
    cells = {(row["api"], row["batching"]): row["cells"] for row in rows}
    base = cells[("baseline_rest_predict", "off")]
    one, many = str(TARGETS["concurrency"]), str(THROUGHPUT_TARGET["concurrency"])
    found = []
    for api, key, what in (
        ("rest_predict", "rest", "REST :predict (b64 JSON)"),
        ("grpc_predict", "grpc", "gRPC PredictionService.Predict"),
        ("classify_images", "upload", "REST :classify-images (multipart upload)"),
    ):
        ours = cells[(api, "off")][one]
        found += [
            report.Comparison(
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
        for batching in ("off", "on"):
            ours = cells[("rest_predict", batching)][many]
            wanted = THROUGHPUT_TARGET["images_per_s"]
            times = THROUGHPUT_TARGET["times_baseline"]
            found.append(
                report.Comparison(
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
        report.Comparison(
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


def check_targets(rows: list[dict]) -> list[dict]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="most requests per cell")
    parser.add_argument("--duration", type=float, default=10.0, help="most seconds per cell")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--warmup-requests", type=int, default=2, help="untimed, per client")
    parser.add_argument("--image-size", default="320x240", help="nominal JPEG width x height")
    parser.add_argument("--images", type=int, default=16, help="distinct JPEGs sent in turn")
    parser.add_argument("--repeats", type=int, default=20, help="in-process timings (median)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds over the servers (median)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, 1,8")
    parser.add_argument(
        "--serve", choices=["baseline", "plain", "batching"], help=argparse.SUPPRESS
    )
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.work))
        return
    if args.quick:
        args.requests, args.duration, args.concurrency = 40, 4.0, "1,8"
        args.warmup_requests, args.repeats, args.rounds = 1, 5, 1
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    width, height = (int(side) for side in args.image_size.lower().split("x"))
    images = [synthetic_images.render(i, 10, 0, (width, height)) for i in range(args.images)]
    print(
        f"bench: {os.cpu_count()} CPUs shared by the clients and the server; load average "
        f"{os.getloadavg()[0]:.2f} before the run (other work on this machine skews figures)"
    )

    work = Path(tempfile.mkdtemp(prefix="imgclf-bench-serving-"))
    model = build_model()
    model.save(work / "model.keras")
    version_dir = export.export_saved_model(
        model, work / "export", 1, IMAGE_SHAPE[:2], IMAGE_SHAPE[2], CLASS_NAMES, {}
    )
    print(f"bench: exported MobileNetV2 ({model.count_params():,} parameters) to {version_dir}")
    attach_onnx(version_dir, work)
    in_process = measure_in_process(model, version_dir, images, args.repeats)
    print("bench: in-process, no HTTP: " + ", ".join(f"{k} {v}" for k, v in in_process.items()))

    rows, round_trips = measure_servers(work, images, concurrencies, args)

    baseline, ours = rows[0], rows[1:]
    print(f"\nMobileNetV2 224x224x3, one {args.image_size} JPEG per request; clients and server")
    print(f"share the same {os.cpu_count()} CPUs (server in its own process)\n")
    print_table(rows, concurrencies)
    print_ratios(ours, baseline, concurrencies)
    verdicts = check_targets(ours)
    disturbed = [
        f"{row['api']}/{row['batching']}/{concurrency}"
        for row in rows
        for concurrency, cell in row["cells"].items()
        if cell["other_cpu_fraction"] > OTHER_CPU_LIMIT
    ]
    if disturbed:
        print(
            f"\nNOTE: other processes took over {OTHER_CPU_LIMIT:.0%} of the CPUs during "
            f"{len(disturbed)} of {sum(len(row['cells']) for row in rows)} cells; rerun on a "
            "quiet machine for figures to compare"
        )
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "note": "clients (threads in the bench process) and the server process share the CPUs",
        "model": {"backbone": "mobilenet_v2", "weights": "random", "input": list(IMAGE_SHAPE)},
        "settings": {
            "requests": args.requests,
            "duration_s": args.duration,
            "concurrency": concurrencies,
            "warmup_requests_per_client": args.warmup_requests,
            "image_size": args.image_size,
            "distinct_images": args.images,
            "mean_jpeg_bytes": round(statistics.mean(len(image) for image in images)),
            "batching_on": BATCHING_ON,
            "rounds": args.rounds,
            "quick": args.quick,
        },
        "in_process": in_process,
        "rest_status_round_trip_ms": round_trips,
        "rows": rows,
        "cells_disturbed_by_other_processes": disturbed,
        "targets": {**TARGETS, "results": verdicts},
    }
    report.write_results("serving", comparisons(rows, in_process), figures)
    shutil.rmtree(work, ignore_errors=True)  # kept on failure: it holds the server logs


if __name__ == "__main__":
    main()
