"""TF Serving's REST API plus an upload endpoint for people: FastAPI routes over the wire codec.

Routes (as TF Serving has them, with `[/versions/<n>|/labels/<l>]` after the model name):
    POST /v1/models/<m>:predict            row (`instances`) or columnar (`inputs`) JSON
    GET  /v1/models/<m>                    version status
    GET  /v1/models/<m>/metadata           signature defs
    POST /v1/models/<m>:classify-images    multipart image uploads -> top-k labels per file
    GET  /monitoring/prometheus/metrics    Prometheus text format
    GET  /monitoring/models/<m>            prediction and input statistics as JSON
                                           (?version=<n>&since=<30m|1h|ISO time>)
    GET  /docs, /redoc, /openapi.json      OpenAPI documentation (Swagger UI and ReDoc from
                                           assets in fastapi_offline, no CDN)

The handlers are module-level functions of `router`; each takes the server it answers for
(`ServerParts`, kept in `app.state` by `build_app`) as a FastAPI dependency. Bodies are read
here, parsed and answered by `wire`, and run by the predict service.
"""

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from artifacts import models
from core import signatures
from monitoring import recorder, timespan
from serving.server import auth, manager, metrics, service, wire

MAX_BODY_BYTES = 64 * 1024 * 1024
MONITORING_PATH = "/monitoring/models"
# Predict bodies up to this size are parsed on the event loop (about 0.2 ms); larger in a thread.
INLINE_BODY_BYTES = 256 * 1024
VERBS = ("predict", "classify-images")

PREDICT_BODY_SCHEMA = {
    "type": "object",
    "description": (
        "TF Serving's predict request: exactly one of `instances` (row format) or `inputs` "
        '(columnar format). Encoded images go as {"b64": "<base64>"}.'
    ),
    "properties": {
        "signature_name": {"type": "string", "default": signatures.SERVING_DEFAULT},
        "instances": {"type": "array", "items": {}},
        "inputs": {},
    },
    "example": {"instances": [{"b64": "iVBORw0KGgo..."}]},
}
UPLOAD_BODY_SCHEMA = {
    "type": "object",
    "description": "One or more images as file fields of any name (`files`, `file`, ...).",
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more images (JPEG, PNG, GIF, BMP, WebP, TIFF).",
        }
    },
    "additionalProperties": {"type": "string", "format": "binary"},
}


