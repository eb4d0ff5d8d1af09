"""Per-image input features of encoded images, and windows of their counts on the fixed bins of
core/image_stats.py (the bins ingest and drift detection count on too)."""

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from core import image_stats

# What transparent pixels are composited on: data.background's default, as ingest does.
BACKGROUND = (255, 255, 255)
# Larger images are decoded at a reduced scale (JPEG draft mode): the moments barely change.
DRAFT_SIDE = 512


def rgb_features(height: int, width: int, pixels: np.ndarray) -> dict[str, float]:
    """Features of RGB uint8 pixels [H, W, 3] of an image whose original size is height x width."""
    unit = pixels.reshape(-1, 3).astype(np.float32) / 255.0
    return image_stats.features_from_moments(
        height, width, unit.mean(axis=0).tolist(), unit.std(0).tolist()
    )


def image_features(data: bytes) -> dict[str, float]:
    """Features of encoded image bytes, decoded with Pillow; ValueError when not an image."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
            image.alpha_composite(rgba)
        pixels = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"not a decodable image: {error}") from None
    return rgb_features(height, width, pixels)


def add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


@dataclass
class Window:
    """Counts of one model version's requests over [start, end) (unix seconds)."""

    start: float
    end: float
    low_confidence_threshold: float
    predictions: int = 0
    low_confidence: int = 0
    classes: dict[str, int] = field(default_factory=dict)  # top-1 class -> images
    confidence: list[int] = field(
        default_factory=lambda: [0] * (len(image_stats.CONFIDENCE_EDGES) + 1)
    )
    inputs: int = 0  # images whose input features were computed (a sample)
    dropped: int = 0  # images sampled but not measured: the measuring queue was full
    histograms: dict[str, list[int]] = field(default_factory=image_stats.empty_histograms)

    def add_predictions(self, labels: list[str], confidences: list[float]) -> None:
        for label, confidence in zip(labels, confidences, strict=True):
            self.classes[label] = self.classes.get(label, 0) + 1
            self.confidence[image_stats.bin_index(confidence, image_stats.CONFIDENCE_EDGES)] += 1
            self.low_confidence += confidence < self.low_confidence_threshold
        self.predictions += len(labels)

    def add_input(self, features: dict[str, float]) -> None:
        image_stats.add_features(self.histograms, features)
        self.inputs += 1

    def merge(self, other: "Window") -> "Window":
        """Both windows' counts over the span of both (the threshold of the later one)."""
        later = other if other.start >= self.start else self
        merged = Window(
            min(self.start, other.start),
            max(self.end, other.end),
            later.low_confidence_threshold,
            self.predictions + other.predictions,
            self.low_confidence + other.low_confidence,
            dict(self.classes),
            [a + b for a, b in zip(self.confidence, other.confidence, strict=True)],
            self.inputs + other.inputs,
            self.dropped + other.dropped,
            {
                name: [a + b for a, b in zip(counts, other.histograms[name], strict=True)]
                for name, counts in self.histograms.items()
            },
        )
        add_counts(merged.classes, other.classes)
        return merged

    @property
    def low_confidence_rate(self) -> float | None:
        return self.low_confidence / self.predictions if self.predictions else None

    def to_json(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "low_confidence_threshold": self.low_confidence_threshold,
            "predictions": self.predictions,
            "low_confidence": self.low_confidence,
            "low_confidence_rate": self.low_confidence_rate,
            "classes": dict(sorted(self.classes.items())),
            "confidence": self.confidence,
            "inputs": self.inputs,
            "dropped": self.dropped,
            "histograms": self.histograms,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Window":
        expected = {name: len(edges) + 1 for name, edges in image_stats.INPUT_EDGES.items()}
        found = {name: len(counts) for name, counts in data["histograms"].items()}
        if found != expected or len(data["confidence"]) != len(image_stats.CONFIDENCE_EDGES) + 1:
            raise ValueError(f"window image_stats.bins differ from monitoring.stats' ({found})")
        fields = {k: v for k, v in data.items() if k != "low_confidence_rate"}
        return cls(**fields)


def merge_all(windows: list[Window]) -> Window | None:
    merged = None
    for window in windows:
        merged = window if merged is None else merged.merge(window)
    return merged


def window_start(now: float, seconds: float) -> float:
    """Windows start at multiples of their length, so restarts and servers line up."""
    return math.floor(now / seconds) * seconds
