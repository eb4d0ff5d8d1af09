"""Dataset validation (the ExampleValidator's checks) on hand-made dataset.json dicts and on
the ingested digits."""

import copy

import pytest

from configs import schema
from transforms import dataset_info, dataset_validation


def make_dataset(
    per_split: dict[str, dict[str, int]] | None = None,
    channel_mean=(0.5, 0.5, 0.5),
    height: dict[str, int] | None = None,
    width: dict[str, int] | None = None,
    version: str = "v1",
    split_fractions: dict[str, float] | None = None,
) -> dict:
    """A dataset.json dict as ingest writes it, with only the keys the validator reads."""
    per_split = per_split or {
        "train": {"cat": 80, "dog": 80},
        "val": {"cat": 10, "dog": 10},
        "test": {"cat": 10, "dog": 10},
    }
    labels = sorted({name for counts in per_split.values() for name in counts})
    splits = {
        split: {
            "count": sum(per_split.get(split, {}).values()),
            "per_class": {name: per_split.get(split, {}).get(name, 0) for name in labels},
        }
        for split in ("train", "val", "test")
    }
    return {
        "version": version,
        "label_map": labels,
        "splits": splits,
        "class_counts": {
            name: sum(s["per_class"][name] for s in splits.values()) for name in labels
        },
        "ingest_config": {"split": split_fractions or {"train": 0.8, "val": 0.1, "test": 0.1}},
        "stats": {
            "channel_mean": list(channel_mean),
            "height_histogram": height or {"64-128": 200},
            "width_histogram": width or {"64-128": 200},
        },
    }


def kinds(result: dict) -> list[tuple[str, str]]:
    return [(a["kind"], a["severity"]) for a in result["anomalies"]]


def test_identical_versions_pass():
    result = dataset_validation.validate_examples(
        make_dataset(version="v2"), make_dataset(), schema.ValidationConfig()
    )
    assert result == {
        "passed": True,
        "anomalies": [],
        "previous_version": "v1",
        "current_version": "v2",
    }


def test_first_version_passes_without_previous():
    result = dataset_validation.validate_examples(make_dataset(), None, schema.ValidationConfig())
    assert result["passed"] and result["previous_version"] is None


def test_empty_split_is_an_error_without_previous():
    dataset = make_dataset({"train": {"cat": 8, "dog": 8}, "val": {"cat": 1, "dog": 1}})
    result = dataset_validation.validate_examples(dataset, None, schema.ValidationConfig())
    assert not result["passed"]
    assert kinds(result) == [("empty_split", "error")]
    assert "'test'" in result["anomalies"][0]["message"]
    assert "data.split.test" in result["anomalies"][0]["message"]


def test_split_empty_by_configuration_is_fine():
    dataset = make_dataset(
        {"train": {"cat": 8, "dog": 8}, "val": {"cat": 1, "dog": 1}},
        split_fractions={"train": 0.9, "val": 0.1, "test": 0.0},
    )
    assert dataset_validation.validate_examples(dataset, None, schema.ValidationConfig())["passed"]


def test_class_without_training_images_is_an_error():
    dataset = make_dataset(
        {"train": {"cat": 8, "dog": 0}, "val": {"cat": 1, "dog": 2}, "test": {"cat": 1, "dog": 1}}
    )
    result = dataset_validation.validate_examples(dataset, None, schema.ValidationConfig())
    assert kinds(result) == [("no_training_images", "error")]
    assert "'dog'" in result["anomalies"][0]["message"]
    assert not result["passed"]


@pytest.mark.parametrize(
    ("severity", "expected", "passed"),
    [("error", [("new_class", "error")], False), ("warn", [("new_class", "warn")], True)]
    + [("ignore", [], True)],
)
def test_new_class(severity, expected, passed):
    current = make_dataset(
        {
            "train": {"cat": 80, "dog": 80, "eel": 80},
            "val": {"cat": 10, "dog": 10, "eel": 10},
            "test": {"cat": 10, "dog": 10, "eel": 10},
        }
    )
    # Only presence: a new class moves the others' shares too, which is not what this tests.
    cfg = schema.ValidationConfig(new_classes=severity, class_share_severity="ignore")
    result = dataset_validation.validate_examples(current, make_dataset(), cfg)
    assert kinds(result) == expected
    assert result["passed"] is passed
    if expected:
        message = result["anomalies"][0]["message"]
        assert "'eel'" in message and "0 images" in message and "100 now" in message
        assert "pipeline.validation.new_classes" in message
        assert result["anomalies"][0]["value"] == 100


@pytest.mark.parametrize("severity", ["error", "warn", "ignore"])
def test_missing_class(severity):
    previous = make_dataset(
        {
            "train": {"cat": 80, "dog": 80, "eel": 80},
            "val": {"cat": 10, "dog": 10, "eel": 10},
            "test": {"cat": 10, "dog": 10, "eel": 10},
        }
    )
    cfg = schema.ValidationConfig(missing_classes=severity, class_share_severity="ignore")
    result = dataset_validation.validate_examples(make_dataset(), previous, cfg)
    assert kinds(result) == ([] if severity == "ignore" else [("missing_class", severity)])
    assert result["passed"] is (severity != "error")
    if severity != "ignore":
        assert "'eel'" in result["anomalies"][0]["message"]
        assert "pipeline.validation.missing_classes" in result["anomalies"][0]["message"]


