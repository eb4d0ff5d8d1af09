"""Clients for TF Serving's API (ours or TensorFlow's): REST and gRPC predict on encoded images."""

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from core import errors, signatures

READY_POLL_SECONDS = 0.2
# gRPC's default 4 MiB receive limit is too small for a batch of large photos.
GRPC_MAX_MESSAGE_BYTES = 1 << 30


class ClientError(errors.UserError):
    """The server refused a request or did not become ready."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        # The server's answer without the request that got it: what a per-image error row says.
        self.reason = reason or message


class RejectedInput(ClientError):
    """The server could not use the images of a request (HTTP 400 or 413, INVALID_ARGUMENT):
    one of them is probably not an image, so each image on its own may still succeed."""


class Unavailable(ClientError):
    """The server could not be reached, was overloaded or timed out; a later try may succeed."""


# HTTP statuses that say something about the request's images, or about the server's load.
REJECTED_STATUSES = (400, 413)
UNAVAILABLE_STATUSES = (429, 502, 503, 504)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}


@dataclass(frozen=True)
class Answer:
    """One predict call's outputs, in the order the images were sent."""

    scores: np.ndarray  # float32 [N, C]
    classes: list[list[str]]  # [N][C], aligned with scores
    version: int | None = None  # the version that answered, where the API says so


def raise_for_error(response: httpx.Response) -> None:
    """A ClientError naming the request, the HTTP status and the server's `error` text."""
    if response.status_code == 200:
        return
    try:
        payload = response.json()
    except ValueError:
        payload = None
    detail = payload["error"] if isinstance(payload, dict) and "error" in payload else response.text
    if response.status_code in REJECTED_STATUSES:
        error_class = RejectedInput
    elif response.status_code in UNAVAILABLE_STATUSES:
        error_class = Unavailable
    else:
        error_class = ClientError
    reason = f"HTTP {response.status_code}: {str(detail)[:500]}"
    raise error_class(
        f"{response.request.method} {response.request.url} failed with {reason}", reason
    )


def model_path(model_name: str, version: int | None = None, label: str | None = None) -> str:
    """`<name>[/versions/<n>|/labels/<l>]`, as TF Serving's REST routes name a model."""
    if version is not None and label is not None:
        raise ClientError(f"give a version or a label, not both (received {version}, {label!r})")
    if version is not None:
        return f"{model_name}/versions/{version}"
    if label is not None:
        return f"{model_name}/labels/{label}"
    return model_name


def rank(classes: list[str], scores, top_k: int) -> list[tuple[str, float]]:
    """The `top_k` (class, score) pairs, most probable first."""
    pairs = [(name, float(score)) for name, score in zip(classes, scores, strict=True)]
    return sorted(pairs, key=lambda pair: pair[1], reverse=True)[:top_k]


