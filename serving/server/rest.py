"""TF Serving's REST API (predict, status, metadata) over loaded SavedModels, on FastAPI."""

import base64
import binascii
import json
import logging
import re
import socket

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import signatures
from serving.server import models as served_models

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024

# One catch-all route per method, parsed here, so every URL shape TF Serving accepts (versions,
# metadata, verbs) and its 404 wording live in one place.
PREDICT_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,18}))?:(?P<verb>\w+)$")
GET_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,18}))?(?P<metadata>/metadata)?$"
)


class RequestError(Exception):
    """A client mistake, answered as TF Serving does: `{"error": message}` with `status_code`."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def find_model(
    models: dict[str, served_models.ServedModel], name: str, version: str | None
) -> served_models.ServedModel:
    """The model a URL names, or TF Serving's 404 when the name or version is not loaded."""
    model = models.get(name)
    if model is None or (version is not None and int(version) != model.version):
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise RequestError(404, f"Servable not found for request: {request}")
    return model


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


def parse_instances(instances: object) -> list[bytes]:
    """Row format: `[{"b64": ...}, ...]` or `[{"image_bytes": {"b64": ...}}, ...]`."""
    if not isinstance(instances, list) or not instances:
        raise RequestError(
            400, f"'instances' must be a non-empty list of images (received {shorten(instances)})"
        )
    images = []
    for index, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) == {signatures.IMAGE_BYTES}:
            instance = instance[signatures.IMAGE_BYTES]
        images.append(decode_b64(instance, f"instances[{index}]"))
    return images


def parse_inputs(inputs: object) -> list[bytes]:
    """Columnar format: `{"image_bytes": [{"b64": ...}, ...]}` or `[{"b64": ...}, ...]`."""
    if isinstance(inputs, dict):
        if set(inputs) != {signatures.IMAGE_BYTES}:
            raise RequestError(
                400,
                f"'inputs' must have the one key {signatures.IMAGE_BYTES!r} "
                f"(received keys {sorted(inputs)})",
            )
        inputs = inputs[signatures.IMAGE_BYTES]
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(
            400, f"'inputs' must be a non-empty list of images (received {shorten(inputs)})"
        )
    return [decode_b64(value, f"inputs[{index}]") for index, value in enumerate(inputs)]


def predict(model: served_models.ServedModel, body: bytes) -> dict:
    """One predict request body -> TF Serving's response document (blocking: run off the loop)."""
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
    if signature_name != signatures.SERVING_DEFAULT:
        raise RequestError(
            400,
            f"signature_name must be {signatures.SERVING_DEFAULT!r} or left out "
            f"(received {shorten(signature_name)})",
        )
    row_format = "instances" in request
    images = (
        parse_instances(request["instances"]) if row_format else parse_inputs(request["inputs"])
    )
    try:
        outputs = model.predict(images)
    except served_models.InvalidImageError as error:
        raise RequestError(400, str(error)) from None
    scores = outputs[signatures.SCORES].tolist()
    classes = [[name.decode("utf-8") for name in row] for row in outputs[signatures.CLASSES]]
    if row_format:
        return {
            "predictions": [
                {signatures.SCORES: row_scores, signatures.CLASSES: row_classes}
                for row_scores, row_classes in zip(scores, classes, strict=True)
            ]
        }
    return {"outputs": {signatures.SCORES: scores, signatures.CLASSES: classes}}


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `max_bytes`."""
    too_large = RequestError(
        413, f"request body exceeds {max_bytes} bytes; send fewer images per request"
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


def build_app(
    models: dict[str, served_models.ServedModel], max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """The REST app serving `models` by name under /v1/models/, as TF Serving does."""
    app = FastAPI(title="imgclf model server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def answer_request_error(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def answer_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.get("/v1/models/{rest:path}")
    def get_model(rest: str) -> dict:
        match = GET_PATH.match(rest)
        if match is None:
            raise RequestError(404, f"Malformed request: GET /v1/models/{rest}")
        model = find_model(models, match["name"], match["version"])
        if not match["metadata"]:
            return model.status()
        return {
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            # Nested twice on purpose: TF Serving's JSON of a SignatureDefMap proto.
            "metadata": {
                "signature_def": {
                    "signature_def": {signatures.SERVING_DEFAULT: model.signature_def()}
                }
            },
        }

    @app.post("/v1/models/{rest:path}")
    async def post_model(rest: str, request: Request) -> JSONResponse:
        match = PREDICT_PATH.match(rest)
        if match is None or match["verb"] != "predict":
            raise RequestError(404, f"Malformed request: POST /v1/models/{rest}")
        model = find_model(models, match["name"], match["version"])
        body = await read_body(request, max_body_bytes)
        # JSON, base64 and the TF call all block: keep them off the event loop.
        return JSONResponse(await run_in_threadpool(predict, model, body))

    return app


class AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints where each model is served once its socket is listening."""

    def __init__(self, config: uvicorn.Config, models: dict[str, served_models.ServedModel]):
        super().__init__(config)
        self.models = models

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        for model in self.models.values():
            print(
                f"serving {model.name} version {model.version} at "
                f"http://{host}:{port}/v1/models/{model.name}",
                flush=True,
            )


def build_server(
    models: dict[str, served_models.ServedModel],
    host: str,
    port: int,
    max_body_bytes: int = MAX_BODY_BYTES,
    log_level: str = "info",
) -> AnnouncingServer:
    """A ready-to-run server; call `.run()` (blocking) and set `.should_exit` to stop it."""
    config = uvicorn.Config(
        build_app(models, max_body_bytes), host=host, port=port, log_level=log_level
    )
    return AnnouncingServer(config, models)


def serve(model_path: str, model_name: str, host: str, port: int) -> None:
    """Loads the newest version under `model_path` and serves it until interrupted."""
    model = served_models.ServedModel(model_name, model_path)
    build_server({model_name: model}, host, port).run()