@pytest.mark.parametrize("severity", ["error", "warn", "ignore"])
def test_class_share_shift(severity):
    # cat 0.5 -> 0.8 of the images: a change of 0.3 against a threshold of 0.2.
    current = make_dataset(
        {"train": {"cat": 64, "dog": 16}, "val": {"cat": 8, "dog": 2}, "test": {"cat": 8, "dog": 2}}
    )
    cfg = schema.ValidationConfig(class_share_shift=0.2, class_share_severity=severity)
    result = dataset_validation.validate_examples(current, make_dataset(), cfg)
    if severity == "ignore":
        assert result["anomalies"] == []
        return
    assert kinds(result) == [("class_share_shift", severity)] * 2
    cat = result["anomalies"][0]
    assert cat["value"] == pytest.approx(0.3) and cat["threshold"] == 0.2
    assert "'cat'" in cat["message"] and "0.500 to 0.800" in cat["message"]
    assert "pipeline.validation.class_share_shift 0.2" in cat["message"]
    assert result["passed"] is (severity != "error")


def test_small_class_share_change_passes():
    current = make_dataset(
        {"train": {"cat": 44, "dog": 36}, "val": {"cat": 5, "dog": 5}, "test": {"cat": 5, "dog": 5}}
    )
    assert dataset_validation.validate_examples(current, make_dataset(), schema.ValidationConfig())[
        "passed"
    ]


@pytest.mark.parametrize(
    ("histogram", "median"),
    [
        ({"64-128": 200}, 96.0),
        ({"0-32": 10, "32-64": 10}, 32.0),
        ({"0-32": 1, "32-64": 2, "64-128": 1}, 48.0),
        ({"4096+": 3}, 4096.0),
        ({}, None),
    ],
)
def test_histogram_median(histogram, median):
    assert dataset_validation.histogram_median(histogram) == median


@pytest.mark.parametrize("severity", ["error", "warn", "ignore"])
def test_image_size_shift(severity):
    # Heights move from the 64-128 bin (median ~96) to 256-512 (median ~384); widths stay.
    current = make_dataset(height={"256-512": 200})
    cfg = schema.ValidationConfig(image_size_severity=severity)
    result = dataset_validation.validate_examples(current, make_dataset(), cfg)
    if severity == "ignore":
        assert result["anomalies"] == []
        return
    assert kinds(result) == [("image_size_shift", severity)]
    shift = result["anomalies"][0]
    assert shift["value"] == pytest.approx(3.0) and shift["threshold"] == 0.25
    assert "height" in shift["message"] and "96.0 to 384.0" in shift["message"]
    assert "pipeline.validation.image_size_shift" in shift["message"]
    assert result["passed"] is (severity != "error")


@pytest.mark.parametrize("severity", ["error", "warn", "ignore"])
def test_channel_mean_shift(severity):
    current = make_dataset(channel_mean=(0.5, 0.75, 0.45))
    cfg = schema.ValidationConfig(channel_mean_severity=severity)
    result = dataset_validation.validate_examples(current, make_dataset(), cfg)
    if severity == "ignore":
        assert result["anomalies"] == []
        return
    assert kinds(result) == [("channel_mean_shift", severity)]
    shift = result["anomalies"][0]
    assert shift["value"] == pytest.approx(0.25) and shift["threshold"] == 0.1
    assert "channel_mean[1] (green)" in shift["message"] and "0.5000 to 0.7500" in shift["message"]
    assert "pipeline.validation.channel_mean_shift 0.1" in shift["message"]
    assert result["passed"] is (severity != "error")


@pytest.mark.slow
@pytest.mark.beam
def test_ingested_digits_against_a_modified_copy(ingested_digits):
    previous = dataset_info.load(str(ingested_digits.path))
    cfg = schema.ValidationConfig()
    assert dataset_validation.validate_examples(previous, previous, cfg)["passed"]
    assert dataset_validation.validate_examples(previous, None, cfg)["anomalies"] == []

    # The same version without class "3" and with every channel 0.2 brighter.
    current = copy.deepcopy(previous)
    current["version"] = "modified"
    for split in current["splits"].values():
        split["count"] -= split["per_class"]["3"]
        split["per_class"]["3"] = 0
    current["class_counts"]["3"] = 0
    current["stats"]["channel_mean"] = [m + 0.2 for m in current["stats"]["channel_mean"]]

    result = dataset_validation.validate_examples(current, previous, cfg)
    assert not result["passed"]
    assert result["current_version"] == "modified"
    assert result["previous_version"] == previous["version"]
    found = kinds(result)
    # "3" is still in the label map, so it is also a class without training images.
    assert ("no_training_images", "error") in found
    assert ("missing_class", "error") in found
    assert found.count(("channel_mean_shift", "warn")) == 3
    missing = next(a for a in result["anomalies"] if a["kind"] == "missing_class")
    assert "'3'" in missing["message"]
