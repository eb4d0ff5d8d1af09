"""The serving benchmark's load: closed-loop clients against one server for one cell (an API at a
client count), what each cell cost in CPU, and one cell from the cells of several rounds."""

import itertools
import os
import statistics
import threading
import time
from dataclasses import dataclass

import psutil
from harness import timing

OTHER_CPU_LIMIT = 0.1  # a cell where other processes used more of the CPUs is flagged
START_TIMEOUT_S = 120.0  # for every client to finish its warm-up and meet at the start


@dataclass(frozen=True)
class Load:
    """How long one cell runs: until `requests` requests or `duration` seconds, whichever comes
    first, after `warmup_requests` untimed requests per client."""

    requests: int
    duration: float
    warmup_requests: int


def run_cell(open_client, concurrency: int, load: Load, server: psutil.Process) -> dict:
    """Closed-loop clients: each warms up, all start together, each sends its next request as
    soon as its last is answered, until the load's requests or duration."""
    tickets, stop, lock = itertools.count(), threading.Event(), threading.Lock()
    latencies, errors, ends, marks = [], [], [], {}

    def start_clock():
        marks["started"] = time.perf_counter()
        marks["cpu"] = (cpu_seconds(server), cpu_seconds(psutil.Process()), busy_seconds())

    barrier = threading.Barrier(concurrency, action=start_clock)

    def client(number: int) -> None:
        with open_client() as call:
            for warm in range(load.warmup_requests):
                try:
                    call(number + warm * concurrency)
                except Exception as error:  # noqa: BLE001 - reported with the cell
                    errors.append(f"warm-up: {error!r}"[:300])
            barrier.wait(START_TIMEOUT_S)
            while not stop.is_set() and (ticket := next(tickets)) < load.requests:
                started = time.perf_counter()
                try:
                    call(ticket)
                except Exception as error:  # noqa: BLE001
                    errors.append(repr(error)[:300])
                ended = time.perf_counter()
                with lock:
                    latencies.append(ended - started)
                    ends.append(ended)
                if ended - marks["started"] >= load.duration:
                    stop.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not latencies:
        raise RuntimeError(f"no request was answered: {errors[:3]}")
    seconds = max(ends) - marks["started"]
    server_cpu = cpu_seconds(server) - marks["cpu"][0]
    client_cpu = cpu_seconds(psutil.Process()) - marks["cpu"][1]
    other_cpu = busy_seconds() - marks["cpu"][2] - server_cpu - client_cpu
    milliseconds = [latency * 1000 for latency in latencies]
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(seconds, 2),
        **timing.latency(milliseconds),
        "mean_ms": round(statistics.fmean(milliseconds), 2),
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


COUNTED = ("requests", "errors", "first_errors", "seconds")  # added up over rounds


def merge_cells(rounds: list[dict]) -> dict:
    """One cell from a cell per round: counts add up, every figure is the median of the rounds
    (other processes' share is the largest, so a disturbed round stays visible)."""
    merged = {
        key: timing.median_of(rounds, key, 3 if "fraction" in key else 2)
        for key in rounds[0]
        if key not in COUNTED
    }
    merged["other_cpu_fraction"] = max(cell["other_cpu_fraction"] for cell in rounds)
    merged["requests"] = sum(cell["requests"] for cell in rounds)
    merged["errors"] = sum(cell["errors"] for cell in rounds)
    merged["first_errors"] = [error for cell in rounds for error in cell["first_errors"]][:3]
    merged["seconds"] = round(sum(cell["seconds"] for cell in rounds), 2)
    merged["rounds"] = len(rounds)
    return merged


def row_name(role: str, api: str) -> str:
    return f"baseline_{api}" if role == "baseline" else api


def batching_of(role: str) -> str:
    return "on" if role == "batching" else "off"


def print_cell(role: str, api: str, concurrency: int, cell: dict) -> None:
    errors = f", {cell['errors']} ERRORS" if cell["errors"] else ""
    if cell["other_cpu_fraction"] > OTHER_CPU_LIMIT:
        errors += f"; other processes took {cell['other_cpu_fraction']:.0%} of the CPUs"
    print(
        f"bench:   {row_name(role, api):22}{batching_of(role):>4}{concurrency:3d} clients: "
        f"p50 {cell['p50_ms']:6.1f} ms  p99 {cell['p99_ms']:6.1f} ms  "
        f"{cell['images_per_s']:5.1f} img/s  {cell['requests']:4d} requests; "
        f"CPU ms/image server {cell['server_cpu_ms_per_image']:.1f} "
        f"client {cell['client_cpu_ms_per_image']:.1f}{errors}",
        flush=True,
    )
