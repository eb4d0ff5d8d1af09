"""One loaded model version: its SavedModel signatures, input checks and warm-up."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from configs import errors
from serving import signatures, warmup
from trainer import runs
from transforms import preprocess

logger = logging.getLogger(__name__)


class ModelLoadError(errors.UserError):
    """The model folder holds nothing servable."""


class InvalidInputError(ValueError):
    """A request the model cannot run: unknown signature or input, wrong dtype or shape, or
    bytes that are not a decodable image. Answered 400 / INVALID_ARGUMENT."""


def find_latest_version(base_path: str | Path) -> tuple[int, Path]:
    """The highest numbered `<base_path>/<N>/` holding a saved_model.pb, as (N, folder)."""
    versions = find_versions(base_path)
    latest = max(versions)
    return latest, versions[latest]


def find_versions(base_path: str | Path) -> dict[int, Path]:
    """Every numbered `<base_path>/<N>/` holding a saved_model.pb; a clear error when none."""
    base_path = Path(base_path)
    expected = f"numbered version folders such as {base_path / '1' / runs.SAVED_MODEL_FILE}"
    if not base_path.is_dir():
        raise ModelLoadError(f"model path {base_path} is not a folder; expected {expected}")
    versions = runs.saved_model_versions(base_path)
    if not versions:
        found = sorted(child.name for child in base_path.iterdir()) or "nothing"
        raise ModelLoadError(
            f"no servable version under {base_path}: expected {expected} "
            f"(found {found}); export one with `imgclf train` or `imgclf registry push`"
        )
    return versions


def describe_tensor(spec: tf.TensorSpec) -> dict:
    """A TensorSpec as TF Serving's TensorInfo JSON (dtype enum name, dims with -1 = any)."""
    return {
        "dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
        "tensor_shape": {
            "dim": [{"size": str(-1 if size is None else size), "name": ""} for size in spec.shape],
            "unknown_rank": spec.shape.rank is None,
        },
        "name": spec.name or "",
    }


def build_warmup_png() -> bytes:
    """A 1x1 grayscale PNG: the smallest input that runs the whole decode-and-predict graph."""
    return tf.io.encode_png(tf.zeros([1, 1, 1], tf.uint8)).numpy()


def read_signature_defs(version_path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs as saved in saved_model.pb: what TF Serving's metadata API returns."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_path / runs.SAVED_MODEL_FILE).read_bytes())
    signature_defs = saved_model.meta_graphs[0].signature_def
    # The init op is bookkeeping of the loader, not something a client can call.
    return {key: signature_defs[key] for key in signature_defs if not key.startswith("__")}


@dataclass(frozen=True)
class Signature:
    function: tf.types.experimental.ConcreteFunction
    inputs: dict[str, tf.TensorSpec]


def check_input(name: str, value: np.ndarray, spec: tf.TensorSpec) -> np.ndarray:
    """`value` as the dtype `spec` wants, or InvalidInputError saying what was expected."""
    if spec.dtype == tf.string:
        if value.dtype.kind not in "OSU" or any(not isinstance(v, bytes) for v in value.flat):
            raise InvalidInputError(
                f"input {name!r} must hold encoded images as bytes (DT_STRING), "
                f"received dtype {value.dtype}"
            )
        value = value.astype(object)
    else:
        if value.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"input {name!r} must be numeric ({spec.dtype.name}), received dtype {value.dtype}"
            )
        value = value.astype(spec.dtype.as_numpy_dtype)
    expected = spec.shape
    if expected.rank is not None and (
        value.ndim != expected.rank
        or any(
            want is not None and want != got
            for want, got in zip(expected, value.shape, strict=True)
        )
    ):
        wanted = [-1 if size is None else size for size in expected]
        raise InvalidInputError(
            f"input {name!r} must have shape {wanted} (-1 = any), received {list(value.shape)}"
        )
    if value.ndim and value.shape[0] == 0:
        raise InvalidInputError(f"input {name!r} holds no examples; send at least one")
    return value


