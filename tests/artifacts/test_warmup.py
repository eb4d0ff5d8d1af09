"""TF Serving warm-up records: written into every export, parseable, and replayable as-is."""

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from artifacts import warmup
from core import signatures
from tests.conftest import export_dense_model
from transforms import preprocess

CLASS_NAMES = ["a", "b", "c"]
SIDE = 16


@pytest.fixture(scope="module", params=[1, 3], ids=["gray", "rgb"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(version folder, channels) of Input (16, 16, channels) -> Dense(3, softmax)."""
    base = tmp_path_factory.mktemp(f"warmup-{request.param}")
    return export_dense_model(base, SIDE, request.param, CLASS_NAMES), request.param


def raw_logs(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The file read without artifacts.warmup, as TF Serving's reader sees it."""
    return [
        prediction_log_pb2.PredictionLog.FromString(record)
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]


def test_every_export_carries_predict_logs_for_its_signatures(exported):
    version_dir, channels = exported
    path = version_dir / signatures.METADATA_DIR / warmup.WARMUP_FILE
    assert path.is_file()
    assert not list(path.parent.glob(".*partial"))
    logs = raw_logs(path)
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 4
    requests = [log.predict_log.request for log in logs]
    assert requests == warmup.read_warmup_requests(version_dir)

    batches = [
        (r.model_spec.signature_name, {k: tf.make_ndarray(v).shape for k, v in r.inputs.items()})
        for r in requests
    ]
    assert batches == [
        (signatures.SERVING_DEFAULT, {signatures.IMAGE_BYTES: (1,)}),
        (signatures.SERVING_DEFAULT, {signatures.IMAGE_BYTES: (8,)}),
        (signatures.PREDICT_IMAGES, {signatures.IMAGES: (1, SIDE, SIDE, channels)}),
        (signatures.PREPROCESS, {signatures.IMAGE_BYTES: (1,)}),
    ]
    assert {r.model_spec.name for r in requests} == {"model"}
    loaded = tf.saved_model.load(str(version_dir))
    for request in requests:
        function = loaded.signatures[request.model_spec.signature_name]
        assert set(request.inputs) == set(function.structured_input_signature[1])


def test_replaying_each_request_against_the_saved_model_gives_probabilities(exported):
    version_dir, channels = exported
    loaded = tf.saved_model.load(str(version_dir))
    requests = warmup.read_warmup_requests(version_dir)
    images = tf.make_ndarray(requests[2].inputs[signatures.IMAGES])
    assert images.dtype == np.float32 and not images.any()
    for request in requests:
        function = loaded.signatures[request.model_spec.signature_name]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        batch = next(iter(inputs.values())).shape[0]
        outputs = function(**inputs)
        if request.model_spec.signature_name == signatures.PREPROCESS:
            assert outputs[signatures.IMAGES].shape == (batch, SIDE, SIDE, channels)
            continue
        scores = outputs[signatures.SCORES].numpy()
        assert scores.shape == (batch, len(CLASS_NAMES))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        assert outputs[signatures.CLASSES].numpy()[0].tolist() == [c.encode() for c in CLASS_NAMES]


@pytest.mark.parametrize("image_size,channels", [((16, 16), 3), ((24, 40), 1), ((1, 1), 3)])
def test_warmup_images_are_real_images_the_preprocessing_decodes(image_size, channels):
    images = warmup.warmup_images(image_size, channels)
    assert images == warmup.warmup_images(image_size, channels)  # deterministic bytes
    opened = [Image.open(io.BytesIO(data)) for data in images]
    model_mode, other_mode = ("L", "RGB") if channels == 1 else ("RGB", "L")
    assert [(image.format, image.mode) for image in opened] == [
        ("PNG", model_mode),
        ("JPEG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", other_mode),
    ]
    assert opened[0].size == image_size[::-1]
    if min(image_size) >= 4:  # the other images are of other sizes, so resizing runs
        assert len({image.size for image in opened[1:]} - {opened[0].size}) == 3
    for data, image in zip(images, opened, strict=True):
        rgb = preprocess.decode_rgb(tf.constant(data)).numpy()
        assert rgb.shape == (image.height, image.width, 3)
        pixels = preprocess.decode_and_resize(tf.constant(data), image_size, channels).numpy()
        assert pixels.shape == (*image_size, channels)
        assert 0.0 <= pixels.min() and pixels.max() <= 1.0
        if image.width * image.height > 4:
            assert pixels.std() > 0.05, "a flat image would not exercise much"
    rgba = np.asarray(opened[2])
    assert 0 < rgba[..., 3].min() and rgba[..., 3].max() < 255  # compositing changes pixels


def test_write_takes_batch_sizes_and_the_model_name(tmp_path):
    path = warmup.write_warmup_requests(tmp_path, "digits", (8, 6), 3, batch_sizes=(3, 5, 2))
    assert path == tmp_path / "assets.extra" / "tf_serving_warmup_requests"
    requests = warmup.read_warmup_requests(tmp_path)
    sizes = [len(r.inputs[signatures.IMAGE_BYTES].string_val) for r in requests[:-2]]
    assert sizes == [3, 5, 2]
    five = list(requests[1].inputs[signatures.IMAGE_BYTES].string_val)
    assert five == (warmup.warmup_images((8, 6), 3) * 2)[:5]  # cycled
    assert {r.model_spec.name for r in requests} == {"digits"}
    assert tf.make_ndarray(requests[-2].inputs[signatures.IMAGES]).shape == (1, 8, 6, 3)
    assert requests[-1].model_spec.signature_name == signatures.PREPROCESS


def test_no_warmup_file_reads_as_no_requests(tmp_path):
    assert warmup.read_warmup_requests(tmp_path) == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:-7], id="truncated"),
        pytest.param(lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:], id="bit-flip"),
        pytest.param(lambda data: b"not a TFRecord file at all", id="not-tfrecord"),
    ],
)
def test_a_damaged_file_is_a_clear_error_naming_it(tmp_path, damage):
    path = warmup.write_warmup_requests(tmp_path, "model", (8, 8), 3)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(warmup.InvalidWarmupFile, match="is not a valid TFRecord file") as error:
        warmup.read_warmup_requests(tmp_path)
    assert str(path) in str(error.value) and "re-export" in str(error.value)
    assert "{{" not in str(error.value) and "[Op:" not in str(error.value)


