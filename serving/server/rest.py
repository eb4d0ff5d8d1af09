"""TF Serving's REST API plus an upload endpoint for people, on FastAPI.

Routes (as TF Serving has them, with `[/versions/<n>|/labels/<l>]` after the model name):
    POST /v1/models/<m>:predict            row (`instances`) or columnar (`inputs`) JSON
    GET  /v1/models/<m>                    version status
    GET  /v1/models/<m>/metadata           signature defs
    POST /v1/models/<m>:classify-images    multipart image uploads -> top-k labels per file
    GET  /monitoring/prometheus/metrics    Prometheus text format
    GET  /monitoring/models/<m>            prediction and input statistics as JSON
                                           (?version=<n>&since=<30m|1h|ISO time>)
    GET  /docs, /openapi.json              OpenAPI documentation
"""

import base64
import binascii
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from artifacts import models
from core import signatures
from monitoring import recorder, timespan
from serving.server import manager, metrics, service

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
MONITORING_PATH = "/monitoring/models"
# Predict bodies up to this size are parsed on the event loop (about 0.2 ms); larger in a thread.
INLINE_BODY_BYTES = 256 * 1024

# `<m>[/versions/<n>|/labels/<l>]` then `:verb` (POST) or nothing / `/metadata` (GET). Names are
# only looked up in the loaded models, never joined to a path.
MODEL_PATH = r"(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[^/:]+))?"
POST_PATH = re.compile(rf"^{MODEL_PATH}:(?P<verb>[\w-]+)$")
GET_PATH = re.compile(rf"^{MODEL_PATH}(?P<metadata>/metadata)?$")

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
    "required": ["files"],
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more images (JPEG, PNG, GIF, BMP).",
        }
    },
}


class RequestError(Exception):
    """A client mistake, answered as TF Serving does: `{"error": message}` with `status_code`."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def decode_b64(value: object, where: str) -> bytes:
    """`{"b64": "..."}` -> bytes; anything else is a 400 naming the offending item."""
    if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
        raise RequestError(
            400,
            f'{where} must be an encoded image as {{"b64": "<base64 string>"}} '
            f"(received {shorten(value)})",
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except binascii.Error as error:
        raise RequestError(400, f"{where}.b64 is not valid base64 ({error})") from None


def to_array(values: list, spec, where: str) -> np.ndarray:
    """A batch of JSON values as the array the signature input `spec` takes."""
    if spec.dtype.name == "string":
        array = np.empty(len(values), dtype=object)
        array[:] = [decode_b64(value, f"{where}[{index}]") for index, value in enumerate(values)]
        return array
    try:
        return np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        raise RequestError(
            400,
            f"{where} must be numbers nested as equal-length lists, one per example "
            f"(received {shorten(values)})",
        ) from None


def parse_rows(instances: object, input_specs: dict) -> dict[str, np.ndarray]:
    """Row format: one entry per example, either the value or {input name: value}."""
    if not isinstance(instances, list) or not instances:
        raise RequestError(
            400, f"'instances' must be a non-empty list of examples (received {shorten(instances)})"
        )
    names = sorted(input_specs)
    columns: dict[str, list] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) == set(names):
            for name in names:
                columns[name].append(instance[name])
        elif len(names) == 1:
            columns[names[0]].append(instance)
        else:
            raise RequestError(400, f"instances[{index}] must be an object with the keys {names}")
    return {name: to_array(columns[name], input_specs[name], "instances") for name in names}


def parse_columns(inputs: object, input_specs: dict) -> dict[str, np.ndarray]:
    """Columnar format: {input name: batch} or, for a one-input signature, the batch itself."""
    names = sorted(input_specs)
    if isinstance(inputs, dict) and not (len(names) == 1 and set(inputs) == {"b64"}):
        if set(inputs) != set(names):
            keys = f"one key {names[0]!r}" if len(names) == 1 else f"the keys {names}"
            raise RequestError(400, f"'inputs' must have {keys} (received keys {sorted(inputs)})")
    elif len(names) == 1:
        inputs = {names[0]: inputs}
    else:
        raise RequestError(400, f"'inputs' must be an object with the keys {names}")
    arrays = {}
    for name in names:
        batch = inputs[name]
        if not isinstance(batch, list) or not batch:
            raise RequestError(
                400, f"'inputs' must hold a non-empty list per input (received {shorten(batch)})"
            )
        arrays[name] = to_array(batch, input_specs[name], "inputs")
    return arrays


def parse_predict(model: models.ServedModel, body: bytes) -> tuple[str, dict, bool]:
    """(signature name, input arrays, row format?) of a predict body, or a 400."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise RequestError(400, f"request body is not valid JSON ({error})") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise RequestError(
            400,
            "request body must be a JSON object with exactly one of 'instances' (row format) "
            f"or 'inputs' (columnar format) (received {shorten(request)})",
        )
    signature_name = request.get("signature_name", signatures.SERVING_DEFAULT)
    signature = model.signatures.get(signature_name) if isinstance(signature_name, str) else None
    if signature is None:
        raise RequestError(
            400,
            f"signature_name must be one of {sorted(model.signatures)} or left out "
            f"(received {shorten(signature_name)})",
        )
    row_format = "instances" in request
    if row_format:
        inputs = parse_rows(request["instances"], signature.inputs)
    else:
        inputs = parse_columns(request["inputs"], signature.inputs)
    return signature_name, inputs, row_format


