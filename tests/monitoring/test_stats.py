"""Fixed bins, per-image features and windows: what serving counts and drift compares."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from core import image_stats
from monitoring import drift, stats, timespan


def png(pixels: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_bins_are_closed_below_and_open_at_both_ends():
    assert image_stats.bin_index(-1.0, image_stats.UNIT_EDGES) == 0
    assert image_stats.bin_index(0.05, image_stats.UNIT_EDGES) == 1
    assert image_stats.bin_index(1.0, image_stats.UNIT_EDGES) == len(image_stats.UNIT_EDGES)
    assert image_stats.bin_index(10_000, image_stats.SIDE_EDGES) == len(image_stats.SIDE_EDGES)
    assert all(len(counts) == len(image_stats.INPUT_EDGES[name]) + 1 for name, counts in
               image_stats.empty_histograms().items())  # fmt: skip


def test_decoded_features_equal_the_moments_ingest_records():
    gray = np.random.default_rng(0).integers(0, 256, (9, 7), np.uint8)
    features = stats.image_features(png(gray, "L"))
    unit = gray / 255
    from_moments = image_stats.features_from_moments(9, 7, [unit.mean()] * 3, [unit.std()] * 3)
    assert features == pytest.approx(from_moments, abs=1e-6)
    assert (features["height"], features["width"]) == (9, 7)


def test_transparent_pixels_count_as_the_white_background():
    clear = np.zeros((4, 4, 4), np.uint8)
    assert stats.image_features(png(clear, "RGBA"))["brightness"] == pytest.approx(1.0)


def test_bytes_that_are_no_image_are_a_value_error():
    with pytest.raises(ValueError, match="not a decodable image"):
        stats.image_features(b"not an image")


def test_windows_merge_and_survive_json():
    first, second = stats.Window(0, 60, 0.5), stats.Window(60, 120, 0.5)
    first.add_predictions(["a", "b"], [0.9, 0.4])
    second.add_predictions(["a"], [0.3])
    second.add_input(image_stats.features_from_moments(32, 32, [0.5] * 3, [0.2] * 3))
    merged = stats.Window.from_json(first.merge(second).to_json())
    assert (merged.start, merged.end, merged.predictions) == (0, 120, 3)
    assert merged.classes == {"a": 2, "b": 1}
    assert merged.low_confidence == 2 and merged.low_confidence_rate == pytest.approx(2 / 3)
    assert merged.inputs == 1 and sum(merged.histograms["brightness"]) == 1


def test_psi_and_ks_are_zero_for_equal_shares_and_grow_with_a_shift():
    reference = [10, 20, 30, 40]
    assert drift.psi(reference, [1, 2, 3, 4]) == pytest.approx(0, abs=1e-12)
    assert drift.ks_distance(reference, [1, 2, 3, 4]) == pytest.approx(0, abs=1e-12)
    assert drift.psi(reference, [40, 30, 20, 10]) > 0.5
    assert drift.ks_distance(reference, [40, 30, 20, 10]) == pytest.approx(0.4)
    assert math.isfinite(drift.psi([0, 10], [10, 0]))
    assert drift.ks_threshold(1000, 50, 0.1) == pytest.approx(1.628 * math.sqrt(1050 / 50_000))
    assert drift.ks_threshold(10**9, 10**9, 0.1) == 0.1


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("2d", 172_800), ("90s", 90)]
)
def test_since_takes_durations(text, seconds):
    assert timespan.parse_since(text, now=10**6) == 10**6 - seconds


def test_since_takes_iso_times_in_utc_unless_zoned():
    assert timespan.parse_since("1970-01-02T00:00:00") == 86400
    assert timespan.parse_since("1970-01-02T01:00:00+01:00") == 86400


def test_since_refuses_anything_else_naming_it():
    with pytest.raises(timespan.SinceError, match="received 'last week'"):
        timespan.parse_since("last week")
