"""Prometheus metrics of one server, served at TF Serving's /monitoring/prometheus/metrics."""

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) in Prometheus' text format."""
        return prometheus_client.generate_latest(
            self.registry
        ), prometheus_client.CONTENT_TYPE_LATEST