@pytest.mark.parametrize(
    "record,expected",
    [(b"\xff\xff\xff", "is not a PredictionLog"), (b"", "holds no log, expected a predict_log")],
)
def test_records_that_are_not_predict_logs_are_a_clear_error(tmp_path, record, expected):
    path = tmp_path / signatures.METADATA_DIR / warmup.WARMUP_FILE
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(record)
    with pytest.raises(warmup.InvalidWarmupFile, match=expected) as error:
        warmup.read_warmup_requests(tmp_path)
    assert f"record 0 of {path}" in str(error.value)


@pytest.mark.parametrize(
    "batch_sizes,expected",
    [
        ((), r"batch_sizes must be one or more positive ints \(received \(\)\)"),
        ((1, 0), r"\(received \(1, 0\)\)"),
        ((2.5,), r"\(received \(2\.5,\)\)"),
        (
            (1,) * (warmup.MAX_RECORDS - 1),
            "at most 1000 warm-up records; batch_sizes asks for 1001",
        ),
    ],
)
def test_bad_batch_sizes_say_what_was_received(tmp_path, batch_sizes, expected):
    with pytest.raises(ValueError, match=expected):
        warmup.write_warmup_requests(tmp_path, "model", (8, 8), 3, batch_sizes)
    assert not (tmp_path / signatures.METADATA_DIR).exists()


def test_a_missing_version_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; export it first"):
        warmup.write_warmup_requests(tmp_path / "1", "model", (8, 8), 3)
