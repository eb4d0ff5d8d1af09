"""TF Serving's gRPC API on the servicer classes generated in tensorflow-serving-api:
PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus."""

import concurrent.futures
import logging
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from artifacts import models
from serving.server import manager, service

logger = logging.getLogger(__name__)

SIGNATURE_DEF = "signature_def"

STATE_CODES = {
    "AVAILABLE": get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    "END": get_model_status_pb2.ModelVersionStatus.END,
}


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def resolve(models_manager: manager.ModelManager, model_spec) -> models.ServedModel:
    # version and version_label are a oneof in TF Serving's ModelSpec: at most one is set.
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    try:
        return models_manager.resolve(model_spec.name, version, label)
    except manager.NotFound as error:
        raise Aborted(grpc.StatusCode.NOT_FOUND, str(error)) from None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self, models_manager: manager.ModelManager, predict_service: service.PredictService
    ):
        self.manager = models_manager
        self.service = predict_service

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        return answer(
            self.manager, context, "predict", request.model_spec.name, self._predict, request
        )

    def _predict(self, request: predict_pb2.PredictRequest):
        model = resolve(self.manager, request.model_spec)
        signature_name = request.model_spec.signature_name or "serving_default"
        try:
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        except (TypeError, ValueError) as error:
            raise Aborted(
                grpc.StatusCode.INVALID_ARGUMENT, f"unreadable input tensor: {error}"
            ) from None
        try:
            outputs = self.service.predict(model, signature_name, inputs)
        except models.InvalidInputError as error:
            raise Aborted(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        except service.Overloaded as error:
            raise Aborted(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from None
        except service.DeadlineExceeded as error:
            raise Aborted(grpc.StatusCode.DEADLINE_EXCEEDED, str(error)) from None
        wanted = set(request.output_filter) or set(outputs)
        unknown = wanted - set(outputs)
        if unknown:
            raise Aborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output_filter names unknown outputs {sorted(unknown)} "
                f"(outputs: {sorted(outputs)})",
            )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = signature_name
        for key in sorted(wanted):
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return response, model.version

    def GetModelMetadata(self, request, context: grpc.ServicerContext):
        return answer(
            self.manager, context, "metadata", request.model_spec.name, self._metadata, request
        )

    def _metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest):
        fields = list(request.metadata_field)
        if fields != [SIGNATURE_DEF]:
            raise Aborted(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field must be [{SIGNATURE_DEF!r}] (received {fields})",
            )
        model = resolve(self.manager, request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in model.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        response.metadata[SIGNATURE_DEF].Pack(signature_map)
        return response, model.version


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, models_manager: manager.ModelManager):
        self.manager = models_manager

    def GetModelStatus(self, request, context: grpc.ServicerContext):
        return answer(
            self.manager, context, "status", request.model_spec.name, self._status, request
        )

    def _status(self, request: get_model_status_pb2.GetModelStatusRequest):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            statuses = self.manager.status(spec.name, version, spec.version_label or None)
        except manager.NotFound as error:
            raise Aborted(grpc.StatusCode.NOT_FOUND, str(error)) from None
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in statuses:
            status = response.model_version_status.add()
            status.version = int(entry["version"])
            status.state = STATE_CODES[entry["state"]]
            status.status.CopyFrom(
                status_pb2.StatusProto(
                    error_code=0 if entry["status"]["error_code"] == "OK" else 2,
                    error_message=entry["status"]["error_message"],
                )
            )
        return response, version or ""


def answer(models_manager, context, method: str, model_name: str, handler, request):
    """Runs a handler, turning Aborted into the gRPC status and recording the metrics."""
    started = time.perf_counter()
    code, version = grpc.StatusCode.OK, ""
    try:
        response, version = handler(request)
        return response
    except Aborted as error:
        code = error.code
        context.abort(error.code, error.message)
    except Exception:  # noqa: BLE001 - a bug answers INTERNAL, never kills the server
        code = grpc.StatusCode.INTERNAL
        logger.exception("gRPC %s failed", method)
        context.abort(code, f"internal error in {method}; see the server log")
    finally:
        models_manager.metrics.observe(
            "grpc",
            model_name or "unknown",
            version,
            method,
            code.name,
            time.perf_counter() - started,
        )


def build_server(
    models_manager: manager.ModelManager,
    predict_service: service.PredictService,
    host: str,
    port: int,
    max_message_bytes: int,
    workers: int,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int]:
    """A started gRPC server and the port it bound (useful with port 0); TLS with
    `credentials`."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(models_manager, predict_service), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(models_manager), server)
    address = f"{host}:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"gRPC could not bind {host}:{port}; is the port in use?")
    server.start()
    return server, bound
