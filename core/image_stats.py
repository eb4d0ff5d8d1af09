"""The image statistics every stage counts alike: each image's input features and the fixed bins
they are counted on. Ingest counts a dataset's histograms, the server a window of served images,
drift detection compares the two bin for bin. A feature's bins are `(-inf, e0), [e0, e1), ...,
[e_last, inf)`: values outside the expected range still count."""

import bisect

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B
UNIT_EDGES = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 20 bins over [0, 1]
CONTRAST_EDGES = tuple(round(0.025 * i, 3) for i in range(1, 20))  # 20 bins over [0, 0.5]
SIDE_EDGES = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
CONFIDENCE_EDGES = UNIT_EDGES
# Input features by name: their inner bin edges. Pixel values are in [0, 1].
INPUT_EDGES = {
    "height": SIDE_EDGES,
    "width": SIDE_EDGES,
    "brightness": UNIT_EDGES,
    "contrast": CONTRAST_EDGES,
    "channel_mean_r": UNIT_EDGES,
    "channel_mean_g": UNIT_EDGES,
    "channel_mean_b": UNIT_EDGES,
}


def bin_index(value: float, edges: tuple) -> int:
    return bisect.bisect_right(edges, value)


def features_from_moments(
    height: int, width: int, channel_mean: list[float], channel_std: list[float]
) -> dict[str, float]:
    """An image's input features from its size and per-channel pixel mean and std in [0, 1].

    Contrast is the luma-weighted channel std: the luma std for gray images, and what ingest's
    per-channel moments give for any image, so training and serving compute the same thing.
    """
    return {
        "height": float(height),
        "width": float(width),
        "brightness": sum(w * m for w, m in zip(LUMA, channel_mean, strict=True)),
        "contrast": sum(w * s for w, s in zip(LUMA, channel_std, strict=True)),
        "channel_mean_r": channel_mean[0],
        "channel_mean_g": channel_mean[1],
        "channel_mean_b": channel_mean[2],
    }


def empty_histograms() -> dict[str, list[int]]:
    return {name: [0] * (len(edges) + 1) for name, edges in INPUT_EDGES.items()}


def add_features(histograms: dict[str, list[int]], features: dict[str, float]) -> None:
    for name, edges in INPUT_EDGES.items():
        histograms[name][bin_index(features[name], edges)] += 1


def bins() -> dict[str, list[float]]:
    """Every feature's inner bin edges, as written beside histograms."""
    return {**{k: list(v) for k, v in INPUT_EDGES.items()}, "confidence": list(CONFIDENCE_EDGES)}
