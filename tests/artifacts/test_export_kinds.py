"""Train/serve parity for every kind of image ingest accepts, from the original file's bytes."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from artifacts import export
from configs import loader
from core import signatures
from tests.artifacts.test_export import CLASSES, peaky_model
from tests.conftest import encode, noise_image
from tests.transforms import shards
from tests.transforms.test_images import animated_gif, exif_orientation_block
from transforms import dataset, features, preprocess

IMAGE_SIZE = (24, 40)
SIXTEEN_BIT = np.arange(30 * 22, dtype=np.uint16).reshape(22, 30) * 97

# One file of each kind: name -> bytes. Sizes differ so every resize path runs.
KINDS = {
    "jpeg.jpg": encode(noise_image(1, (30, 20)), "JPEG", quality=90),
    "png.png": encode(noise_image(2, (45, 30)), "PNG"),
    "animated.gif": animated_gif(),
    "bmp.bmp": encode(noise_image(3, (33, 17)), "BMP"),
    "webp.webp": encode(noise_image(4, (26, 26)), "WEBP", lossless=True),
    "gray.png": encode(noise_image(5, (32, 32), "L"), "PNG"),
    "rgba.png": encode(noise_image(6, (40, 40), "RGBA"), "PNG"),
    "cmyk.jpg": encode(noise_image(7, (28, 21), "CMYK"), "JPEG"),
    "16-bit.png": encode(Image.fromarray(SIXTEEN_BIT), "PNG"),
    "palette-transparent.png": encode(noise_image(8, (24, 18), "P"), "PNG", transparency=0),
    "exif-6.jpg": encode(noise_image(9, (36, 20)), "JPEG", exif=exif_orientation_block(6)),
}
# Ingest must store these re-encoded, so parity also covers its normalisation.
REWRITTEN = {
    "animated.gif",
    "bmp.bmp",
    "webp.webp",
    "rgba.png",
    "16-bit.png",
    "palette-transparent.png",
    "exif-6.jpg",
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    names = sorted(KINDS)
    for index, name in enumerate(names):
        folder = root / "images" / CLASSES[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(KINDS[name])
    result = shards.run(
        root / "images", root / "out", split={"train": 0.01, "val": 0.0, "test": 0.99}
    )
    shards.assert_report(result, seen=len(KINDS), written=len(KINDS), duplicates=0, quarantined=0)
    return result


def decode(data: bytes) -> np.ndarray:
    return preprocess.decode_rgb(tf.constant(data)).numpy()


def test_stored_bytes_decode_to_the_pixels_of_the_original(ingested):
    stored = shards.read(ingested.path)
    assert {source.split("/")[1] for source in stored} == set(KINDS)
    for source, example in stored.items():
        original = KINDS[source.split("/")[1]]
        assert (example.image != original) is (source.split("/")[1] in REWRITTEN), source
        np.testing.assert_array_equal(decode(example.image), decode(original), err_msg=source)


@pytest.mark.slow
def test_serving_the_original_bytes_matches_the_tf_data_eval_path(ingested, tmp_path):
    cfg = loader.load(None, [f"data.image_size={list(IMAGE_SIZE)}", "data.batch_size=4"]).data
    model = peaky_model((*IMAGE_SIZE, 3))
    version_dir = export.export_saved_model(model, tmp_path, 1, IMAGE_SIZE, 3, list(CLASSES), {})
    serve = tf.saved_model.load(str(version_dir)).signatures[signatures.SERVING_DEFAULT]
    served_kinds = []
    for split in ("train", "test"):
        records = tf.data.TFRecordDataset(dataset.shard_files(ingested.path, split))
        names = [features.parse(r)[features.SOURCE].numpy().decode().split("/")[1] for r in records]
        batches = dataset.build_dataset(ingested.path, split, cfg, training=False)
        for index, (images, _) in enumerate(batches):
            # Served in the same batches: a matmul's rounding may depend on the batch size.
            batch = names[index * cfg.batch_size : (index + 1) * cfg.batch_size]
            originals = tf.constant([KINDS[name] for name in batch])
            served = serve(**{signatures.IMAGE_BYTES: originals})[signatures.SCORES].numpy()
            evaluated = model(images, training=False).numpy()
            np.testing.assert_allclose(served, evaluated, rtol=0, atol=1e-6, err_msg=str(batch))
            served_kinds += batch
    assert sorted(served_kinds) == sorted(KINDS)

    # One grey level on every pixel moves the scores far more than the tolerance.
    first = dataset.build_dataset(ingested.path, "test", cfg, training=False).take(1)
    images = next(iter(first))[0]
    shifted = model(tf.clip_by_value(images + 1 / 255, 0, 1), training=False).numpy()
    assert np.abs(shifted - model(images, training=False).numpy()).max() > 1e-4
