"""The blessing gate: a model must beat always answering the majority class, must not be worse
than its baseline on the same test data, and every `evaluation.gate` threshold must hold;
together they decide blessing.json."""

import datetime

from scipy import stats

from configs import schema
from core import errors

# Float noise: a drop of exactly max_*_drop, or a value exactly at its minimum, passes.
TOLERANCE = 1e-9
# The one-sided binomial test's level: a model beats the majority rate only when its accuracy
# would happen by luck less often than this.
SIGNIFICANCE = 0.01
BEATS_MAJORITY = "beats_majority"
DELTAS = ("max_accuracy_drop", "max_macro_f1_drop", "max_class_recall_drop")


class GateError(errors.UserError):
    """A gate setting that cannot apply to this model."""


def bless(
    gate: schema.GateConfig,
    metrics: dict,
    baseline_metrics: dict | None = None,
    baseline: dict | None = None,
    no_baseline: str | None = None,
) -> dict:
    """blessing.json: {"blessed", "checks": [...], "baseline", "evaluated_at", "summary"}, a
    "reason" naming the failed checks when not blessed (what `imgclf registry` prints), and
    "no_baseline" saying why nothing was compared when `no_baseline` is given.

    `no_baseline` says why there is no baseline (nothing promoted to its label yet, or the
    label names this very model): max_*_drop checks are then skipped and listed in
    "skipped_checks". "summary" is one sentence saying why the model was blessed or refused.
    """
    checks = [majority_check(gate.majority_margin, metrics), *absolute_checks(gate, metrics)]
    deltas = [key for key in DELTAS if getattr(gate, key) is not None]
    skipped = []
    if baseline_metrics is not None:
        checks += delta_checks(gate, metrics, baseline_metrics)
    elif deltas and no_baseline is not None:
        skipped = [{"name": key, "reason": no_baseline} for key in deltas]
    elif deltas:
        raise GateError("evaluation.gate has max_*_drop thresholds but no baseline was evaluated")
    blessing = {
        "blessed": all(check["passed"] for check in checks),
        "checks": checks,
        "baseline": baseline,
        "evaluated_at": utc_now(),
    }
    if skipped:
        blessing["skipped_checks"] = skipped
    if baseline_metrics is None and no_baseline is not None:
        blessing["no_baseline"] = no_baseline
    failed = [describe(check) for check in checks if not check["passed"]]
    if failed:
        blessing["reason"] = "; ".join(failed)
        blessing["summary"] = f"NOT blessed: {blessing['reason']}"
    else:
        passed = "; ".join(describe(check) for check in checks)
        unbased = (
            f"; no baseline to compare with ({no_baseline})" if "no_baseline" in blessing else ""
        )
        blessing["summary"] = f"blessed: {passed}{unbased}"
    return blessing


def majority_check(margin: float, metrics: dict) -> dict:
    """Accuracy against always answering the most frequent class of the evaluated images: it
    must close `margin` of the gap between that rate and 1.0, and beat the rate at
    SIGNIFICANCE (one-sided binomial test), so a chance-level model is never blessed and a few
    lucky images are not enough."""
    supports = {name: row["support"] for name, row in metrics["per_class"].items()}
    total = sum(supports.values())
    majority = max(supports, key=supports.get)
    rate = supports[majority] / total
    required = rate + margin * (1.0 - rate)
    correct = sum(row[i] for i, row in enumerate(metrics["confusion_matrix"]))
    p_value = float(stats.binomtest(correct, total, rate, alternative="greater").pvalue)
    accuracy = metrics["accuracy"]
    return {
        "name": BEATS_MAJORITY,
        "value": accuracy,
        "threshold": required,
        "passed": accuracy >= required - TOLERANCE and p_value < SIGNIFICANCE,
        "majority_class": majority,
        "majority_rate": rate,
        "margin": margin,
        "num_examples": total,
        "correct": correct,
        "p_value": p_value,
        "significance": SIGNIFICANCE,
    }