class ServedModel:
    """One version of a named model, loaded from `<base>/<version>/` and warmed up."""

    def __init__(self, name: str, version: int, path: str | Path):
        self.name = name
        self.version = version
        self.path = Path(path)
        started = time.perf_counter()
        loaded = tf.saved_model.load(str(self.path))
        if signatures.SERVING_DEFAULT not in loaded.signatures:
            raise ModelLoadError(
                f"{self.path} has no {signatures.SERVING_DEFAULT!r} signature (found "
                f"{sorted(loaded.signatures)}); re-export it with `imgclf export`"
            )
        # Keep the loaded object alive: the signatures' variables are owned by it.
        self._loaded = loaded
        self.signatures = {
            key: Signature(function, function.structured_input_signature[1])
            for key, function in loaded.signatures.items()
        }
        self.signature_defs = read_signature_defs(self.path)
        replayed = self.warm_up()
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "loaded %s version %d from %s in %.2fs (%d warm-up requests)",
            name,
            version,
            self.path,
            self.load_seconds,
            replayed,
        )

    @classmethod
    def latest(cls, name: str, base_path: str | Path) -> "ServedModel":
        version, path = find_latest_version(base_path)
        return cls(name, version, path)

    def warm_up(self) -> int:
        """Replays the export's TF Serving warm-up records (or one tiny PNG), so the first
        calls of each signature are traced here rather than on a user's request."""
        requests = warmup.read_warmup_requests(self.path)
        for request in requests:
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            self.run(request.model_spec.signature_name or signatures.SERVING_DEFAULT, inputs)
        if not requests:
            self.predict([build_warmup_png()])
        return max(len(requests), 1)

    def check_inputs(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict:
        signature = self.signatures.get(signature_name)
        if signature is None:
            raise InvalidInputError(
                f"signature {signature_name!r} not found in {self.name} version {self.version}; "
                f"available: {sorted(self.signatures)}"
            )
        if set(inputs) != set(signature.inputs):
            raise InvalidInputError(
                f"signature {signature_name!r} takes the input(s) {sorted(signature.inputs)}, "
                f"received {sorted(inputs)}"
            )
        checked = {
            key: check_input(key, value, signature.inputs[key]) for key, value in inputs.items()
        }
        sizes = {value.shape[0] for value in checked.values() if value.ndim}
        if len(sizes) > 1:
            raise InvalidInputError(f"inputs hold different numbers of examples: {sorted(sizes)}")
        return checked

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one signature on checked inputs; blocking (call it off any event loop)."""
        checked = self.check_inputs(signature_name, inputs)
        function = self.signatures[signature_name].function
        try:
            outputs = function(**{key: tf.constant(value) for key, value in checked.items()})
        except tf.errors.InvalidArgumentError as error:
            reason = preprocess.decode_error_reason(error)
            if any(value.dtype == object for value in checked.values()):
                raise InvalidInputError(
                    f"could not decode the images (JPEG, PNG, GIF or BMP expected): {reason}"
                ) from None
            raise InvalidInputError(f"could not run {signature_name!r}: {reason}") from None
        return {key: value.numpy() for key, value in outputs.items()}

    def predict(self, images: list[bytes]) -> dict[str, np.ndarray]:
        """Encoded images -> {"scores": float32 [N, C], "classes": bytes [N, C]}."""
        images_array = np.empty(len(images), dtype=object)
        images_array[:] = images
        return self.run(signatures.SERVING_DEFAULT, {signatures.IMAGE_BYTES: images_array})

    def signature_def(self) -> dict:
        """The bytes-in signature as TF Serving's SignatureDef JSON."""
        signature = self.signatures[signatures.SERVING_DEFAULT]
        return {
            "inputs": {key: describe_tensor(spec) for key, spec in signature.inputs.items()},
            "outputs": {
                key: describe_tensor(spec)
                for key, spec in signature.function.structured_outputs.items()
            },
            "method_name": "tensorflow/serving/predict",
        }
