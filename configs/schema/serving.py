"""serving: the model server (ports, limits, runtime), its batching, and the statistics
and request log it keeps."""

from typing import Literal

from pydantic import Field, model_validator

from configs.schema.base import Section


class BatchingConfig(Section):
    """Server-side batching: concurrent requests to one model version share one model call."""

    enabled: bool = Field(
        False, description="Batch concurrent requests (TF Serving's --enable_batching)."
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most images in one model call.")
    batch_timeout_ms: float = Field(
        2.0, ge=0, le=10_000, description="Longest a request waits for others to fill a batch."
    )
    max_enqueued_batches: int = Field(
        16,
        ge=1,
        description="Requests waiting while a batch runs, in batches: up to this times "
        "max_batch_size requests queue; one beyond it gets 429 (gRPC RESOURCE_EXHAUSTED).",
    )


class RequestLogConfig(Section):
    """Sampled predictions (and optionally images) written as a dataset source for relabelling."""

    enabled: bool = Field(False, description="Write a sample of requests' predictions.")
    dir: str = Field(
        "request_log",
        description="Folder or bucket: <dir>/<model>/<version>/predictions/*.jsonl and, with "
        "log_images, images/<predicted class>/<sha256>.<ext> (an `imgclf ingest` source).",
    )
    sample_rate: float = Field(
        0.01, ge=0, le=1, description="Fraction of predict requests logged (all their images)."
    )
    log_images: bool = Field(
        False, description="Also write the images' bytes; off, only predictions are written."
    )
    top_k: int = Field(5, ge=1, description="Classes with scores logged per image.")


class MonitoringConfig(Section):
    """Prediction and input statistics per model version over fixed windows, for drift checks."""

    enabled: bool = Field(True, description="Record prediction and input statistics.")
    window_seconds: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="Length of a statistics window; closed windows are written.",
    )
    low_confidence_threshold: float = Field(
        0.5, ge=0, le=1, description="A top-1 probability below this counts as low confidence."
    )
    input_sample_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Fraction of images whose input statistics are computed, off the request "
        "path in a background thread that decodes them again: at 1.0 it competed with requests "
        "for the CPU (REST p50 10 -> 17 ms for MobileNetV2 on 2 cores).",
    )
    queue_size: int = Field(
        1024,
        ge=1,
        description="Requests whose sampled images wait for input statistics; beyond it their "
        "images are dropped and counted.",
    )
    dir: str | None = Field(
        None,
        description="Folder or bucket where each closed window is written as "
        "<dir>/<model>/<version>/windows/<start>-<id>.json, for `imgclf monitor drift "
        "--stats-dir`; null keeps them in memory only (`--server`).",
    )
    memory_windows: int = Field(
        288, ge=1, description="Closed windows per model version kept for the JSON route."
    )
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)


PUBLIC_ENDPOINTS = ("status", "metrics", "docs")


class AuthConfig(Section):
    """Bearer-token authentication for REST and gRPC: off until a token source is set."""

    token_file: str | None = Field(
        None,
        description="File whose first line is the token (a mounted secret); clients send "
        "`Authorization: Bearer <token>` (gRPC: `authorization` metadata).",
    )
    token_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable holding the token, when not token_file.",
    )
    public: list[Literal["status", "metrics", "docs"]] = Field(
        ["status", "metrics"],
        description="Endpoints answered without the token: status (GET /v1/models/<m>[...] and "
        "gRPC GetModelStatus, for readiness probes), metrics (/monitoring/prometheus/metrics, "
        "for Prometheus), docs (/docs, /redoc, /openapi.json).",
    )

    @model_validator(mode="after")
    def one_token_source(self) -> "AuthConfig":
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("set one of token_file or token_env, not both")
        return self

    @property
    def enabled(self) -> bool:
        return self.token_file is not None or self.token_env is not None


class TlsConfig(Section):
    """TLS for REST (HTTPS) and gRPC with PEM files: off until both files are set."""

    cert_file: str | None = Field(
        None, description="PEM certificate (chain) the servers present; needs key_file."
    )
    key_file: str | None = Field(None, description="PEM private key of cert_file.")

    @model_validator(mode="after")
    def both_files(self) -> "TlsConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class ServingConfig(Section):
    model_name: str = Field(
        "model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Served name."
    )
    host: str = Field("127.0.0.1", description="Address the REST and gRPC servers bind.")
    port: int = Field(8501, ge=0, le=65535, description="REST port (0 = any free port).")
    grpc_port: int | None = Field(
        8500, ge=0, le=65535, description="gRPC port (0 = any free port, null = no gRPC)."
    )
    poll_seconds: float = Field(
        2.0,
        ge=0,
        description="How often model folders and models.config are rescanned (0 = never).",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body; larger ones get 413."
    )
    max_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Most pixels (width x height, from the header) of one image in a request; "
        "larger ones get 400 / INVALID_ARGUMENT before any pixel is decoded (decompression "
        "bombs). data.max_pixels' default: what ingest accepts, serving does.",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Longest a predict request may take; then 504 / DEADLINE_EXCEEDED."
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="Predict requests in progress at once; more get 429 / RESOURCE_EXHAUSTED.",
    )
    top_k: int = Field(5, ge=1, description="Classes returned per image by :classify-images.")
    runtime: Literal["auto", "savedmodel", "onnx"] = Field(
        "auto",
        description=(
            "What runs the model of serving_default and predict_images: the SavedModel, or "
            "onnxruntime on the export's parity-checked assets.extra/model.onnx; auto picks the "
            "faster one per version at load."
        ),
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
