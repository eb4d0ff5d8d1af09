"""TF Serving warm-up records: the requests a server replays when it loads an exported version.

TF Serving reads `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord file of
serialized PredictionLog messages, and runs each request before it marks the version AVAILABLE,
so the first user request does not pay for lazily built kernels and traced functions. A record
that fails to parse or to run fails the whole load, and more than 1,000 records are refused.
Only `model_spec.signature_name` and the inputs matter there: the requests run against the
version being loaded, so `model_spec.name` is a label that needs no update when the registry
publishes the export under another name.
"""

import logging
import numbers
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import message
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from core import errors, signatures

logger = logging.getLogger(__name__)

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords
DEFAULT_BATCH_SIZES = (1, 8)


class InvalidWarmupFile(errors.UserError, ValueError):
    """The warm-up file is not a TFRecord file of predict PredictionLogs."""


def warmup_path(version_dir: str | Path) -> Path:
    return Path(version_dir) / signatures.METADATA_DIR / WARMUP_FILE


def ramps(height: int, width: int, channels: int) -> np.ndarray:
    """uint8 [height, width, channels] of smooth ramps: not one flat colour, yet a few KiB at
    most as PNG or JPEG, and the same pixels on every call. The fourth channel (alpha) is partly
    transparent everywhere, so compositing on the background changes pixels."""
    y = np.linspace(0.0, 255.0, height)[:, None] * np.ones((1, width))
    x = np.linspace(0.0, 255.0, width)[None, :] * np.ones((height, 1))
    planes = [x, y, (x + y) / 2, 191.0 - x / 2][:channels]
    return np.round(np.stack(planes, axis=-1)).astype(np.uint8)


def warmup_images(image_size: tuple[int, int], channels: int) -> list[bytes]:
    """Four encoded images, identical bytes on every call, covering the decode paths a server
    sees: a PNG at the model's size in its colour mode, a larger RGB JPEG of another aspect
    ratio (the JPEG branch with its EXIF lookup, downscaling), a smaller RGBA PNG (alpha
    compositing, upscaling) and a PNG in the other colour mode (grayscale for an RGB model,
    RGB for a grayscale one)."""
    height, width = check_image_size(image_size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3 (received {channels!r})")
    other_mode = 3 if channels == 1 else 1
    return [
        tf.io.encode_png(ramps(height, width, channels)).numpy(),
        tf.io.encode_jpeg(ramps(height * 3 // 2 + 1, width + width // 3 + 1, 3)).numpy(),
        tf.io.encode_png(ramps(max(1, height // 2), width // 3 + 1, 4)).numpy(),
        tf.io.encode_png(ramps(height + 3, max(1, width // 2), other_mode)).numpy(),
    ]


def check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    if len(image_size) != 2 or not all(is_positive_int(s) for s in image_size):
        raise ValueError(
            f"image_size must be (height, width) with positive ints (received {image_size!r})"
        )
    return int(image_size[0]), int(image_size[1])


def is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(batch_sizes)
    if not sizes or not all(is_positive_int(s) for s in sizes):
        raise ValueError(
            f"batch_sizes must be one or more positive ints (received {batch_sizes!r})"
        )
    sizes = tuple(int(s) for s in sizes)
    # One record per batch size plus the predict_images record.
    if len(sizes) + 2 > MAX_RECORDS:
        raise ValueError(
            f"TF Serving replays at most {MAX_RECORDS} warm-up records; batch_sizes asks for "
            f"{len(sizes) + 2} (received {len(sizes)} sizes); pass fewer batch sizes"
        )
    return sizes


def build_warmup_requests(
    model_name: str,
    image_size: tuple[int, int],
    channels: int,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
) -> list[predict_pb2.PredictRequest]:
    """One `serving_default` request per batch size (warmup_images, cycled), then one
    `predict_images` request of a float32 zeros batch [1, height, width, channels] and one
    `preprocess_images` request of one image."""
    sizes = check_batch_sizes(batch_sizes)
    height, width = check_image_size(image_size)
    images = warmup_images(image_size, channels)
    requests = []
    for size in sizes:
        batch = [images[i % len(images)] for i in range(size)]
        inputs = {signatures.IMAGE_BYTES: tf.make_tensor_proto(batch, tf.string, shape=[size])}
        requests.append(build_request(model_name, signatures.SERVING_DEFAULT, inputs))
    # One value and a shape: TensorProto repeats its last value to fill the tensor (TF Serving
    # and tf.make_ndarray both do), so the record stays a few bytes at any image size.
    zeros = tf.make_tensor_proto(0.0, tf.float32, shape=[1, height, width, channels])
    requests.append(
        build_request(model_name, signatures.PREDICT_IMAGES, {signatures.IMAGES: zeros})
    )
    one_image = {signatures.IMAGE_BYTES: tf.make_tensor_proto(images[:1], tf.string, shape=[1])}
    requests.append(build_request(model_name, signatures.PREPROCESS, one_image))
    return requests


def build_request(model_name: str, signature_name: str, inputs: dict) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    return request


def write_warmup_requests(
    version_dir: str | Path,
    model_name: str,
    image_size: tuple[int, int],
    channels: int,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
) -> Path:
    """Writes `version_dir/assets.extra/tf_serving_warmup_requests` and returns its path."""
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise FileNotFoundError(f"version folder {version_dir} does not exist; export it first")
    requests = build_warmup_requests(model_name, image_size, channels, batch_sizes)
    path = warmup_path(version_dir)
    path.parent.mkdir(exist_ok=True)
    # Written beside it and renamed, so a reader never sees half a file.
    partial = path.with_name(f".{WARMUP_FILE}.partial")
    with tf.io.TFRecordWriter(str(partial)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    partial.replace(path)
    logger.debug("wrote %d warm-up requests to %s", len(requests), path)
    return path


def read_warmup_requests(version_dir: str | Path) -> list[predict_pb2.PredictRequest]:
    """The PredictRequests of a version's warm-up file, in file order; [] when it has none.

    A file TF Serving would refuse (truncated or corrupt records, records that are not
    PredictionLogs with a predict_log, more than 1,000 records) raises InvalidWarmupFile.
    """
    path = warmup_path(version_dir)
    if not path.is_file():
        return []
    fix = "re-export the model, or delete the file to load it without warm-up"
    requests = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            try:
                log = prediction_log_pb2.PredictionLog.FromString(record)
            except message.DecodeError as error:
                raise InvalidWarmupFile(
                    f"record {index} of {path} is not a PredictionLog ({error}); {fix}"
                ) from None
            kind = log.WhichOneof("log_type")
            if kind != "predict_log":
                raise InvalidWarmupFile(
                    f"record {index} of {path} holds {kind or 'no log'}, expected a predict_log; "
                    f"{fix}"
                )
            requests.append(log.predict_log.request)
    except tf.errors.DataLossError as error:
        # Drop the iterator's node name and op suffix: only "truncated record at N" helps.
        reason = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "", error.message.splitlines()[0])
        raise InvalidWarmupFile(
            f"{path} is not a valid TFRecord file after {len(requests)} record(s): {reason}; {fix}"
        ) from None
    if len(requests) > MAX_RECORDS:
        raise InvalidWarmupFile(
            f"{path} holds {len(requests)} records; TF Serving replays at most {MAX_RECORDS}; {fix}"
        )
    return requests
