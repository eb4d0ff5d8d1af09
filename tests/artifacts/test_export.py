"""Train/serve parity: an image through the tf.data eval path and through serving_default agree."""

import io
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from artifacts import export
from configs import loader
from core import signatures
from transforms import dataset, features
from transforms.beam import ingest

CLASSES = ("circle", "square")


def write_tree(root):
    """Images of several formats, modes and sizes, so decode, channel and resize paths all run."""
    rng = np.random.default_rng(7)
    kinds = [
        ("png", "L", (32, 32)),
        ("png", "RGB", (45, 30)),
        ("jpeg", "RGB", (64, 48)),
        ("gif", "P", (20, 28)),
        ("bmp", "RGB", (33, 17)),
        ("png", "RGBA", (40, 40)),
    ]
    for class_name in CLASSES:
        (root / class_name).mkdir(parents=True)
        for index, (fmt, mode, size) in enumerate(kinds):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
            image = Image.fromarray(pixels, "RGB").convert(mode)
            image.save(root / class_name / f"{index}.{fmt}", fmt.upper())


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    write_tree(root / "images")
    cfg = loader.load(
        None,
        [
            f"data.source={root / 'images'}",
            f"data.output_dir={root / 'tfr'}",
            "data.beam_direct_mode=in_memory",
            "data.split={train: 0.01, val: 0.0, test: 0.99}",
        ],
    )
    result = ingest.run(cfg.data)
    return root, result


def peaky_model(input_shape):
    """Large random weights make the softmax sensitive to small pixel differences."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(input_shape)
    flat = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(
        len(CLASSES), kernel_initializer=keras.initializers.RandomNormal(stddev=0.5)
    )(flat)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


@pytest.mark.beam
@pytest.mark.parametrize("image_size,channels", [((32, 32), 1), ((24, 40), 3), ((64, 64), 3)])
def test_signature_matches_the_tf_data_eval_path(ingested, tmp_path, image_size, channels):
    root, result = ingested
    cfg = loader.load(
        None,
        [f"data.image_size={list(image_size)}", f"data.channels={channels}", "data.batch_size=4"],
    )
    model = peaky_model((*image_size, channels))
    eval_scores, sources = [], []
    records = tf.data.TFRecordDataset(dataset.shard_files(result.path, "test"))
    for serialized in records:
        sources.append(features.parse(serialized)[features.SOURCE].numpy().decode())
    for images, _ in dataset.build_dataset(result.path, "test", cfg.data, training=False):
        eval_scores.append(model(images, training=False).numpy())
    eval_scores = np.concatenate(eval_scores)
    assert len(sources) == len(eval_scores) > 6

    version_dir = export.export_saved_model(
        model, tmp_path, 1, image_size, channels, list(CLASSES), {"dataset_version": result.version}
    )
    serve = tf.saved_model.load(str(version_dir)).signatures[signatures.SERVING_DEFAULT]
    raw = tf.constant([(root / "images" / source).read_bytes() for source in sources])
    served = serve(**{signatures.IMAGE_BYTES: raw})

    np.testing.assert_allclose(served[signatures.SCORES].numpy(), eval_scores, atol=1e-5)
    assert served[signatures.CLASSES].numpy()[0].tolist() == [c.encode() for c in CLASSES]
    # The model is sensitive enough for this test to catch a different resize.
    if image_size != (32, 32):
        other = tf.stack(
            [
                tf.image.resize(
                    tf.image.convert_image_dtype(
                        tf.io.decode_image(b, channels=channels, expand_animations=False),
                        tf.float32,
                    ),
                    image_size,
                    antialias=False,
                    method="nearest",
                )
                for b in raw
            ]
        )
        assert np.abs(model(other).numpy() - eval_scores).max() > 1e-3


def test_export_carries_metadata_and_float_signature(tmp_path):
    model = peaky_model((8, 8, 3))
    version_dir = export.export_saved_model(
        model, tmp_path, 3, (8, 8), 3, list(CLASSES), {"dataset_version": "abc", "config": {"x": 1}}
    )
    assert version_dir == tmp_path / "3"
    assert not list(tmp_path.glob(".tmp-*"))
    metadata = json.loads(
        (version_dir / signatures.METADATA_DIR / signatures.METADATA_FILE).read_text()
    )
    assert metadata == {"class_names": list(CLASSES), "dataset_version": "abc", "config": {"x": 1}}
    assert export.read_metadata(version_dir) == metadata

    loaded = tf.saved_model.load(str(version_dir))
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    by_floats = loaded.signatures[signatures.PREDICT_IMAGES](**{signatures.IMAGES: images})
    np.testing.assert_allclose(
        by_floats[signatures.SCORES].numpy(), model(images).numpy(), atol=1e-6
    )

    png = io.BytesIO()
    Image.fromarray((images[0] * 255).astype(np.uint8)).save(png, "PNG")
    by_bytes = loaded.signatures[signatures.SERVING_DEFAULT](
        **{signatures.IMAGE_BYTES: tf.constant([png.getvalue()])}
    )
    assert by_bytes[signatures.SCORES].shape == (1, len(CLASSES))
    with pytest.raises(FileExistsError):
        export.export_saved_model(model, tmp_path, 3, (8, 8), 3, list(CLASSES), {})
