"""How benchmarks time things: one call in milliseconds, medians after an untimed warm-up,
percentiles, and sides measured in turns so that a slow spell of a shared machine falls on every
side alike."""

import math
import statistics
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

Name = TypeVar("Name", bound=Hashable)
Sample = TypeVar("Sample")


def elapsed_ms(function: Callable[[], object]) -> float:
    """Milliseconds one call of `function` takes."""
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000


def median_ms(function: Callable[[], object], repeats: int, warmups: int = 1) -> float:
    """Median milliseconds of `repeats` calls, after `warmups` untimed ones (tracing, caches,
    thread pools), to 0.01 ms."""
    for _ in range(warmups):
        function()
    return round(statistics.median(elapsed_ms(function) for _ in range(repeats)), 2)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`th percentile (0-100), interpolated linearly between the closest ranks: numpy's
    default method, computed the same way so that figures do not depend on which one ran."""
    if not values:
        raise ValueError("a percentile of no values")
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    weight, step = position - below, ordered[above] - ordered[below]
    if weight >= 0.5:
        return ordered[above] - step * (1 - weight)
    return ordered[below] + step * weight


def latency(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of latency samples in milliseconds, to 0.01 ms."""
    return {
        "p50_ms": round(percentile(samples_ms, 50), 2),
        "p99_ms": round(percentile(samples_ms, 99), 2),
    }


def order(names: Sequence[Name], round_index: int, reverse_odd_rounds: bool) -> Sequence[Name]:
    """The order of the sides in round `round_index` (from 0): backwards in odd rounds when
    asked, so that no side always runs first (after a cold cache, say)."""
    return names[::-1] if reverse_odd_rounds and round_index % 2 else names


def turns(
    names: Sequence[Name], rounds: int, reverse_odd_rounds: bool = False
) -> Iterator[tuple[int, Name]]:
    """(round from 0, name) for every name in every round: each round runs every side once."""
    for round_index in range(rounds):
        for name in order(names, round_index, reverse_odd_rounds):
            yield round_index, name


def take_turns(
    sides: dict[Name, Callable[[], Sample]],
    rounds: int,
    *,
    reverse_odd_rounds: bool = False,
    before_round: Callable[[int], None] | None = None,
    after_round: Callable[[int, dict[Name, list[Sample]]], None] | None = None,
) -> dict[Name, list[Sample]]:
    """{side: its sample of each round}: every side once per round, in turns. The hooks get the
    round number (from 1) and, after it, the samples so far."""
    samples: dict[Name, list[Sample]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(rounds):
        if before_round:
            before_round(round_index + 1)
        for name in order(names, round_index, reverse_odd_rounds):
            samples[name].append(sides[name]())
        if after_round:
            after_round(round_index + 1, samples)
    return samples


def medians(samples: dict[Name, Sequence[float]]) -> dict[Name, float]:
    """Each side's median."""
    return {name: statistics.median(values) for name, values in samples.items()}


def median_of(records: Sequence[dict], key: str, digits: int = 2) -> float | None:
    """The median of `key` over the records that hold a value for it (None where none does),
    rounded: one figure from several runs of the same measurement."""
    values = [record[key] for record in records if record.get(key) is not None]
    return round(statistics.median(values), digits) if values else None
