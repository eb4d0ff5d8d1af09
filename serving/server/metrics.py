"""Prometheus metrics of one server, served at TF Serving's /monitoring/prometheus/metrics."""

import collections

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core import image_stats

METRICS_PATH = "/monitoring/prometheus/metrics"

# Milliseconds matter at the bottom (a warm 224x224 call takes a few), seconds at the top.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Input histograms by feature (the metric name's suffix). Buckets are the fixed edges of
# monitoring.stats, so PromQL sees the bins `imgclf monitor drift` compares.
INPUT_HISTOGRAMS = {
    "brightness": "Mean luma of sampled input images, in [0, 1].",
    "contrast": "Luma-weighted pixel std of sampled input images.",
    "height": "Height in pixels of sampled input images.",
    "width": "Width in pixels of sampled input images.",
}
CHANNELS = {"channel_mean_r": "r", "channel_mean_g": "g", "channel_mean_b": "b"}


class ServerMetrics:
    """One registry per server, so servers started side by side (tests) count separately."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imgclf_serving_requests",
            "Requests answered, by API, model, version, method and status code.",
            ["api", "model", "version", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "imgclf_serving_request_latency_seconds",
            "Time from receiving a request to answering it.",
            ["api", "model", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "imgclf_serving_batch_size",
            "Images per model call (server-side batching merges requests).",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.loaded = Gauge(
            "imgclf_serving_model_version_loaded",
            "1 for each model version being served.",
            ["model", "version"],
            registry=self.registry,
        )
        self.load_failures = Counter(
            "imgclf_serving_model_load_failures",
            "Versions that failed to load (the previous version kept serving).",
            ["model", "version"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "imgclf_serving_requests_in_flight",
            "Predict requests being worked on.",
            registry=self.registry,
        )
        self.predicted_classes = Counter(
            "imgclf_monitoring_predictions",
            "Images answered, by model, version and top-1 class.",
            ["model", "version", "class"],
            registry=self.registry,
        )
        self.confidence = Histogram(
            "imgclf_monitoring_confidence",
            "Top-1 probability of each image answered.",
            ["model", "version"],
            buckets=image_stats.CONFIDENCE_EDGES,
            registry=self.registry,
        )
        self.low_confidence_rate = Gauge(
            "imgclf_monitoring_low_confidence_rate",
            "Share of this window's images whose top-1 probability is below "
            "serving.monitoring.low_confidence_threshold.",
            ["model", "version"],
            registry=self.registry,
        )
        self.inputs = {
            feature: Histogram(
                f"imgclf_monitoring_input_{feature}",
                help_text,
                ["model", "version"],
                buckets=image_stats.INPUT_EDGES[feature],
                registry=self.registry,
            )
            for feature, help_text in INPUT_HISTOGRAMS.items()
        }
        self.channel_mean = Histogram(
            "imgclf_monitoring_input_channel_mean",
            "Mean of one RGB channel of sampled input images, in [0, 1].",
            ["model", "version", "channel"],
            buckets=image_stats.UNIT_EDGES,
            registry=self.registry,
        )
        self.monitoring_dropped = Counter(
            "imgclf_monitoring_dropped",
            "Sampled images (kind=input) or request log entries (kind=log) not recorded because "
            "the monitoring queue was full (serving.monitoring.queue_size).",
            ["model", "version", "kind"],
            registry=self.registry,
        )

    def observe(
        self,
        api: str,
        model: str,
        version: int | str,
        method: str,
        code: int | str,
        seconds: float,
    ) -> None:
        self.requests.labels(api, model, str(version), method, str(code)).inc()
        self.latency.labels(api, model, method).observe(seconds)

    def observe_predictions(
        self, model: str, version: int, labels: list[str], confidences: list[float], rate: float
    ) -> None:
        """One request's top-1 classes and probabilities; `rate` is its window's low-confidence
        share so far."""
        version_text = str(version)
        for label, count in collections.Counter(labels).items():
            self.predicted_classes.labels(model, version_text, label).inc(count)
        confidence = self.confidence.labels(model, version_text)
        for value in confidences:
            confidence.observe(value)
        self.low_confidence_rate.labels(model, version_text).set(rate)

    def observe_input(self, model: str, version: int, features: dict[str, float]) -> None:
        version_text = str(version)
        for name, histogram in self.inputs.items():
            histogram.labels(model, version_text).observe(features[name])
        for name, channel in CHANNELS.items():
            self.channel_mean.labels(model, version_text, channel).observe(features[name])

    def count_dropped(self, model: str, version: int, kind: str, count: int) -> None:
        self.monitoring_dropped.labels(model, str(version), kind).inc(count)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) in Prometheus' text format."""
        return prometheus_client.generate_latest(
            self.registry
        ), prometheus_client.CONTENT_TYPE_LATEST
