"""Loads the newest version of a TF Serving model folder and runs its bytes-in signature."""

import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from configs import errors
from serving import signatures
from trainer import runs
from transforms import preprocess

logger = logging.getLogger(__name__)


class ModelLoadError(errors.UserError):
    """The model folder holds nothing servable."""


class InvalidImageError(ValueError):
    """The signature rejected the request's bytes (not a decodable image)."""


def find_latest_version(base_path: str | Path) -> tuple[int, Path]:
    """The highest numbered `<base_path>/<N>/` holding a saved_model.pb, as (N, folder)."""
    base_path = Path(base_path)
    expected = f"numbered version folders such as {base_path / '1' / runs.SAVED_MODEL_FILE}"
    if not base_path.is_dir():
        raise ModelLoadError(f"model path {base_path} is not a folder; expected {expected}")
    versions = runs.saved_model_versions(base_path)
    if not versions:
        found = sorted(child.name for child in base_path.iterdir()) or "nothing"
        raise ModelLoadError(
            f"no servable version under {base_path}: expected {expected} "
            f"(found {found}); export one with serving.export.export_saved_model"
        )
    latest = max(versions)
    return latest, versions[latest]


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


class ServedModel:
    """One named model: the newest version under `base_path`, loaded and warmed up."""

    def __init__(self, name: str, base_path: str | Path):
        self.name = name
        self.base_path = Path(base_path)
        self.version, self.version_path = find_latest_version(self.base_path)
        started = time.perf_counter()
        loaded = tf.saved_model.load(str(self.version_path))
        if signatures.SERVING_DEFAULT not in loaded.signatures:
            raise ModelLoadError(
                f"{self.version_path} has no {signatures.SERVING_DEFAULT!r} signature (found "
                f"{sorted(loaded.signatures)}); re-export it with serving.export.export_saved_model"
            )
        # Keep the loaded object alive: the signature's variables are owned by it.
        self._loaded = loaded
        self._signature = loaded.signatures[signatures.SERVING_DEFAULT]
        # The first call of a restored function traces it; pay that here, not on a request.
        self.predict([build_warmup_png()])
        logger.info(
            "loaded %s version %d from %s in %.2fs",
            name,
            self.version,
            self.version_path,
            time.perf_counter() - started,
        )

    def predict(self, images: list[bytes]) -> dict[str, np.ndarray]:
        """Encoded images -> {"scores": float32 [N, C], "classes": bytes [N, C]}."""
        try:
            outputs = self._signature(
                **{signatures.IMAGE_BYTES: tf.constant(images, dtype=tf.string)}
            )
        except tf.errors.InvalidArgumentError as error:
            raise InvalidImageError(
                f"could not decode the images (JPEG, PNG, GIF or BMP expected): "
                f"{preprocess.decode_error_reason(error)}"
            ) from None
        return {key: value.numpy() for key, value in outputs.items()}

    def status(self) -> dict:
        """TF Serving's GetModelStatus document for the loaded version."""
        return {
            "model_version_status": [
                {
                    "version": str(self.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def signature_def(self) -> dict:
        """The served signature as TF Serving's SignatureDef JSON."""
        _, input_specs = self._signature.structured_input_signature
        return {
            "inputs": {key: describe_tensor(spec) for key, spec in input_specs.items()},
            "outputs": {
                key: describe_tensor(spec)
                for key, spec in self._signature.structured_outputs.items()
            },
            "method_name": "tensorflow/serving/predict",
        }
