"""Comparing runs: config differences, final-metric deltas and per-class regressions vs the first.

The first run is the baseline; every other run is compared with it.
"""

import json
import re
from dataclasses import dataclass, field

from tracking import records

# Per-class scores compared; one lower than the baseline's is a regression.
CLASS_METRICS = ("recall", "f1")
# Final metrics where lower is better (everything else: higher is better).
LOWER_IS_BETTER = re.compile(r"(^|[._])(loss|ece|mce|brier|error|seconds|duration_s)($|[._])")
# Bookkeeping in metrics.json, not a measure of the model: shown, never judged better or worse.
NEUTRAL_METRICS = (
    "num_examples",
    "num_classes",
    "epochs_run",
    "best_epoch",
    "calibration.num_bins",
)
# Differences smaller than this are rounding, not regressions.
TOLERANCE = 1e-9
REGRESSION_MARK = "▼"


@dataclass(frozen=True)
class Regression:
    run: int  # index into Comparison.records (never 0, the baseline)
    class_name: str
    metric: str
    baseline: float
    value: float

    @property
    def change(self) -> float:
        return self.value - self.baseline


@dataclass
class Comparison:
    records: list[dict]
    config: dict[str, list] = field(default_factory=dict)  # differing keys only
    metrics: dict[str, list[float | None]] = field(default_factory=dict)
    classes: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    regressions: list[Regression] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        return [record["run_id"] for record in self.records]

    def is_regression(self, run: int, class_name: str, metric: str) -> bool:
        return any(
            (r.run, r.class_name, r.metric) == (run, class_name, metric) for r in self.regressions
        )


def compare(compared: list[dict]) -> Comparison:
    """The comparison of two or more run records (as from records.load), first = baseline."""
    if len(compared) < 2:
        raise ValueError(f"compare needs at least two runs (received {len(compared)})")
    comparison = Comparison(records=compared)
    comparison.config = config_differences(compared)
    comparison.metrics = final_metrics(compared)
    comparison.classes = class_scores(compared)
    for class_name, scores in comparison.classes.items():
        for metric in CLASS_METRICS:
            values = scores.get(metric, [])
            baseline = values[0] if values else None
            if baseline is None:
                continue
            for run, value in enumerate(values[1:], start=1):
                if value is not None and value < baseline - TOLERANCE:
                    comparison.regressions.append(
                        Regression(run, class_name, metric, baseline, value)
                    )
    return comparison


def config_differences(compared: list[dict]) -> dict[str, list]:
    """{dotted key: [value per run]} for every key whose values are not all equal, with the
    dataset version and git commit as keys of their own."""
    flats = []
    for record in compared:
        flat = flatten(record.get("config") or {})
        flat["dataset_version"] = record.get("dataset_version")
        git = record.get("git") or {}
        flat["git.commit"] = git.get("commit")
        flat["git.dirty"] = git.get("dirty")
        flats.append(flat)
    keys = sorted(set().union(*flats))
    missing = object()
    differing = {}
    for key in keys:
        values = [flat.get(key, missing) for flat in flats]
        if any(value != values[0] for value in values[1:]):
            differing[key] = [None if value is missing else value for value in values]
    return differing


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested config -> {"optimizer.learning_rate": 0.003, "model.cnn": "[...]"}; lists as JSON
    so that any change inside one shows as a change of the key."""
    flat = {}
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path))
        elif isinstance(value, list | dict):
            flat[path] = json.dumps(value, separators=(",", ":"))
        else:
            flat[path] = value
    return flat


def final_metrics(compared: list[dict]) -> dict[str, list[float | None]]:
    """{metric: [value per run]} of every number in the runs' test metrics (per-class scores
    apart), plus the run duration; keys in first-seen order."""
    flats = [
        {
            **records.flat_metrics(record.get("metrics") or {}, skip=("per_class",)),
            **({"duration_s": record["duration_s"]} if record.get("duration_s") else {}),
        }
        for record in compared
    ]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    return {key: [flat.get(key) for flat in flats] for key in keys}


def class_scores(compared: list[dict]) -> dict[str, dict[str, list[float | None]]]:
    """{class: {metric: [value per run]}} for the per-class scores of the test metrics."""
    per_run = [(record.get("metrics") or {}).get("per_class") or {} for record in compared]
    classes = list(dict.fromkeys(name for scores in per_run for name in scores))
    table = {}
    for name in classes:
        metrics = list(
            dict.fromkeys(
                key
                for scores in per_run
                for key, value in (scores.get(name) or {}).items()
                if records.is_number(value)
            )
        )
        table[name] = {
            metric: [_number((scores.get(name) or {}).get(metric)) for scores in per_run]
            for metric in metrics
        }
    return table


def _number(value) -> float | None:
    return value if records.is_number(value) else None


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 for bookkeeping."""
    if metric in NEUTRAL_METRICS:
        return 0
    return -1 if LOWER_IS_BETTER.search(metric) else 1


def verdict(metric: str, baseline: float | None, value: float | None) -> str:
    """'better', 'worse', 'same' or '' (not comparable) for a run's value vs the baseline's."""
    if baseline is None or value is None or direction(metric) == 0:
        return ""
    change = (value - baseline) * direction(metric)
    if abs(change) <= TOLERANCE:
        return "same"
    return "better" if change > 0 else "worse"