class RestClient:
    """TF Serving's REST predict (row format, `{"b64": ...}` instances) over one connection."""

    def __init__(
        self,
        url: str,
        model_name: str,
        version: int | None = None,
        label: str | None = None,
        timeout: float = 60,
        token: bytes | None = None,
    ):
        self.url = url.rstrip("/")
        self.where = self.url
        self.model_name = model_name
        self.version = version
        self.model_url = f"{self.url}/v1/models/{model_path(model_name, version, label)}"
        headers = {} if token is None else {"Authorization": f"Bearer {token.decode()}"}
        self.session = httpx.Client(timeout=timeout, headers=headers)

    def _send(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            response = self.session.request(method, url, **kwargs)
        except httpx.TransportError as error:
            raise Unavailable(
                f"could not reach {url} ({error!r}); is the server running at {self.url}?"
            ) from None
        raise_for_error(response)
        return response

    def fetch_version(self) -> int:
        """The version that answers this model's requests, from its metadata."""
        metadata = self._send("GET", f"{self.model_url}/metadata").json()
        self.version = int(metadata["model_spec"]["version"])
        return self.version

    def predict(self, images: list[bytes]) -> Answer:
        instances = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
        body = {"signature_name": signatures.SERVING_DEFAULT, "instances": instances}
        response = self._send("POST", f"{self.model_url}:predict", json=body)
        predictions = response.json().get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(images):
            raise ClientError(
                f"expected {len(images)} predictions from {self.url}, "
                f"received {str(predictions)[:200]}"
            )
        return Answer(
            scores=np.array([p[signatures.SCORES] for p in predictions], np.float32),
            classes=[list(p[signatures.CLASSES]) for p in predictions],
        )

    def close(self) -> None:
        self.session.close()


class GrpcClient:
    """TF Serving's gRPC PredictionService through the official tensorflow_serving stubs."""

    def __init__(
        self,
        target: str,
        model_name: str,
        version: int | None = None,
        label: str | None = None,
        timeout: float = 60,
        token: bytes | None = None,
        tls: bool = False,
    ):
        # Imported here: they load TensorFlow, which REST users never need.
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        model_path(model_name, version, label)  # refuses a version and a label together
        self.target = target
        self.where = f"{'grpcs' if tls else 'grpc'}://{target}"
        self.model_name = model_name
        self.version = version
        self.label = label
        self.timeout = timeout
        self.metadata = () if token is None else (("authorization", f"Bearer {token.decode()}"),)
        options = [
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
        ]
        if tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=trusted_certificates())
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def _fill_spec(self, model_spec) -> None:
        model_spec.name = self.model_name
        model_spec.signature_name = signatures.SERVING_DEFAULT
        if self.label is not None:
            model_spec.version_label = self.label
        elif self.version is not None:
            model_spec.version.value = self.version

    def _call(self, method_name: str, request):
        import grpc

        try:
            return getattr(self.stub, method_name)(
                request, timeout=self.timeout, metadata=self.metadata
            )
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
            name = f"{method_name} at {self.where}"
            if code == grpc.StatusCode.UNAVAILABLE:
                raise Unavailable(
                    f"could not reach {name} ({details}); is the server running at {self.where}?"
                ) from None
            # The server's (or this client's) message size limit: each image alone may fit.
            too_large = code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than" in details
            if code == grpc.StatusCode.INVALID_ARGUMENT or too_large:
                error_class = RejectedInput
            elif code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED):
                error_class = Unavailable
            else:
                error_class = ClientError
            reason = f"{code.name}: {details[:500]}"
            raise error_class(f"{name} failed with {reason}", reason) from None

    def fetch_version(self) -> int:
        """The version that answers this model's requests, from GetModelMetadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._fill_spec(request.model_spec)
        request.model_spec.signature_name = ""
        request.metadata_field.append("signature_def")
        response = self._call("GetModelMetadata", request)
        self.version = response.model_spec.version.value
        return self.version

    def predict(self, images: list[bytes]) -> Answer:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec)
        request.inputs[signatures.IMAGE_BYTES].CopyFrom(
            tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)])
        )
        response = self._call("Predict", request)
        scores = tf.make_ndarray(response.outputs[signatures.SCORES]).astype(np.float32)
        classes = tf.make_ndarray(response.outputs[signatures.CLASSES])
        if scores.shape[0] != len(images):
            raise ClientError(
                f"expected {len(images)} predictions from {self.where}, received {scores.shape}"
            )
        return Answer(
            scores=scores,
            classes=[[name.decode() for name in row] for row in classes],
            version=response.model_spec.version.value or None,
        )

    def close(self) -> None:
        self.channel.close()


def trusted_certificates() -> bytes | None:
    """The CA bundle SSL_CERT_FILE names (as https:// clients read it), else None: gRPC's own
    roots. A private CA or a self-signed server certificate is trusted this way."""
    path = os.environ.get("SSL_CERT_FILE")
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ClientError(f"cannot read SSL_CERT_FILE {path} ({error.strerror})") from None


def connect(
    server: str,
    model_name: str,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 60,
    token: bytes | None = None,
) -> RestClient | GrpcClient:
    """A REST client for `http(s)://host:port`, a gRPC client for `grpc://host:port` (or
    `grpcs://` over TLS); each sends `token` as a bearer token when given (a server with
    serving.auth)."""
    scheme, separator, rest = server.partition("://")
    if separator and scheme in ("http", "https"):
        return RestClient(server, model_name, version, label, timeout, token)
    if separator and scheme in ("grpc", "grpcs") and rest.strip("/"):
        target = rest.strip("/")
        return GrpcClient(target, model_name, version, label, timeout, token, scheme == "grpcs")
    raise ClientError(
        f"server must be http(s)://host:8501 (REST) or grpc(s)://host:8500 (gRPC) "
        f"(received {server!r})"
    )


def predict_files(
    url: str,
    model_name: str,
    paths: list[str | Path],
    top_k: int = 3,
    timeout: float = 30,
) -> list[dict]:
    """Classifies image files in one request; per file `{"path", "top": [(class, prob), ...]}`.

    `top` holds the `top_k` most probable classes, most probable first.
    """
    if not paths:
        raise ValueError("paths is empty; give at least one image file")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1 (received {top_k})")
    rest = RestClient(url, model_name, timeout=timeout)
    try:
        answer = rest.predict([Path(path).read_bytes() for path in paths])
    finally:
        rest.close()
    return [
        {"path": str(path), "top": rank(classes, scores, top_k)}
        for path, classes, scores in zip(paths, answer.classes, answer.scores, strict=True)
    ]


def wait_until_ready(url: str, model_name: str, timeout_s: float = 60) -> dict:
    """Polls `GET /v1/models/<name>` until a version is AVAILABLE; returns the status document."""
    status_url = f"{url.rstrip('/')}/v1/models/{model_name}"
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer yet"
    while True:
        try:
            remaining_s = max(deadline - time.monotonic(), READY_POLL_SECONDS)
            response = httpx.get(status_url, timeout=remaining_s)
            raise_for_error(response)
            status = response.json()
            if any(
                version.get("state") == "AVAILABLE"
                for version in status.get("model_version_status", [])
            ):
                return status
            last_problem = f"status {status}"
        # Servers refuse connections, and TF Serving answers 404, while a model still loads.
        except (httpx.TransportError, ClientError) as error:
            last_problem = str(error)
        if time.monotonic() >= deadline:
            raise ClientError(
                f"model {model_name!r} at {url} was not AVAILABLE within {timeout_s}s "
                f"(last: {last_problem}); check the server's log and --model-path"
            )
        time.sleep(READY_POLL_SECONDS)
