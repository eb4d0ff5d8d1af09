"""Train/serve parity of every resize mode on photos: the tf.data evaluation path, the export's
preprocess_images signature and the input serving_default feeds the model are the same pixels."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from artifacts import export
from core import signatures
from tests.conftest import encode
from tests.transforms import photos, shards
from transforms import dataset, features, preprocess

CLASSES = ["china", "flower"]


def originals() -> dict[str, bytes]:
    """Crops of the photos as files: landscape and portrait, JPEG and PNG, one transparent."""
    china, flower = (Image.fromarray(p) for p in photos.sample_photos())
    rgba = flower.crop((200, 50, 330, 160)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    return {
        "china/landscape.jpg": encode(china.crop((100, 80, 400, 280)), "JPEG", quality=90),
        "china/portrait.png": encode(china.crop((300, 20, 390, 300)), "PNG"),
        "china/square.jpg": encode(china.crop((0, 0, 150, 150)), "JPEG", quality=90),
        "flower/portrait.jpg": encode(flower.crop((250, 0, 400, 427)), "JPEG", quality=90),
        "flower/panorama.png": encode(flower.crop((0, 300, 640, 380)), "PNG"),
        "flower/transparent.png": encode(rgba, "PNG"),
    }


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("resize")
    for name, data in originals().items():
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / name).write_bytes(data)
    split = {"train": 0.01, "val": 0.0, "test": 0.99}
    result = shards.run(root / "images", root / "out", split=split)
    shards.assert_report(result, seen=6, written=6, duplicates=0, quarantined=0)
    return result


def pixels_model(shape) -> keras.Model:
    """Scores = the flattened input: serving_default's scores are the pixels it fed the model."""
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Flatten()(inputs))


MODES = {
    "crop": ("crop", 1.0, (24, 40), 3),
    "crop-0.875-portrait-size": ("crop", 0.875, (40, 24), 3),
    "crop-0.7-gray": ("crop", 0.7, (32, 32), 1),
    "stretch": ("stretch", 1.0, (24, 40), 3),
}


@pytest.mark.beam
@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_tf_data_preprocess_signature_and_served_model_input_agree(ingested, tmp_path, mode):
    resize, crop_fraction, image_size, channels = MODES[mode]
    cfg = shards.data_config(
        "unused",
        ingested.path.parent,
        image_size=image_size,
        channels=channels,
        resize=resize,
        crop_fraction=crop_fraction,
        batch_size=4,
    )
    sources, evaluated = [], []
    for split in ("train", "test"):  # ingest keeps a training example of each class
        records = tf.data.TFRecordDataset(dataset.shard_files(ingested.path, split))
        sources += [features.parse(r)[features.SOURCE].numpy().decode() for r in records]
        evaluated += [
            images for images, _ in dataset.build_dataset(ingested.path, split, cfg, False)
        ]
    evaluated = np.concatenate(evaluated)
    assert sorted(sources) == sorted(originals()) and len(evaluated) == len(sources)

    version_dir = export.export_saved_model(
        pixels_model((*image_size, channels)),
        tmp_path,
        1,
        image_size,
        channels,
        CLASSES,
        {},
        resize=resize,
        crop_fraction=crop_fraction,
    )
    loaded = tf.saved_model.load(str(version_dir)).signatures
    request = {signatures.IMAGE_BYTES: tf.constant([originals()[s] for s in sources])}
    preprocessed = loaded[signatures.PREPROCESS](**request)[signatures.IMAGES].numpy()
    served = loaded[signatures.SERVING_DEFAULT](**request)[signatures.SCORES].numpy()
    np.testing.assert_array_equal(preprocessed, evaluated)
    np.testing.assert_array_equal(served.reshape(evaluated.shape), evaluated)

    # Each setting shows in the pixels, so an export that ignored one would fail above.
    others = [("stretch" if resize == "crop" else "crop", crop_fraction)]
    if crop_fraction != 1.0:
        others.append((resize, 1.0))
    for other_resize, other_fraction in others:
        other = preprocess.decode_batch(
            request[signatures.IMAGE_BYTES],
            image_size,
            channels,
            resize=other_resize,
            crop_fraction=other_fraction,
        )
        assert np.abs(other.numpy() - evaluated).max() > 0.1, (other_resize, other_fraction)