def to_json(array: np.ndarray) -> list:
    if array.dtype == object:
        return np.vectorize(lambda v: v.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    columns = {key: to_json(value) for key, value in outputs.items()}
    if not row_format:
        return {"outputs": columns}
    count = len(next(iter(columns.values())))
    return {
        "predictions": [{key: column[i] for key, column in columns.items()} for i in range(count)]
    }


def top_labels(outputs: dict[str, np.ndarray], top_k: int) -> list[list[dict]]:
    scores, classes = outputs[signatures.SCORES], outputs[signatures.CLASSES]
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return [
        [
            {"label": classes[row, column].decode("utf-8"), "score": float(scores[row, column])}
            for column in columns
        ]
        for row, columns in enumerate(ranked)
    ]


@contextlib.contextmanager
def answered_as_http_errors() -> Iterator[None]:
    """The predict service's refusals as TF Serving's status codes."""
    try:
        yield
    except models.InvalidInputError as error:
        raise RequestError(400, str(error)) from None
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


def build_app(
    models_manager: manager.ModelManager,
    predict_service: service.PredictService,
    max_body_bytes: int = MAX_BODY_BYTES,
    top_k: int = 5,
    monitor: recorder.Recorder | None = None,
) -> FastAPI:
    """The REST app over the manager's models, under /v1/models/ as TF Serving has them."""
    app = FastAPI(
        title="imgclf model server",
        description=(
            "TF Serving's REST API (predict, status, metadata) over the loaded models, plus "
            "`:classify-images` for multipart uploads. Models may be addressed as "
            "`<model>`, `<model>/versions/<n>` or `<model>/labels/<label>`."
        ),
    )
    app.add_middleware(RequestMetrics, server_metrics=models_manager.metrics)

    @app.exception_handler(RequestError)
    async def answer_request_error(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def answer_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    def resolve(request: Request, match: re.Match, method: str) -> models.ServedModel:
        request.state.model, request.state.method = match["name"], method
        version = None if match["version"] is None else int(match["version"])
        try:
            model = models_manager.resolve(match["name"], version, match["label"])
        except manager.NotFound as error:
            raise RequestError(404, str(error)) from None
        request.state.version = model.version
        return model

    async def predict(model: models.ServedModel, body: bytes) -> dict:
        # A small body (a few encoded images) is parsed and answered on the event loop: a
        # thread hop costs more than the work. Large ones go to a thread, off the loop.
        inline = len(body) <= INLINE_BODY_BYTES
        if inline:
            signature_name, inputs, row_format = parse_predict(model, body)
        else:
            signature_name, inputs, row_format = await run_in_threadpool(parse_predict, model, body)
        with answered_as_http_errors():
            outputs = await predict_service.predict_async(model, signature_name, inputs)
        if inline:
            return predict_response(outputs, row_format)
        return await run_in_threadpool(predict_response, outputs, row_format)

    async def classify_images(model: models.ServedModel, request: Request, body: bytes) -> dict:
        k = request.query_params.get("top_k", str(top_k))
        if not k.isdigit() or int(k) < 1:
            raise RequestError(400, f"top_k must be a whole number >= 1 (received {k!r})")

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form()
        except Exception as error:  # noqa: BLE001 - any malformed multipart body
            raise RequestError(
                400, f"could not read the multipart form ({error}); send files as 'files' fields"
            ) from None
        uploads = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
        if not uploads:
            raise RequestError(
                400,
                "no images uploaded: send one or more files in multipart fields named 'files', "
                "e.g. curl -F files=@cat.jpg",
            )
        names = [upload.filename or f"file {index}" for index, upload in enumerate(uploads)]
        images = [await upload.read() for upload in uploads]

        # Awaited on the event loop as :predict is: a thread blocking on the worker costs a hop.
        try:
            with answered_as_http_errors():
                outputs = await predict_service.predict_async(
                    model, signatures.SERVING_DEFAULT, image_inputs(images)
                )
        except RequestError as error:
            if error.status_code != 400 or len(images) == 1:
                raise
            bad = await run_in_threadpool(undecodable, model, names, images)
            raise RequestError(
                400, f"not decodable as images (JPEG, PNG, GIF, BMP): {bad}"
            ) from None
        results = top_labels(outputs, int(k))
        return {
            "model": model.name,
            "version": model.version,
            "results": [
                {"filename": name, "top": top} for name, top in zip(names, results, strict=True)
            ],
        }

    @app.post(
        "/v1/models/{model_path:path}",
        summary="Predict (TF Serving) or classify uploaded images",
        description=(
            "`<model>[/versions/<n>|/labels/<label>]:predict` takes TF Serving's JSON predict "
            "request. `<model>[...]:classify-images` takes multipart uploads (fields named "
            "`files`) and an optional `top_k` query parameter, and answers the `top_k` labels "
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
    async def post_model(model_path: str, request: Request) -> JSONResponse:
        match = POST_PATH.match(model_path)
        if match is None or match["verb"] not in ("predict", "classify-images"):
            raise RequestError(404, f"Malformed request: POST /v1/models/{model_path}")
        model = resolve(request, match, match["verb"])
        body = await read_body(request, max_body_bytes)
        if match["verb"] == "classify-images":
            return JSONResponse(await classify_images(model, request, body))
        return JSONResponse(await predict(model, body))

    @app.get(
        "/v1/models/{model_path:path}",
        summary="Model status or metadata (TF Serving)",
        description="`<model>[/versions/<n>|/labels/<label>]` answers the version status; "
        "with `/metadata` appended, the signature defs.",
    )
    def get_model(model_path: str, request: Request) -> dict:
        match = GET_PATH.match(model_path)
        if match is None:
            raise RequestError(404, f"Malformed request: GET /v1/models/{model_path}")
        request.state.model = match["name"]
        request.state.method = "metadata" if match["metadata"] else "status"
        if not match["metadata"]:
            version = None if match["version"] is None else int(match["version"])
            try:
                return {
                    "model_version_status": models_manager.status(
                        match["name"], version, match["label"]
                    )
                }
            except manager.NotFound as error:
                raise RequestError(404, str(error)) from None
        model = resolve(request, match, "metadata")
        signature_defs = {
            key: json_format.MessageToDict(value, preserving_proto_field_name=True)
            for key, value in model.signature_defs.items()
        }
        return {
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            # Nested twice on purpose: TF Serving's JSON of a SignatureDefMap proto.
            "metadata": {"signature_def": {"signature_def": signature_defs}},
        }

    @app.get(metrics.METRICS_PATH, summary="Prometheus metrics")
    def prometheus_metrics() -> Response:
        body, content_type = models_manager.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get(
        f"{MONITORING_PATH}/{{name}}",
        summary="Prediction and input statistics of a model",
        description="Counts merged over the windows that end after `since` (a duration such "
        "as `30m`, `1h`, `2d`, or an ISO time; default `1h`), of one `version` or all: top-1 "
        "class counts, a confidence histogram, the low-confidence rate and histograms of input "
        "height, width, brightness, contrast and channel means on the fixed `bins`.",
    )
    def monitoring_stats(name: str, since: str = "1h", version: str | None = None) -> dict:
        if monitor is None:
            raise RequestError(
                404, "monitoring is off on this server; set serving.monitoring.enabled=true"
            )
        if version is not None and not version.isdigit():
            raise RequestError(400, f"version must be a whole number (received {version!r})")
        try:
            start = timespan.parse_since(since)
        except timespan.SinceError as error:
            raise RequestError(400, str(error)) from None
        summary = monitor.summary(name, None if version is None else int(version), start)
        if summary is None:
            if name not in models_manager.served():
                raise RequestError(404, f"Servable not found for request: Latest({name})")
            summary = {"model": name, "versions": [], "since": start, "stats": None}
        return summary

    return app


def image_inputs(images: list[bytes]) -> dict[str, np.ndarray]:
    return {signatures.IMAGE_BYTES: models.ServedModel.image_array(images)}


def undecodable(model: models.ServedModel, names: list[str], images: list[bytes]) -> list[str]:
    """The names of the images the model cannot decode, each tried on its own."""
    bad = []
    for name, image in zip(names, images, strict=True):
        try:
            model.run(signatures.SERVING_DEFAULT, image_inputs([image]))
        except models.InvalidInputError:
            bad.append(name)
    return bad
