"""A dataset version's dataset.json checked alone and against the previous one (the pipeline's
ExampleValidator runs these checks).

Schema checks need only the current version (a split that should hold images but holds none, a
class of the label map with no training images) and are always errors: training cannot use such a
dataset. Drift checks compare with the previous version (new and missing classes, each class's
share of the images, the median image height and width, each channel's mean) and take their
thresholds and severities from `pipeline.validation`; severity "ignore" skips a check.
"""

import logging

from configs import schema

logger = logging.getLogger(__name__)

KEY = "pipeline.validation"
SPLITS = ("train", "val", "test")
CHANNELS = ("red", "green", "blue")


def validate_examples(current: dict, previous: dict | None, cfg: schema.ValidationConfig) -> dict:
    """{"passed", "anomalies", "previous_version", "current_version"}; `passed` is False iff an
    anomaly has severity "error". `current` and `previous` are dataset.json dicts."""
    anomalies = check_schema(current)
    if previous is not None:
        anomalies += check_classes(current, previous, cfg)
        anomalies += check_class_shares(current, previous, cfg)
        anomalies += check_image_sizes(current, previous, cfg)
        anomalies += check_channel_means(current, previous, cfg)
    for anomaly in anomalies:
        log = logger.error if anomaly["severity"] == "error" else logger.warning
        log("example validation: %s", anomaly["message"])
    return {
        "passed": not any(anomaly["severity"] == "error" for anomaly in anomalies),
        "anomalies": anomalies,
        "previous_version": previous.get("version") if previous is not None else None,
        "current_version": current.get("version"),
    }


def anomaly(kind: str, severity: str, message: str, value, threshold) -> dict:
    return {
        "kind": kind,
        "severity": severity,
        "message": message,
        "value": value,
        "threshold": threshold,
    }


def check_schema(current: dict) -> list[dict]:
    """Errors whatever the previous version: empty splits and classes without training images."""
    found = []
    splits = current.get("splits", {})
    fractions = current.get("ingest_config", {}).get("split", {})
    for name in SPLITS:
        count = splits.get(name, {}).get("count", 0)
        # A split configured with fraction 0 (data.split.test: 0) is empty on purpose.
        if count == 0 and fractions.get(name, 1) > 0:
            fraction = f" although data.split.{name} is {fractions[name]}" if fractions else ""
            found.append(
                anomaly(
                    "empty_split",
                    "error",
                    f"split {name!r} holds no images{fraction}; add images to data.source, or "
                    f"set data.split.{name} to 0 if the split is meant to be empty",
                    0,
                    1,
                )
            )
    train = splits.get("train", {}).get("per_class", {})
    for name in current.get("label_map", []):
        if train.get(name, 0) == 0:
            elsewhere = {s: splits.get(s, {}).get("per_class", {}).get(name, 0) for s in SPLITS}
            found.append(
                anomaly(
                    "no_training_images",
                    "error",
                    f"class {name!r} has no training images (images per split: {elsewhere}); "
                    "add images of it to data.source or remove it from data.classes",
                    0,
                    1,
                )
            )
    return found


def present_classes(dataset: dict) -> set[str]:
    return {name for name, count in dataset.get("class_counts", {}).items() if count > 0}


def check_classes(current: dict, previous: dict, cfg: schema.ValidationConfig) -> list[dict]:
    now, before = present_classes(current), present_classes(previous)
    found = []
    for kind, severity, names, change, field in (
        ("new_class", cfg.new_classes, sorted(now - before), "is new", "new_classes"),
        (
            "missing_class",
            cfg.missing_classes,
            sorted(before - now),
            "is missing",
            "missing_classes",
        ),
    ):
        if severity == "ignore":
            continue
        for name in names:
            count = current.get("class_counts", {}).get(name, 0)
            was = previous.get("class_counts", {}).get(name, 0)
            found.append(
                anomaly(
                    kind,
                    severity,
                    f"class {name!r} {change}: {was} images in the previous version, {count} now "
                    f"(set {KEY}.{field} to warn or ignore to accept it)",
                    count,
                    None,
                )
            )
    return found


