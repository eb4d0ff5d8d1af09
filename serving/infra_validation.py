"""Infra validation (the pipeline's InfraValidator): an exported version served by our model
server on free local ports, its warm-up requests replayed over gRPC, and the p99 latency held
against a budget."""

import json
import logging
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from artifacts import models, warmup
from configs import schema
from core import saved_models, signatures
from serving.server import server

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0


def infra_validate(
    saved_model_dir: Path, cfg: schema.InfraValidationConfig, model_name: str
) -> dict:
    """{"passed", "p50_ms", "p99_ms", "requests", "errors", "budget_ms", "reason"}.

    `saved_model_dir` is one exported version (`<export>/<n>/` holding saved_model.pb) or a
    folder of numbered versions (the newest is served). Passes only when the version loads, every
    request succeeds and p99 <= `cfg.latency_budget_ms`. Never raises for a broken export: the
    load error becomes the reason.
    """
    result = {
        "passed": False,
        "p50_ms": None,
        "p99_ms": None,
        "requests": 0,
        "errors": 0,
        "budget_ms": cfg.latency_budget_ms,
        "reason": "",
    }
    if not cfg.enabled:
        return {**result, "passed": True, "reason": "skipped: pipeline.infra_validation.enabled"}
    saved_model_dir = Path(saved_model_dir)
    staging = Path(tempfile.mkdtemp(prefix="infra-validation-"))
    try:
        base, version_dir = serving_layout(saved_model_dir, staging)
        requests = replay_requests(version_dir, model_name)
        config = schema.ServingConfig(
            model_name=model_name, host="127.0.0.1", port=0, grpc_port=0, poll_seconds=0
        )
        manager = server.build_manager(config, base, None, model_name)
    except Exception as error:  # noqa: BLE001 - any unservable export is a failed validation
        shutil.rmtree(staging, ignore_errors=True)
        return {**result, "reason": f"cannot serve {saved_model_dir}: {describe(error)}"}
    model_server = server.ModelServer(manager, config)
    try:
        try:
            model_server.start()
        except Exception as error:  # noqa: BLE001 - reported, and the finally stops what started
            return {**result, "reason": f"cannot serve {saved_model_dir}: {describe(error)}"}
        load_error = check_status(model_server.rest_url, model_name)
        if load_error:
            # Name the export, not the link to it the server loaded.
            for link in staging.iterdir():
                load_error = load_error.replace(str(link), str(link.resolve()))
            return {**result, "reason": f"{saved_model_dir} failed to load: {load_error}"}
        count = max(cfg.requests, len(requests))
        latencies, failures = send(model_server.grpc_target, requests, count)
    finally:
        model_server.stop()
        shutil.rmtree(staging, ignore_errors=True)
    p50, p99 = (round(float(np.percentile(latencies, q)), 3) for q in (50, 99))
    result.update(p50_ms=p50, p99_ms=p99, requests=count, errors=len(failures))
    if failures:
        reason = f"{len(failures)} of {count} requests failed (first: {failures[0]})"
    elif p99 > cfg.latency_budget_ms:
        reason = (
            f"p99 latency {p99} ms > pipeline.infra_validation.latency_budget_ms "
            f"{cfg.latency_budget_ms} (p50 {p50} ms over {count} requests); raise the budget or "
            "serve a smaller model"
        )
    else:
        result["passed"] = True
        reason = f"{count} requests served, p99 {p99} ms <= budget {cfg.latency_budget_ms} ms"
    logger.info("infra validation of %s: %s", saved_model_dir, reason)
    return {**result, "reason": reason}


def serving_layout(saved_model_dir: Path, staging: Path) -> tuple[Path, Path]:
    """(base folder to serve, version folder served). A lone version is linked in as
    `<staging>/<n>/` so the server loads exactly that version, whatever sits beside it."""
    if (saved_model_dir / saved_models.SAVED_MODEL_FILE).is_file():
        number = saved_model_dir.name if saved_model_dir.name.isdigit() else "1"
        (staging / number).symlink_to(saved_model_dir.resolve(), target_is_directory=True)
        return staging, saved_model_dir
    versions = models.find_versions(saved_model_dir)
    return saved_model_dir, versions[max(versions)]


def replay_requests(version_dir: Path, model_name: str) -> list[predict_pb2.PredictRequest]:
    """The export's warm-up requests addressed to `model_name`; one generated PNG through
    serving_default when the export has none."""
    requests = []
    for record in warmup.read_warmup_requests(version_dir):
        request = predict_pb2.PredictRequest()
        request.CopyFrom(record)
        # Warm-up records name the model they were written for; the server knows `model_name`.
        request.model_spec.name = model_name
        request.model_spec.ClearField("version")
        requests.append(request)
    if requests:
        return requests
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signatures.SERVING_DEFAULT
    request.inputs[signatures.IMAGE_BYTES].CopyFrom(
        tf.make_tensor_proto([models.build_warmup_png()], tf.string)
    )
    return [request]


def check_status(rest_url: str, model_name: str) -> str:
    """'' when the REST status lists an AVAILABLE version, else what went wrong."""
    try:
        with urllib.request.urlopen(
            f"{rest_url}/v1/models/{model_name}", timeout=REQUEST_TIMEOUT_S
        ) as response:
            statuses = json.loads(response.read())["model_version_status"]
    except urllib.error.HTTPError as error:
        return f"REST status {error.code}: {error.read().decode(errors='replace')[:500]}"
    except (OSError, ValueError, KeyError) as error:
        return f"REST status check failed: {describe(error)}"
    if any(status["state"] == "AVAILABLE" for status in statuses):
        return ""
    messages = [s["status"].get("error_message", "") for s in statuses]
    return "; ".join(m for m in messages if m) or f"no version available ({statuses})"


def send(
    target: str, requests: list[predict_pb2.PredictRequest], count: int
) -> tuple[list[float], list[str]]:
    """`count` Predict calls cycling through `requests`: (latencies in ms, error messages)."""
    latencies, failures = [], []
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for index in range(count):
            request = requests[index % len(requests)]
            start = time.perf_counter()
            try:
                stub.Predict(request, timeout=REQUEST_TIMEOUT_S)
            except grpc.RpcError as error:
                failures.append(
                    f"{request.model_spec.signature_name or 'serving_default'}: "
                    f"{error.code().name} {error.details()}"
                )
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies, failures


def describe(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).strip()[:500]}"
