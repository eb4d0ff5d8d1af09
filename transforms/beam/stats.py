"""Dataset statistics from the ingest pipeline: sizes, aspect ratios, modes, pixel moments, and
per-image feature histograms on monitoring's fixed bins (the reference for serving drift)."""

import math

import apache_beam as beam

from core import image_stats

SIDE_BINS = (0, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # lower edges; the last bin is open
ASPECT_BINS = (0.0, 0.5, 0.75, 0.9, 1.1, 1.34, 2.0)  # width / height


def bin_label(value: float, edges: tuple) -> str:
    index = max(i for i, edge in enumerate(edges) if value >= edge)
    low = edges[index]
    high = edges[index + 1] if index + 1 < len(edges) else None
    return f"{low}-{high}" if high is not None else f"{low}+"


class DatasetStats(beam.CombineFn):
    """Combines kept records into histograms and per-channel mean/std of the stored pixels."""

    def create_accumulator(self):
        return {
            "images": 0,
            "pixels": 0,
            "sum": [0.0, 0.0, 0.0],
            "sum_squares": [0.0, 0.0, 0.0],
            "height": {},
            "width": {},
            "aspect": {},
            "mode": {},
            "format": {},
            "rewritten": 0,
            "inputs": image_stats.empty_histograms(),
        }

    def add_input(self, acc, record):
        pixels = record["height"] * record["width"]
        acc["images"] += 1
        acc["pixels"] += pixels
        for c in range(3):
            mean, std = record["channel_mean"][c], record["channel_std"][c]
            acc["sum"][c] += mean * pixels
            acc["sum_squares"][c] += (std * std + mean * mean) * pixels
        height, width = record["original_height"], record["original_width"]
        for key, value in (
            ("height", bin_label(height, SIDE_BINS)),
            ("width", bin_label(width, SIDE_BINS)),
            ("aspect", bin_label(width / height, ASPECT_BINS)),
            ("mode", record["original_mode"]),
            ("format", record["original_format"]),
        ):
            acc[key][value] = acc[key].get(value, 0) + 1
        acc["rewritten"] += int(record["rewritten"])
        # The original size, as a client would send the file to the server.
        features = image_stats.features_from_moments(
            height, width, record["channel_mean"], record["channel_std"]
        )
        image_stats.add_features(acc["inputs"], features)
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            for key in ("images", "pixels", "rewritten"):
                merged[key] += acc[key]
            for key in ("sum", "sum_squares"):
                merged[key] = [a + b for a, b in zip(merged[key], acc[key], strict=True)]
            for key in ("height", "width", "aspect", "mode", "format"):
                for value, count in acc[key].items():
                    merged[key][value] = merged[key].get(value, 0) + count
            for name, counts in acc["inputs"].items():
                merged["inputs"][name] = [
                    a + b for a, b in zip(merged["inputs"][name], counts, strict=True)
                ]
        return merged

    def extract_output(self, acc):
        pixels = max(acc["pixels"], 1)
        mean = [s / pixels for s in acc["sum"]]
        std = [
            math.sqrt(max(sq / pixels - m * m, 0.0))
            for sq, m in zip(acc["sum_squares"], mean, strict=True)
        ]
        return {
            "images": acc["images"],
            "rewritten": acc["rewritten"],
            "channel_mean": [round(v, 6) for v in mean],
            "channel_std": [round(v, 6) for v in std],
            "height_histogram": sort_bins(acc["height"]),
            "width_histogram": sort_bins(acc["width"]),
            "aspect_histogram": sort_bins(acc["aspect"]),
            "original_modes": dict(sorted(acc["mode"].items())),
            "original_formats": dict(sorted(acc["format"].items())),
            "input_histograms": {
                "edges": {k: list(v) for k, v in image_stats.INPUT_EDGES.items()},
                "counts": acc["inputs"],
            },
        }


def sort_bins(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: float(kv[0].split("-")[0].rstrip("+"))))
