"""`imgclf serve`: the model manager, the REST server and the gRPC server, started together."""

import logging
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import grpc
import uvicorn

from configs import schema
from core import errors, locations, run_layout, saved_models
from monitoring import recorder
from serving.server import auth, grpc_api, logs, manager, metrics, rest, service

logger = logging.getLogger(__name__)


class ServerStartError(errors.UserError):
    """A port could not be bound or the server did not come up."""


class ModelServer:
    """REST and gRPC over one ModelManager. `start()` returns once both listen."""

    def __init__(self, models_manager: manager.ModelManager, config: schema.ServingConfig):
        self.manager = models_manager
        self.config = config
        self.monitor = (
            recorder.Recorder(config.monitoring, observer=models_manager.metrics)
            if config.monitoring.enabled
            else None
        )
        self.service = service.PredictService(
            models_manager,
            config.max_concurrent_requests,
            config.request_timeout_s,
            self.monitor,
            config.max_pixels,
        )
        # Read now: a missing token or certificate stops `imgclf serve` before it loads a model.
        self.token = auth.load_token(config.auth)
        self.tls_files = read_tls_files(config.tls)
        self.app = rest.build_app(
            models_manager,
            self.service,
            config.max_body_bytes,
            config.top_k,
            self.monitor,
            auth_token=self.token,
            public=config.auth.public,
        )
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._rest_thread: threading.Thread | None = None
        self._grpc = None

    @property
    def rest_url(self) -> str:
        scheme = "https" if self.tls_files else "http"
        return f"{scheme}://{self.config.host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    def start(self, log_level: str = "warning") -> "ModelServer":
        self.manager.start()
        if self.monitor is not None:
            self.monitor.start()
        logs.configure()
        listening = bind(self.config.host, self.config.port)
        self.rest_port = listening.getsockname()[1]
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_config=None,  # logs.configure: uvicorn's own would close every other handler
                log_level=log_level,
                # Connections beyond this get 503 from uvicorn before reaching a handler.
                limit_concurrency=max(self.config.max_concurrent_requests * 4, 64),
                timeout_keep_alive=30,
                ssl_certfile=self.config.tls.cert_file,
                ssl_keyfile=self.config.tls.key_file,
            )
        )
        self._rest_thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [listening]}, daemon=True, name="rest"
        )
        self._rest_thread.start()
        if self.config.grpc_port is not None:
            self._grpc, self.grpc_port = grpc_api.build_server(
                self.manager,
                self.service,
                self.config.host,
                self.config.grpc_port,
                self.config.max_body_bytes,
                workers=self.config.max_concurrent_requests,
                interceptors=(
                    (auth.GrpcBearerAuth(self.token, self.config.auth.public),)
                    if self.token is not None
                    else ()
                ),
                credentials=(
                    grpc.ssl_server_credentials([self.tls_files]) if self.tls_files else None
                ),
            )
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._rest_thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError("the REST server did not start; see the log above")
            time.sleep(0.01)
        return self

    def announce(self) -> None:
        for name, served in self.manager.served().items():
            versions = ", ".join(str(number) for number in sorted(served.versions)) or "none"
            labels = ", ".join(f"{label}={n}" for label, n in sorted(served.spec.labels.items()))
            engines = ", ".join(
                f"{number}: {version.runtime}"
                for number, version in sorted(served.versions.items())
            )
            print(
                f"serving {name} version {versions}{f' (labels {labels})' if labels else ''} at "
                f"{self.rest_url}/v1/models/{name}" + (f" (runtime {engines})" if engines else ""),
                flush=True,
            )
        grpc_note = f", gRPC on {self.grpc_target}" if self.grpc_port else ""
        print(
            f"serve: {len(self.manager.served())} model(s) on {self.rest_url}{grpc_note}; "
            f"docs at {self.rest_url}/docs, metrics at {self.rest_url}{metrics.METRICS_PATH}",
            flush=True,
        )

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._rest_thread is not None:
            self._rest_thread.join(timeout=10)
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait(5)
        self.manager.stop()
        self.service.close()
        if self.monitor is not None:
            self.monitor.stop()

    def wait(self) -> None:
        """Blocks until interrupted (Ctrl-C or SIGTERM), then stops cleanly."""
        stop = threading.Event()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signal_number, lambda *_: stop.set())
        while not stop.wait(0.5):
            if not self._rest_thread.is_alive():
                break
        self.stop()


def read_tls_files(config: schema.TlsConfig) -> tuple[bytes, bytes] | None:
    """(private key, certificate chain) as PEM bytes, gRPC's order; None without TLS."""
    if not config.enabled:
        return None
    found = []
    for key in ("key_file", "cert_file"):
        path = Path(getattr(config, key))  # as uvicorn and the check below will open it
        try:
            found.append(path.read_bytes())
        except OSError as error:
            raise ServerStartError(
                f"cannot read serving.tls.{key} {path} ({error.strerror}); point it at a PEM file"
            ) from None
    try:  # what uvicorn will do, here: a bad pair is one clear line, not a server that dies
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            config.cert_file, config.key_file
        )
    except ssl.SSLError as error:
        raise ServerStartError(
            f"serving.tls.cert_file and key_file are not a PEM certificate and its key "
            f"({error.reason or error}); check both files"
        ) from None
    return found[0], found[1]


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket, bound here so the chosen port is known and cannot be taken."""
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket names its protocol; without it Nagle's algorithm and delayed
    # ACKs add ~40 ms to every request on a kept-alive connection.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise ServerStartError(
            f"cannot listen on {host}:{port} ({error.strerror}); pick another --port"
        ) from None
    return listening


def build_manager(
    config: schema.ServingConfig,
    model_path: str | Path | None,
    model_config_file: str | Path | None,
    model_name: str,
) -> manager.ModelManager:
    if (model_path is None) == (model_config_file is None):
        raise errors.UserError(
            "give exactly one of --model-path (one model's version folders) or "
            "--model-config-file (a TF Serving models.config, e.g. <store>/models.config)"
        )
    options = {
        "batching_config": config.batching,
        "poll_seconds": config.poll_seconds,
        "runtime": config.runtime,
    }
    if model_path is not None:
        return manager.ModelManager.for_model_path(
            model_name, versions_folder(model_path), **options
        )
    return manager.ModelManager.for_model_config(model_config_file, **options)


def versions_folder(model_path: str | Path) -> str | Path:
    """The folder of numbered versions --model-path names: itself, or a run folder's export/ (as
    `imgclf evaluate` and `imgclf predict` take a run folder), watched for new versions."""
    if locations.is_url(str(model_path)):
        return model_path  # refused by the manager with the one line every local-only path gets
    path = Path(model_path).expanduser()
    export = path / run_layout.EXPORT
    if not saved_models.saved_model_versions(path) and saved_models.saved_model_versions(export):
        return export
    return path


def serve(
    config: schema.ServingConfig,
    model_path: str | Path | None = None,
    model_config_file: str | Path | None = None,
    log_level: str = "info",
) -> None:
    """Serves until interrupted, printing where each model is served; `log_level` is uvicorn's
    (info logs every request)."""
    models_manager = build_manager(config, model_path, model_config_file, config.model_name)
    server = ModelServer(models_manager, config).start(log_level=log_level)
    server.announce()
    server.wait()