def class_shares(dataset: dict) -> dict[str, float]:
    counts = dataset.get("class_counts", {})
    total = sum(counts.values())
    return {name: count / total for name, count in counts.items()} if total else {}


def check_class_shares(current: dict, previous: dict, cfg: schema.ValidationConfig) -> list[dict]:
    """Classes in both versions whose share of all images moved more than class_share_shift;
    new and missing classes are check_classes' business."""
    if cfg.class_share_severity == "ignore":
        return []
    now, before = class_shares(current), class_shares(previous)
    found = []
    for name in sorted(present_classes(current) & present_classes(previous)):
        change = abs(now[name] - before[name])
        if change > cfg.class_share_shift:
            found.append(
                anomaly(
                    "class_share_shift",
                    cfg.class_share_severity,
                    f"class {name!r} share of the images moved from {before[name]:.3f} to "
                    f"{now[name]:.3f} (change {change:.3f} > {KEY}.class_share_shift "
                    f"{cfg.class_share_shift}; raise it or set {KEY}.class_share_severity)",
                    round(change, 6),
                    cfg.class_share_shift,
                )
            )
    return found


def histogram_median(histogram: dict[str, int]) -> float | None:
    """The median of a binned histogram ({"32-64": n, ..., "4096+": n}, as ingest writes them).

    Only bin counts are stored, so the estimate assumes images spread evenly inside the bin
    holding the median and interpolates linearly there; for the open last bin ("4096+") it is
    the bin's lower edge. With ingest's power-of-two bins a shift inside one bin shows only as
    far as the counts move, so small size changes may go unseen. None for an empty histogram.
    """
    bins = []
    for label, count in histogram.items():
        low, _, high = label.rstrip("+").partition("-")
        bins.append((float(low), float(high) if high else None, count))
    bins.sort()
    total = sum(count for _, _, count in bins)
    if not total:
        return None
    half, before = total / 2, 0
    for low, high, count in bins:
        if count and before + count >= half:
            return low if high is None else low + (high - low) * (half - before) / count
        before += count
    return bins[-1][0]


def check_image_sizes(current: dict, previous: dict, cfg: schema.ValidationConfig) -> list[dict]:
    if cfg.image_size_severity == "ignore":
        return []
    found = []
    for side in ("height", "width"):
        key = f"{side}_histogram"
        now = histogram_median(current.get("stats", {}).get(key, {}))
        before = histogram_median(previous.get("stats", {}).get(key, {}))
        if now is None or not before:
            continue
        change = abs(now - before) / before
        if change > cfg.image_size_shift:
            found.append(
                anomaly(
                    "image_size_shift",
                    cfg.image_size_severity,
                    f"median image {side} (estimated from stats.{key}) moved from {before:.1f} "
                    f"to {now:.1f} px (relative change {change:.3f} > {KEY}.image_size_shift "
                    f"{cfg.image_size_shift}; raise it or set {KEY}.image_size_severity)",
                    round(change, 6),
                    cfg.image_size_shift,
                )
            )
    return found


def check_channel_means(current: dict, previous: dict, cfg: schema.ValidationConfig) -> list[dict]:
    if cfg.channel_mean_severity == "ignore":
        return []
    now = current.get("stats", {}).get("channel_mean", [])
    before = previous.get("stats", {}).get("channel_mean", [])
    found = []
    for index, (new, old) in enumerate(zip(now, before, strict=False)):
        change = abs(new - old)
        if change > cfg.channel_mean_shift:
            name = CHANNELS[index] if index < len(CHANNELS) else str(index)
            found.append(
                anomaly(
                    "channel_mean_shift",
                    cfg.channel_mean_severity,
                    f"stats.channel_mean[{index}] ({name}) moved from {old:.4f} to {new:.4f} "
                    f"(change {change:.4f} > {KEY}.channel_mean_shift {cfg.channel_mean_shift}; "
                    f"raise it or set {KEY}.channel_mean_severity)",
                    round(change, 6),
                    cfg.channel_mean_shift,
                )
            )
    return found
