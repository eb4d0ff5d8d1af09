"""One loaded model version: its SavedModel signatures, input checks and warm-up."""

import functools
import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from artifacts import runtimes, warmup
from core import errors, locations, run_layout, saved_models, signatures
from transforms import pillow_formats, preprocess

logger = logging.getLogger(__name__)
DECODED_FORMATS = "JPEG, PNG, GIF, BMP, WebP or TIFF"
# The signatures whose model part onnxruntime can run (the ONNX file is `predict_images`).
ONNX_SIGNATURES = (signatures.SERVING_DEFAULT, signatures.PREDICT_IMAGES)


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


def require_local(model_path: str | Path) -> None:
    """A URL given as a model path is a clear error, not the local folder `s3:/...`."""
    if locations.is_url(str(model_path)):
        raise ModelLoadError(
            f"model path {model_path} is a URL; imgclf loads models from a local or mounted "
            "folder: copy it first (aws s3 cp --recursive, gcloud storage cp -r), or serve the "
            "bucket with tensorflow_model_server"
        )


def find_versions(base_path: str | Path) -> dict[int, Path]:
    """Every numbered `<base_path>/<N>/` holding a saved_model.pb; a clear error when none."""
    require_local(base_path)
    base_path = Path(base_path)
    expected = (
        f"numbered version folders such as {base_path / '1' / saved_models.SAVED_MODEL_FILE}, "
        f"or a run folder holding them in {run_layout.EXPORT}/"
    )
    if not base_path.is_dir():
        raise ModelLoadError(f"model path {base_path} is not a folder; expected {expected}")
    versions = saved_models.saved_model_versions(base_path)
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
    saved_model.ParseFromString((version_path / saved_models.SAVED_MODEL_FILE).read_bytes())
    signature_defs = saved_model.meta_graphs[0].signature_def
    # The init op is bookkeeping of the loader, not something a client can call.
    return {key: signature_defs[key] for key in signature_defs if not key.startswith("__")}


def readable_by_tensorflow(images: np.ndarray) -> np.ndarray:
    """Encoded images with every file TensorFlow cannot decode (TIFF, palette BMP) converted
    to PNG by Pillow, as ingest stores them: every format ingest accepts is servable. The array
    is copied only when a file is converted."""
    converted = images
    for index, image in enumerate(images.flat):
        if not pillow_formats.needs_pillow(image):
            continue
        if converted is images:
            converted = images.copy()
        try:
            converted.flat[index] = pillow_formats.to_png(image)
        except pillow_formats.UnreadableImage as error:
            raise InvalidInputError(
                f"could not decode the images ({DECODED_FORMATS} expected): {error}"
            ) from None
    return converted