def absolute_checks(gate: schema.GateConfig, metrics: dict) -> list[dict]:
    per_class = metrics["per_class"]
    checks = []
    if gate.min_accuracy is not None:
        checks.append(at_least("accuracy", metrics["accuracy"], gate.min_accuracy))
    if gate.min_macro_f1 is not None:
        checks.append(at_least("macro_f1", metrics["macro_f1"], gate.min_macro_f1))
    if gate.min_class_recall is not None:
        # A class without test images has no recall to judge; it is named, not failed.
        tested = {name: row["recall"] for name, row in per_class.items() if row["support"]}
        lowest = min(tested, key=tested.get)
        check = at_least("min_class_recall", tested[lowest], gate.min_class_recall)
        check["class"] = lowest
        untested = sorted(set(per_class) - set(tested))
        if untested:
            check["untested_classes"] = untested
        checks.append(check)
    unknown = sorted(set(gate.class_recall_floors) - set(per_class))
    if unknown:
        raise GateError(
            "evaluation.gate.class_recall_floors names classes the model does not have: "
            f"{', '.join(unknown)} (its classes: {', '.join(per_class)})"
        )
    for name, floor in gate.class_recall_floors.items():
        row = per_class[name]
        if row["support"]:
            check = at_least(f"class_recall[{name}]", row["recall"], floor)
        else:
            # A floor asked for explicitly cannot be shown to hold without test images.
            check = {
                "name": f"class_recall[{name}]",
                "value": None,
                "threshold": floor,
                "passed": False,
                "note": f"no test images of class {name}",
            }
        check["class"] = name
        checks.append(check)
    return checks


def delta_checks(gate: schema.GateConfig, metrics: dict, baseline: dict) -> list[dict]:
    """Drops (baseline minus candidate, so positive is worse) against the max_*_drop keys;
    without any, the accuracy must not drop at all."""
    checks = []
    accuracy_drop = gate.max_accuracy_drop
    if all(getattr(gate, key) is None for key in DELTAS):
        accuracy_drop = 0.0
    for key, threshold in (
        ("accuracy", accuracy_drop),
        ("macro_f1", gate.max_macro_f1_drop),
    ):
        if threshold is not None:
            checks.append(at_most_drop(f"{key}_drop", metrics[key], baseline[key], threshold))
    if gate.max_class_recall_drop is not None:
        drops = {
            name: baseline["per_class"][name]["recall"] - row["recall"]
            for name, row in metrics["per_class"].items()
            if row["support"] and name in baseline["per_class"]
        }
        if not drops:
            raise GateError(
                "evaluation.gate.max_class_recall_drop: the baseline knows none of the tested "
                f"classes ({', '.join(metrics['per_class'])}); compare with a baseline of the "
                "same classes"
            )
        worst = max(drops, key=drops.get)
        check = at_most_drop(
            "class_recall_drop",
            metrics["per_class"][worst]["recall"],
            baseline["per_class"][worst]["recall"],
            gate.max_class_recall_drop,
        )
        check["class"] = worst
        checks.append(check)
    return checks


def at_least(name: str, value: float, threshold: float) -> dict:
    return {
        "name": name,
        "value": value,
        "threshold": threshold,
        "passed": value >= threshold - TOLERANCE,
    }


def at_most_drop(name: str, candidate: float, baseline: float, threshold: float) -> dict:
    drop = baseline - candidate
    return {
        "name": name,
        "value": drop,
        "threshold": threshold,
        "passed": drop <= threshold + TOLERANCE,
        "candidate": candidate,
        "baseline": baseline,
    }


def describe(check: dict) -> str:
    """One check in words, e.g. `accuracy 0.8123 < 0.9` when it failed, `>=` when it passed."""
    if check["name"] == BEATS_MAJORITY:
        return describe_majority(check)
    if check["value"] is None:
        return f"{check['name']}: {check.get('note', 'no value')}"
    if "baseline" in check:
        relation = "<=" if check["passed"] else ">"
        return (
            f"{check['name']} {check['value']:.4f} {relation} {check['threshold']} "
            f"({check['candidate']:.4f} vs baseline {check['baseline']:.4f})"
        )
    relation = ">=" if check["passed"] else "<"
    where = f" (class {check['class']})" if check["name"] == "min_class_recall" else ""
    return f"{check['name']} {check['value']:.4f} {relation} {check['threshold']}{where}"


def describe_majority(check: dict) -> str:
    majority, total = repr(check["majority_class"]), check["num_examples"]
    if check["majority_rate"] >= 1.0:
        return (
            f"all {total} evaluated images are {majority}: always answering it is never wrong, "
            "so no accuracy can show that the model beats it; evaluate on images of several "
            "classes"
        )
    always = f"always answering {majority} ({check['majority_rate']:.4f} of the {total} images)"
    needs = f">= {check['threshold']:.4f} and p < {check['significance']:g}"
    if check["passed"]:
        return (
            f"accuracy {check['value']:.4f} beats {always} by the required margin "
            f"({needs}: p = {check['p_value']:.2g})"
        )
    return (
        f"accuracy {check['value']:.4f} does not beat {always} by the required margin: "
        f"needs {needs} (p = {check['p_value']:.2g})"
    )


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
