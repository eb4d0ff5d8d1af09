"""Drift of served inputs and predictions against a training dataset: PSI and KS on fixed bins.

Per input feature (height, width, brightness, contrast, channel means): PSI, and the two-sample
Kolmogorov-Smirnov distance of the binned distributions. Predictions: PSI of the top-1 class mix
against the train split's label mix, and the low-confidence rate against a ceiling.
"""

import math
from dataclasses import asdict, dataclass

from core import image_stats
from monitoring import stats, thresholds

KS_ALPHA_FACTOR = 1.628  # c(alpha) of the two-sample KS test at alpha = 0.01
PSI_FLOOR = 1e-4  # share given to empty bins, so one empty bin does not make PSI infinite


@dataclass(frozen=True)
class Reference:
    """The training side: input histograms on monitoring's bins and the train label mix."""

    version: str
    histograms: dict[str, list[int]]
    classes: dict[str, int]
    source: str  # where the histograms came from, for the report


@dataclass(frozen=True)
class Finding:
    feature: str
    statistic: str  # psi, ks or rate
    value: float
    threshold: float
    drifted: bool
    reference_count: int
    served_count: int
    note: str = ""


def psi(reference: list[int], served: list[int]) -> float:
    """Population stability index of two histograms on the same bins."""
    total_reference, total_served = sum(reference), sum(served)
    value = 0.0
    for expected, actual in zip(reference, served, strict=True):
        p = max(expected / total_reference, PSI_FLOOR)
        q = max(actual / total_served, PSI_FLOOR)
        value += (q - p) * math.log(q / p)
    return value


def ks_distance(reference: list[int], served: list[int]) -> float:
    """Largest gap between the two binned cumulative distributions (a lower bound of the exact
    KS statistic, so binning never invents drift)."""
    total_reference, total_served = sum(reference), sum(served)
    gap = cumulative_reference = cumulative_served = 0.0
    for expected, actual in zip(reference, served, strict=True):
        cumulative_reference += expected / total_reference
        cumulative_served += actual / total_served
        gap = max(gap, abs(cumulative_reference - cumulative_served))
    return gap


def ks_threshold(reference_count: int, served_count: int, ks_min: float) -> float:
    """The 1% critical KS distance for these sample sizes, but never below `ks_min`."""
    critical = KS_ALPHA_FACTOR * math.sqrt(
        (reference_count + served_count) / (reference_count * served_count)
    )
    return max(critical, ks_min)


def compare(
    reference: Reference, served: stats.Window, limits: thresholds.Thresholds
) -> list[Finding]:
    """One finding per (feature, statistic); a feature with too few served images is reported
    with drifted False and a note."""
    findings = []
    for name in image_stats.INPUT_EDGES:
        expected, actual = reference.histograms[name], served.histograms[name]
        n, m = sum(expected), sum(actual)
        if not n or m < limits.min_count:
            findings.append(too_few(name, "psi", limits.psi, n, m, limits.min_count))
            continue
        value = psi(expected, actual)
        findings.append(Finding(name, "psi", value, limits.psi, value > limits.psi, n, m))
        distance, limit = ks_distance(expected, actual), ks_threshold(n, m, limits.ks_min)
        findings.append(Finding(name, "ks", distance, limit, distance > limit, n, m))
    labels = sorted(set(reference.classes) | set(served.classes))
    expected = [reference.classes.get(label, 0) for label in labels]
    actual = [served.classes.get(label, 0) for label in labels]
    n, m = sum(expected), sum(actual)
    if not n or m < limits.min_count:
        findings.append(too_few("class", "psi", limits.psi, n, m, limits.min_count))
        findings.append(
            too_few("low_confidence", "rate", limits.low_confidence_rate, n, m, limits.min_count)
        )
        return findings
    value = psi(expected, actual)
    findings.append(Finding("class", "psi", value, limits.psi, value > limits.psi, n, m))
    rate = served.low_confidence / m
    limit = limits.low_confidence_rate
    note = f"top-1 probability < {served.low_confidence_threshold:g}"
    findings.append(Finding("low_confidence", "rate", rate, limit, rate > limit, 0, m, note))
    return findings


def too_few(feature: str, statistic: str, threshold: float, n: int, m: int, least: int) -> Finding:
    note = f"too few images to judge (served {m} < {least})" if n else "no reference counts"
    return Finding(feature, statistic, math.nan, threshold, False, n, m, note)


def report(
    model: str,
    since: float,
    reference: Reference,
    served: stats.Window,
    findings: list[Finding],
    served_from: str,
) -> dict:
    """The JSON written by `imgclf monitor drift --out`."""
    return {
        "model": model,
        "since": since,
        "served": {
            "from": served_from,
            "start": served.start,
            "end": served.end,
            "predictions": served.predictions,
            "inputs": served.inputs,
            "dropped": served.dropped,
        },
        "dataset": {"version": reference.version, "reference": reference.source},
        "findings": [
            {**asdict(f), "value": None if math.isnan(f.value) else round(f.value, 6)}
            for f in findings
        ],
        "drifted": sorted({f.feature for f in findings if f.drifted}),
    }