def check_pixel_counts(images: np.ndarray, max_pixels: int) -> None:
    """InvalidInputError for an image whose header declares more than `max_pixels` pixels,
    before any pixel is decoded; headers Pillow cannot read are left to the graph's decoder."""
    for index, image in enumerate(images.flat):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(image)) as opened:
                    width, height = opened.size
        except Image.DecompressionBombError as error:  # beyond Pillow's own limit
            raise InvalidInputError(f"image {index}: {error}; send it downscaled") from None
        except (OSError, SyntaxError, ValueError):
            continue
        if width * height > max_pixels:
            raise InvalidInputError(
                f"image {index} is {width}x{height}, more than the server's limit of "
                f"{max_pixels} pixels (serving.max_pixels); send it downscaled"
            )


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

    def __init__(
        self, name: str, version: int, path: str | Path, runtime: str = runtimes.SAVEDMODEL
    ):
        self.name = name
        self.version = version
        self.path = Path(path)
        self.onnx: runtimes.OnnxModel | None = None
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
        self.runtime, self.runtime_reason = self.choose_runtime(runtime)
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "loaded %s version %d from %s in %.2fs (%d warm-up requests); runtime %s: %s",
            name,
            version,
            self.path,
            self.load_seconds,
            replayed,
            self.runtime,
            self.runtime_reason,
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

    def choose_runtime(self, wanted: str) -> tuple[str, str]:
        """(runtime, why) for the image signatures: `savedmodel`, `onnx` (an error when the
        export has no usable ONNX model), or `auto`: ONNX when it has one, agrees with the
        SavedModel on the warm-up images and answers a one-image request faster."""
        if wanted not in runtimes.RUNTIMES:
            raise ModelLoadError(
                f"serving.runtime must be one of {', '.join(runtimes.RUNTIMES)} (received "
                f"{wanted!r})"
            )
        if wanted == runtimes.SAVEDMODEL:
            return runtimes.SAVEDMODEL, "serving.runtime is savedmodel"
        path, missing = runtimes.usable_onnx(self.path, set(self.signatures))
        if path is None:
            if wanted == runtimes.ONNX:
                raise ModelLoadError(
                    f"serving.runtime is onnx but {self.path} cannot use it: {missing}; export "
                    "the run with `imgclf export --format onnx` before pushing it, or set "
                    "serving.runtime=auto"
                )
            return runtimes.SAVEDMODEL, missing
        onnx = runtimes.OnnxModel(path)
        image = self.image_array([build_warmup_png()])
        batch = self.image_array(
            warmup.warmup_images(self.image_shape()[:2], self.image_shape()[2])
        )
        reference = self.run(signatures.SERVING_DEFAULT, {signatures.IMAGE_BYTES: batch})
        self.onnx = onnx
        served = self.run(signatures.SERVING_DEFAULT, {signatures.IMAGE_BYTES: batch})
        difference = float(np.abs(served[signatures.SCORES] - reference[signatures.SCORES]).max())
        if difference > runtimes.AGREEMENT:
            self.onnx = None
            if wanted == runtimes.ONNX:
                raise ModelLoadError(
                    f"{runtimes.ONNX_FILE} in {self.path} differs from the SavedModel by "
                    f"{difference:.2g} (> {runtimes.AGREEMENT}); re-export it"
                )
            return runtimes.SAVEDMODEL, f"{runtimes.ONNX_FILE} differs by {difference:.2g}"
        if wanted == runtimes.ONNX:
            return runtimes.ONNX, "serving.runtime is onnx"
        inputs = {signatures.IMAGE_BYTES: image}
        onnx_ms = runtimes.median_ms(lambda: self.run(signatures.SERVING_DEFAULT, inputs))
        self.onnx = None
        savedmodel_ms = runtimes.median_ms(lambda: self.run(signatures.SERVING_DEFAULT, inputs))
        timings = f"one image: onnxruntime {onnx_ms:.1f} ms, SavedModel {savedmodel_ms:.1f} ms"
        if onnx_ms < savedmodel_ms:
            self.onnx = onnx
            return runtimes.ONNX, timings
        return runtimes.SAVEDMODEL, timings

    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) that `predict_images` takes."""
        spec = self.signatures[signatures.PREDICT_IMAGES].inputs[signatures.IMAGES]
        return tuple(int(size) for size in spec.shape[1:])

    def check_inputs(
        self, signature_name: str, inputs: dict[str, np.ndarray], max_pixels: int | None = None
    ) -> dict:
        """The inputs as the signature takes them; encoded images within `max_pixels` (checked
        from their headers, before Pillow converts any) and readable by TensorFlow."""
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
        if signatures.IMAGE_BYTES in checked:
            images = checked[signatures.IMAGE_BYTES]
            if max_pixels is not None:
                check_pixel_counts(images, max_pixels)
            checked[signatures.IMAGE_BYTES] = readable_by_tensorflow(images)
        sizes = {value.shape[0] for value in checked.values() if value.ndim}
        if len(sizes) > 1:
            raise InvalidInputError(f"inputs hold different numbers of examples: {sorted(sizes)}")
        return checked

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checks the inputs and runs one signature; blocking (call it off any event loop)."""
        return self.run_checked(signature_name, self.check_inputs(signature_name, inputs))

    def run_checked(self, signature_name: str, checked: dict[str, np.ndarray]) -> dict:
        """Runs one signature on inputs `check_inputs` returned (or batches of them); blocking."""
        if self.onnx is not None and signature_name in ONNX_SIGNATURES:
            return self.run_onnx(signature_name, checked)
        return self.run_signature(signature_name, checked)

    def run_onnx(self, signature_name: str, checked: dict[str, np.ndarray]) -> dict:
        """The image signatures with onnxruntime for the model, the SavedModel's preprocessing."""
        if signature_name == signatures.SERVING_DEFAULT:
            preprocessed = self.run_signature(signatures.PREPROCESS, checked)
            images = preprocessed[signatures.IMAGES]
        else:
            images = checked[signatures.IMAGES]
        scores = self.onnx.scores(images)
        return {
            signatures.SCORES: scores,
            signatures.CLASSES: np.tile(self.class_row, (scores.shape[0], 1)),
        }

    @functools.cached_property
    def class_row(self) -> np.ndarray:
        """The `classes` output of one example: the label map as bytes, in score order."""
        height, width, channels = self.image_shape()
        zeros = np.zeros((1, height, width, channels), np.float32)
        outputs = self.run_signature(signatures.PREDICT_IMAGES, {signatures.IMAGES: zeros})
        return outputs[signatures.CLASSES][0]

    def run_signature(self, signature_name: str, checked: dict[str, np.ndarray]) -> dict:
        """One SavedModel signature on checked inputs."""
        function = self.signatures[signature_name].function
        try:
            outputs = function(**{key: tf.constant(value) for key, value in checked.items()})
        except tf.errors.InvalidArgumentError as error:
            reason = preprocess.decode_error_reason(error)
            if any(value.dtype == object for value in checked.values()):
                raise InvalidInputError(
                    f"could not decode the images ({DECODED_FORMATS} expected): {reason}"
                ) from None
            raise InvalidInputError(f"could not run {signature_name!r}: {reason}") from None
        return {key: value.numpy() for key, value in outputs.items()}

    def predict(self, images: list[bytes]) -> dict[str, np.ndarray]:
        """Encoded images -> {"scores": float32 [N, C], "classes": bytes [N, C]}."""
        return self.run(
            signatures.SERVING_DEFAULT, {signatures.IMAGE_BYTES: self.image_array(images)}
        )

    @staticmethod
    def image_array(images: list[bytes]) -> np.ndarray:
        """Encoded images as the 1-D object array the bytes signatures take."""
        images_array = np.empty(len(images), dtype=object)
        images_array[:] = images
        return images_array

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