class RequestError(Exception):
    """A refusal other than a malformed request (those are wire.BadRequest, 400), answered as
    TF Serving does: `{"error": message}` with `status_code`."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclasses.dataclass(frozen=True)
class ServerParts:
    """What the routes answer from: the loaded models, the predict path and the limits."""

    manager: manager.ModelManager
    service: service.PredictService
    max_body_bytes: int
    top_k: int
    monitor: recorder.Recorder | None


async def server_parts(request: Request) -> ServerParts:
    # async: FastAPI runs a plain function dependency in a thread, a hop on every request.
    return request.app.state.parts


Parts = Annotated[ServerParts, Depends(server_parts)]
router = APIRouter()


@contextlib.contextmanager
def answered_as_http_errors() -> Iterator[None]:
    """The predict service's refusals as TF Serving's status codes."""
    try:
        yield
    except models.InvalidInputError as error:
        raise wire.BadRequest(str(error)) from None
    except service.Overloaded as error:
        raise RequestError(429, str(error)) from None
    except service.DeadlineExceeded as error:
        raise RequestError(504, str(error)) from None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `max_bytes`."""
    too_large = RequestError(
        413, f"request body exceeds {max_bytes} bytes; send fewer or smaller images per request"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, received = [], 0
    # Counted while streaming too: chunked requests declare no length.
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_uploads(request: Request, body: bytes) -> tuple[list[str], list[bytes]]:
    """(names, contents) of the files of a multipart body already read within the limit."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as error:  # noqa: BLE001 - any malformed multipart body
        raise wire.BadRequest(
            f"could not read the multipart form ({error}); send images as multipart file fields"
        ) from None
    # Every file field, whatever its name (curl -F file=@x.jpg, -F files=@..., a browser form),
    # in the order sent; plain text fields are not images.
    uploads = [item for _, item in form.multi_items() if isinstance(item, UploadFile)]
    names = wire.upload_names([upload.filename for upload in uploads])
    return names, [await upload.read() for upload in uploads]


class RequestMetrics:
    """Pure ASGI middleware: counts and times every /v1/models request by the model, version
    and method the handler stored in the request state, and the status code answered."""

    def __init__(self, app, server_metrics: metrics.ServerMetrics):
        self.app = app
        self.metrics = server_metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/models/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            state = scope.get("state", {})
            self.metrics.observe(
                "rest",
                state.get("model", "unknown"),
                state.get("version", ""),
                state.get("method", scope["method"].lower()),
                status["code"],
                time.perf_counter() - started,
            )


def resolve(
    parts: ServerParts, request: Request, address: wire.ModelAddress, method: str
) -> models.ServedModel:
    """The loaded version `address` names (404 if none), noted for the request metrics."""
    request.state.model, request.state.method = address.name, method
    try:
        model = parts.manager.resolve(address.name, address.version, address.label)
    except manager.NotFound as error:
        raise RequestError(404, str(error)) from None
    request.state.version = model.version
    return model


def image_inputs(images: list[bytes]) -> dict[str, np.ndarray]:
    return {signatures.IMAGE_BYTES: models.ServedModel.image_array(images)}


async def predict(parts: ServerParts, model: models.ServedModel, body: bytes) -> dict:
    signature_inputs = {name: signature.inputs for name, signature in model.signatures.items()}
    # A small body (a few encoded images) is parsed and answered on the event loop: a thread
    # hop costs more than the work. Large ones go to a thread, off the loop.
    inline = len(body) <= INLINE_BODY_BYTES
    if inline:
        request = wire.parse_predict(body, signature_inputs)
    else:
        request = await run_in_threadpool(wire.parse_predict, body, signature_inputs)
    with answered_as_http_errors():
        outputs = await parts.service.predict_async(model, request.signature_name, request.inputs)
    if inline:
        return wire.predict_response(outputs, request.row_format)
    return await run_in_threadpool(wire.predict_response, outputs, request.row_format)


async def classify_images(
    parts: ServerParts, model: models.ServedModel, request: Request, body: bytes
) -> dict:
    top_k = wire.parse_top_k(request.query_params.get("top_k"), parts.top_k)
    names, images = await read_uploads(request, body)
    # One deadline for the whole request: finding the undecodable files after a failed call
    # spends what that call left of it.
    deadline = parts.service.deadline()
    with answered_as_http_errors():
        try:
            outputs = await parts.service.predict_async(
                model, signatures.SERVING_DEFAULT, image_inputs(images), deadline
            )
        except models.InvalidInputError:
            if len(images) == 1:
                raise
            bad = await undecodable(parts.service, model, names, images, deadline)
            raise wire.BadRequest(
                f"not decodable as images ({models.DECODED_FORMATS}): {bad}"
            ) from None
    return wire.classify_response(model.name, model.version, names, outputs, top_k)


async def undecodable(
    predict_service: service.PredictService,
    model: models.ServedModel,
    names: list[str],
    images: list[bytes],
    deadline: float,
) -> list[str]:
    """The names of the images the model cannot decode, each tried on its own as a request
    is: through an admission slot, within `deadline`. Decoding is all that fails on image
    bytes, so the preprocessing signature finds them without running (or monitoring) the model.
    """
    bad = []
    for name, image in zip(names, images, strict=True):
        try:
            await predict_service.predict_async(
                model, signatures.PREPROCESS, image_inputs([image]), deadline
            )
        except models.InvalidInputError:
            bad.append(name)
    return bad


@router.post(
    "/v1/models/{model_path:path}",
    summary="Predict (TF Serving) or classify uploaded images",
    description=(
        "`<model>[/versions/<n>|/labels/<label>]:predict` takes TF Serving's JSON predict "
        "request. `<model>[...]:classify-images` takes multipart uploads (file fields of "
        "any name) and an optional `top_k` query parameter, and answers the `top_k` labels "
        "with their scores per file."
    ),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": PREDICT_BODY_SCHEMA},
                "multipart/form-data": {"schema": UPLOAD_BODY_SCHEMA},
            }
        }
    },
)
async def post_model(model_path: str, request: Request, parts: Parts) -> JSONResponse:
    parsed = wire.parse_post_path(model_path)
    if parsed is None or parsed[1] not in VERBS:
        raise RequestError(404, f"Malformed request: POST /v1/models/{model_path}")
    address, verb = parsed
    model = resolve(parts, request, address, verb)
    body = await read_body(request, parts.max_body_bytes)
    if verb == "classify-images":
        return JSONResponse(await classify_images(parts, model, request, body))
    return JSONResponse(await predict(parts, model, body))


@router.get(
    "/v1/models/{model_path:path}",
    summary="Model status or metadata (TF Serving)",
    description="`<model>[/versions/<n>|/labels/<label>]` answers the version status; "
    "with `/metadata` appended, the signature defs.",
)
def get_model(model_path: str, request: Request, parts: Parts) -> dict:
    parsed = wire.parse_get_path(model_path)
    if parsed is None:
        raise RequestError(404, f"Malformed request: GET /v1/models/{model_path}")
    address, metadata = parsed
    request.state.model = address.name
    request.state.method = "metadata" if metadata else "status"
    if not metadata:
        try:
            statuses = parts.manager.status(address.name, address.version, address.label)
        except manager.NotFound as error:
            raise RequestError(404, str(error)) from None
        return {"model_version_status": statuses}
    model = resolve(parts, request, address, "metadata")
    return wire.metadata_response(model.name, model.version, model.signature_defs)


@router.get(metrics.METRICS_PATH, summary="Prometheus metrics")
def prometheus_metrics(parts: Parts) -> Response:
    body, content_type = parts.manager.metrics.exposition()
    return Response(body, media_type=content_type)


@router.get(
    f"{MONITORING_PATH}/{{name}}",
    summary="Prediction and input statistics of a model",
    description="Counts merged over the windows that end after `since` (a duration such "
    "as `30m`, `1h`, `2d`, or an ISO time; default `1h`), of one `version` or all: top-1 "
    "class counts, a confidence histogram, the low-confidence rate and histograms of input "
    "height, width, brightness, contrast and channel means on the fixed `bins`.",
)
def monitoring_stats(
    name: str, parts: Parts, since: str = "1h", version: str | None = None
) -> dict:
    if parts.monitor is None:
        raise RequestError(
            404, "monitoring is off on this server; set serving.monitoring.enabled=true"
        )
    version_number = wire.parse_version(version)
    try:
        start = timespan.parse_since(since)
    except timespan.SinceError as error:
        raise wire.BadRequest(str(error)) from None
    summary = parts.monitor.summary(name, version_number, start)
    if summary is None:
        if name not in parts.manager.served():
            raise RequestError(404, f"Servable not found for request: Latest({name})")
        summary = {"model": name, "versions": [], "since": start, "stats": None}
    return summary


async def answer_request_error(_: Request, error: RequestError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.status_code)


async def answer_bad_request(_: Request, error: wire.BadRequest) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=400)


async def answer_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)


def build_app(
    models_manager: manager.ModelManager,
    predict_service: service.PredictService,
    max_body_bytes: int = MAX_BODY_BYTES,
    top_k: int = 5,
    monitor: recorder.Recorder | None = None,
    auth_token: bytes | None = None,
    public: list[str] = (),
) -> FastAPI:
    """The REST app over the manager's models, under /v1/models/ as TF Serving has them; with
    `auth_token`, every endpoint but the `public` ones needs it as a bearer token."""
    app = FastAPIOffline(
        title="imgclf model server",
        description=(
            "TF Serving's REST API (predict, status, metadata) over the loaded models, plus "
            "`:classify-images` for multipart uploads. Models may be addressed as "
            "`<model>`, `<model>/versions/<n>` or `<model>/labels/<label>`."
        ),
    )
    app.state.parts = ServerParts(models_manager, predict_service, max_body_bytes, top_k, monitor)
    if auth_token is not None:
        # Added first, so RequestMetrics (outside it) counts the requests it refuses too.
        app.add_middleware(auth.BearerAuth, token=auth_token, public=list(public))
        document_bearer_auth(app)
    app.add_middleware(RequestMetrics, server_metrics=models_manager.metrics)
    app.add_exception_handler(RequestError, answer_request_error)
    app.add_exception_handler(wire.BadRequest, answer_bad_request)
    app.add_exception_handler(StarletteHTTPException, answer_http_error)
    app.include_router(router)
    return app


def document_bearer_auth(app: FastAPI) -> None:
    """Declares the bearer token in the OpenAPI document, so Swagger UI's Authorize button
    sends it with "Try it out"."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = generate()
            spec.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            spec["security"] = [{"bearer": []}]
        return app.openapi_schema

    app.openapi = openapi
