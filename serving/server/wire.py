"""TF Serving's REST wire format: model paths, predict JSON to input arrays, output arrays to
JSON, and the upload and query parameters of the routes. Pure: no I/O and no server state.

Every client mistake found here is a BadRequest (answered 400). It checks what only the wire
can get wrong (JSON, base64, nesting, which inputs a signature names); the arrays' dtypes and
shapes are the model's to check, once, when the predict service takes the request.
"""

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from google.protobuf import json_format

from core import signatures

# `<m>[/versions/<n>|/labels/<l>]` then `:verb` (POST) or nothing / `/metadata` (GET). Names are
# only looked up in the loaded models, never joined to a path.
MODEL_PATH = r"(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[^/:]+))?"
POST_PATH = re.compile(rf"^{MODEL_PATH}:(?P<verb>[\w-]+)$")
GET_PATH = re.compile(rf"^{MODEL_PATH}(?P<metadata>/metadata)?$")

InputSpecs = Mapping[str, object]  # input name -> tf.TensorSpec (only its dtype is read)


class BadRequest(ValueError):
    """A mistake in the request itself, answered as TF Serving does: 400, {"error": message}."""


@dataclass(frozen=True)
class ModelAddress:
    """Which model a path names: the newest version, a numbered one or a labelled one."""

    name: str
    version: int | None
    label: str | None


@dataclass(frozen=True)
class PredictRequest:
    signature_name: str
    inputs: dict[str, np.ndarray]
    row_format: bool  # answered as `predictions` rows (else `outputs` columns)


def parse_address(match: re.Match) -> ModelAddress:
    version = None if match["version"] is None else int(match["version"])
    return ModelAddress(match["name"], version, match["label"])


def parse_post_path(path: str) -> tuple[ModelAddress, str] | None:
    """(model, verb) of `<model>[...]:<verb>`, or None when the path is not one."""
    match = POST_PATH.match(path)
    return None if match is None else (parse_address(match), match["verb"])


def parse_get_path(path: str) -> tuple[ModelAddress, bool] | None:
    """(model, metadata asked?) of `<model>[...][/metadata]`, or None when the path is not one."""
    match = GET_PATH.match(path)
    return None if match is None else (parse_address(match), match["metadata"] is not None)


def shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def decode_b64(value: object, where: str) -> bytes:
    """`{"b64": "..."}` -> bytes; anything else is a BadRequest naming the offending item."""
    if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
        raise BadRequest(
            f'{where} must be an encoded image as {{"b64": "<base64 string>"}} '
            f"(received {shorten(value)})"
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except binascii.Error as error:
        raise BadRequest(f"{where}.b64 is not valid base64 ({error})") from None


def to_array(values: list, spec, where: str) -> np.ndarray:
    """A batch of JSON values as an array of the kind the signature input `spec` takes."""
    if spec.dtype.name == "string":
        array = np.empty(len(values), dtype=object)
        array[:] = [decode_b64(value, f"{where}[{index}]") for index, value in enumerate(values)]
        return array
    try:
        return np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(
            f"{where} must be numbers nested as equal-length lists, one per example "
            f"(received {shorten(values)})"
        ) from None


def parse_rows(instances: object, input_specs: InputSpecs) -> dict[str, np.ndarray]:
    """Row format: one entry per example, either the value or {input name: value}."""
    if not isinstance(instances, list) or not instances:
        raise BadRequest(
            f"'instances' must be a non-empty list of examples (received {shorten(instances)})"
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
            raise BadRequest(f"instances[{index}] must be an object with the keys {names}")
    return {name: to_array(columns[name], input_specs[name], "instances") for name in names}


def parse_columns(inputs: object, input_specs: InputSpecs) -> dict[str, np.ndarray]:
    """Columnar format: {input name: batch} or, for a one-input signature, the batch itself."""
    names = sorted(input_specs)
    if isinstance(inputs, dict) and not (len(names) == 1 and set(inputs) == {"b64"}):
        if set(inputs) != set(names):
            keys = f"one key {names[0]!r}" if len(names) == 1 else f"the keys {names}"
            raise BadRequest(f"'inputs' must have {keys} (received keys {sorted(inputs)})")
    elif len(names) == 1:
        inputs = {names[0]: inputs}
    else:
        raise BadRequest(f"'inputs' must be an object with the keys {names}")
    arrays = {}
    for name in names:
        batch = inputs[name]
        if not isinstance(batch, list) or not batch:
            raise BadRequest(
                f"'inputs' must hold a non-empty list per input (received {shorten(batch)})"
            )
        arrays[name] = to_array(batch, input_specs[name], "inputs")
    return arrays


def parse_predict(body: bytes, signature_inputs: Mapping[str, InputSpecs]) -> PredictRequest:
    """A predict body, for a model whose signatures take `signature_inputs` (signature name ->
    its input specs)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"request body is not valid JSON ({error})") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise BadRequest(
            "request body must be a JSON object with exactly one of 'instances' (row format) "
            f"or 'inputs' (columnar format) (received {shorten(request)})"
        )
    signature_name = request.get("signature_name", signatures.SERVING_DEFAULT)
    if not isinstance(signature_name, str) or signature_name not in signature_inputs:
        raise BadRequest(
            f"signature_name must be one of {sorted(signature_inputs)} or left out "
            f"(received {shorten(signature_name)})"
        )
    input_specs = signature_inputs[signature_name]
    if "instances" in request:
        return PredictRequest(signature_name, parse_rows(request["instances"], input_specs), True)
    return PredictRequest(signature_name, parse_columns(request["inputs"], input_specs), False)


def to_json(array: np.ndarray) -> list:
    if array.dtype == object:
        return np.vectorize(lambda v: v.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


def predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict:
    columns = {key: to_json(value) for key, value in outputs.items()}
    if not row_format:
        return {"outputs": columns}
    count = len(next(iter(columns.values())))
    return {
        "predictions": [{key: column[i] for key, column in columns.items()} for i in range(count)]
    }


def parse_top_k(text: str | None, default: int) -> int:
    """The `top_k` query parameter of :classify-images; `default` when it is left out."""
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise BadRequest(f"top_k must be a whole number >= 1 (received {text!r})")
    return int(text)


def upload_names(filenames: list[str | None]) -> list[str]:
    """The name each uploaded file is answered under (its position when it came without one)."""
    if not filenames:
        raise BadRequest(
            "no images uploaded: send one or more images as multipart file fields, "
            "e.g. curl -F file=@cat.jpg"
        )
    return [filename or f"file {index}" for index, filename in enumerate(filenames)]


def top_labels(outputs: Mapping[str, np.ndarray], top_k: int) -> list[list[dict]]:
    """The `top_k` classes of each example with their scores, best first (ties keep class
    order)."""
    scores, classes = outputs[signatures.SCORES], outputs[signatures.CLASSES]
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return [
        [
            {"label": classes[row, column].decode("utf-8"), "score": float(scores[row, column])}
            for column in columns
        ]
        for row, columns in enumerate(ranked)
    ]


def classify_response(
    model_name: str,
    version: int,
    names: list[str],
    outputs: Mapping[str, np.ndarray],
    top_k: int,
) -> dict:
    results = top_labels(outputs, top_k)
    return {
        "model": model_name,
        "version": version,
        "results": [
            {"filename": name, "top": top} for name, top in zip(names, results, strict=True)
        ],
    }


def metadata_response(model_name: str, version: int, signature_defs: Mapping) -> dict:
    """TF Serving's GetModelMetadata answer as JSON, from the SignatureDef protos."""
    signature_def_json = {
        key: json_format.MessageToDict(value, preserving_proto_field_name=True)
        for key, value in signature_defs.items()
    }
    return {
        "model_spec": {"name": model_name, "signature_name": "", "version": str(version)},
        # Nested twice on purpose: TF Serving's JSON of a SignatureDefMap proto.
        "metadata": {"signature_def": {"signature_def": signature_def_json}},
    }


def parse_version(text: str | None) -> int | None:
    """The `version` query parameter of the monitoring route: a number, or None for all."""
    if text is None:
        return None
    if not text.isdigit():
        raise BadRequest(f"version must be a whole number (received {text!r})")
    return int(text)
