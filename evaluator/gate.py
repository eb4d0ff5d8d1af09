"""The blessing gate: `evaluation.gate` thresholds over a model's metrics, and its drops against
a baseline's metrics on the same test data, decide blessing.json."""

import datetime

from configs import errors, schema

# Float noise: a drop of exactly max_*_drop, or a value exactly at its minimum, passes.
TOLERANCE = 1e-9
NO_THRESHOLDS = "no evaluation.gate thresholds are set, so every model is blessed"


class GateError(errors.UserError):
    """A gate setting that cannot apply to this model."""


def bless(
    gate: schema.GateConfig,
    metrics: dict,
    baseline_metrics: dict | None = None,
    baseline: dict | None = None,
    no_baseline: str | None = None,
) -> dict:
    """blessing.json: {"blessed", "checks": [...], "baseline", "evaluated_at"} and, when not
    blessed, a "reason" naming the failed checks (what `imgclf registry` prints).

    `no_baseline` says why a configured baseline does not exist yet (nothing promoted to its
    label): the drop checks are then skipped and listed in "skipped_checks".
    """
    checks = absolute_checks(gate, metrics)
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
    if not checks and not skipped:
        blessing["note"] = NO_THRESHOLDS
    failed = [describe(check) for check in checks if not check["passed"]]
    if failed:
        blessing["reason"] = "; ".join(failed)
    return blessing


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


DELTAS = ("max_accuracy_drop", "max_macro_f1_drop", "max_class_recall_drop")


def delta_checks(gate: schema.GateConfig, metrics: dict, baseline: dict) -> list[dict]:
    """Drops (baseline minus candidate, so positive is worse) against the max_*_drop keys."""
    checks = []
    for key, threshold in (
        ("accuracy", gate.max_accuracy_drop),
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
    """One failed check in words, e.g. `accuracy 0.8123 < 0.9`."""
    if check["value"] is None:
        return f"{check['name']}: {check.get('note', 'no value')}"
    if "baseline" in check:
        return (
            f"{check['name']} {check['value']:.4f} > {check['threshold']} "
            f"({check['candidate']:.4f} vs baseline {check['baseline']:.4f})"
        )
    where = f" (class {check['class']})" if check["name"] == "min_class_recall" else ""
    return f"{check['name']} {check['value']:.4f} < {check['threshold']}{where}"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
