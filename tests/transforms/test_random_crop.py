"""transforms.random_crop: the random box, and that its JPEG fast path decodes the pixels a full
decode would give. The training pipeline's use of it: tests/transforms/test_dataset.py."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from configs import schema
from tests.conftest import encode
from tests.transforms import photos
from tests.transforms.test_images import exif_orientation_block
from transforms import images, preprocess, random_crop

INCEPTION = {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3), "attempts": 10}
SIZE = (32, 40)


@pytest.fixture(scope="module")
def flower() -> Image.Image:
    # 333x211: odd sides, so crops meet partial chroma blocks at the right and bottom edges.
    return Image.fromarray(photos.sample_photos()[1]).crop((3, 5, 336, 216))


def jpegs(image: Image.Image) -> dict[str, bytes]:
    """Every chroma layout decode_and_crop_jpeg treats differently."""
    return {
        "4:2:0": encode(image, "JPEG", quality=90),
        "4:2:2": encode(image, "JPEG", quality=90, subsampling=1),
        "4:4:4": encode(image, "JPEG", quality=90, subsampling=0),
        "progressive": encode(image, "JPEG", quality=90, progressive=True),
        "gray": encode(image.convert("L"), "JPEG"),
        "cmyk": encode(image.convert("CMYK"), "JPEG"),
        "tensorflow": tf.io.encode_jpeg(np.asarray(image), quality=95).numpy(),
    }


def boxes(height: int, width: int, count: int) -> list[tuple[int, int, int, int]]:
    """Random boxes, a third starting on a 16-pixel block edge, some touching the image edges."""
    rng = np.random.default_rng(0)
    found = [(0, 0, height, width), (height - 7, width - 9, 7, 9)]
    while len(found) < count:
        h, w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        if len(found) % 3 == 0:
            x = x // 16 * 16
        found.append((int(y), int(x), int(h), int(w)))
    return found


@pytest.mark.parametrize("layout", list(jpegs(Image.new("RGB", (1, 1)))))
def test_jpeg_window_is_the_window_of_the_full_decode(flower, layout):
    """Exact: without the one-pixel margin, 4:2:0 and 4:2:2 files differ by up to 20 levels
    in the box's first or last column."""
    data = tf.constant(jpegs(flower)[layout])
    full = tf.io.decode_jpeg(data, channels=3).numpy()
    shape = tf.io.extract_jpeg_shape(data)[:2]
    for y, x, h, w in boxes(*full.shape[:2], count=40):
        window = random_crop.decode_jpeg_window(
            data, shape, tf.constant([y, x]), tf.constant([h, w])
        )
        np.testing.assert_array_equal(window.numpy(), full[y : y + h, x : x + w], f"{(y, x, h, w)}")


def crop(data: bytes, seed=(1, 2), channels=3, **settings):
    settings = INCEPTION | settings
    image = random_crop.decode_random_crop(
        tf.constant(data), tf.constant(seed, tf.int64), SIZE, channels, **settings
    )
    return image.numpy()


def lossless(pixels: np.ndarray) -> bytes:
    """A PNG of the pixels: decoded whole, then cropped (the path other formats take)."""
    return tf.io.encode_png(pixels).numpy()


def upright(data: bytes, background=(255, 255, 255)) -> np.ndarray:
    return preprocess.decode_rgb(tf.constant(data), background).numpy()


@pytest.mark.parametrize("layout", ["4:2:0", "gray", "cmyk"])
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_fast_path_equals_decoding_whole_then_cropping(flower, layout, channels):
    data = jpegs(flower)[layout]
    for seed in [(1, 2), (3, 4), (5, 6)]:
        fast = crop(data, seed, channels)
        assert fast.shape == (*SIZE, channels)
        np.testing.assert_array_equal(fast, crop(lossless(upright(data)), seed, channels))


def test_a_turned_jpeg_is_cropped_upright_once_ingested(flower):
    """EXIF orientation 6: ingest stores the upright (portrait) pixels, so the crop reader, which
    reads no EXIF tag, draws the box in the upright image and cuts it from it."""
    data = encode(flower, "JPEG", quality=90, exif=exif_orientation_block(6))
    pixels = upright(data)
    assert pixels.shape[0] > pixels.shape[1]
    stored = images.Preparer(schema.DataConfig()).prepare(data)
    assert stored.rewritten and (stored.height, stored.width) == pixels.shape[:2]
    for seed in [(1, 2), (3, 4)]:
        np.testing.assert_array_equal(crop(stored.data, seed), crop(lossless(pixels), seed))
    # The tag is what the stored copy spares the reader: the original file crops turned.
    assert crop(data).shape == crop(stored.data).shape
    assert not np.array_equal(crop(data), crop(stored.data))


def test_transparent_pixels_take_the_background_once_ingested(flower):
    """Shards hold no transparency: ingest composites it on data.background first."""
    rgba = np.asarray(flower.convert("RGBA")).copy()
    rgba[::2, :, 3] = 0
    data, background = lossless(rgba), (10, 200, 30)
    stored = images.Preparer(schema.DataConfig(background=background)).prepare(data)
    assert stored.rewritten
    np.testing.assert_array_equal(crop(stored.data), crop(lossless(upright(data, background))))
    assert not np.array_equal(crop(stored.data), crop(lossless(upright(data))))


def test_same_seed_same_crop_other_seed_other_crop(flower):
    data = jpegs(flower)["4:2:0"]
    first = crop(data, (7, 1))
    np.testing.assert_array_equal(first, crop(data, (7, 1)))
    assert not np.array_equal(first, crop(data, (7, 2)))
    assert not np.array_equal(first, crop(data, (8, 1)))


def sample(shape, seed, **settings) -> tuple[np.ndarray, np.ndarray]:
    begin, size = random_crop.sample_box(
        tf.constant(shape), tf.constant(seed, tf.int64), **(INCEPTION | settings)
    )
    return begin.numpy(), size.numpy()


def test_boxes_respect_scale_and_ratio_and_spread_over_them():
    height, width = shape = (427, 640)
    scale, ratio = (0.2, 0.6), (0.5, 2.0)
    areas, ratios, centres = [], [], set()
    for seed in range(300):
        begin, size = sample(shape, (seed, 0), scale=scale, ratio=ratio)
        assert (begin >= 0).all() and (begin + size <= shape).all()
        area = size[0] * size[1] / (height * width)
        aspect = size[1] / size[0]  # width / height
        assert scale[0] <= area <= scale[1], (begin, size)
        # The width is the height times the drawn ratio, rounded to a whole pixel.
        assert ratio[0] - 0.5 / size[0] <= aspect <= ratio[1] + 0.5 / size[0], (begin, size)
        areas.append(area)
        ratios.append(aspect)
        centres.add(tuple((begin + size // 2) // 40))
    assert min(areas) < 0.25 and max(areas) > 0.55
    assert min(ratios) < 0.6 and max(ratios) > 1.7
    assert len(centres) > 20  # boxes sit all over the image, not in one place


def test_without_a_box_that_fits_the_whole_image_is_used():
    """A 10x1000 strip has no 3:4..4:3 box of half its area."""
    begin, size = sample((10, 1000), (1, 2), scale=(0.5, 1.0))
    assert begin.tolist() == [0, 0] and size.tolist() == [10, 1000]


def test_output_is_the_crop_stretched_to_the_model_size(flower):
    """A box with the whole image: the result is the plain stretch of it (resized from the uint8
    pixels, then scaled to [0, 1]: float rounding apart, the same numbers)."""
    data = jpegs(flower)["4:4:4"]
    whole = crop(data, scale=(1.0, 1.0), ratio=(333 / 211, 333 / 211))
    expected = preprocess.decode_and_resize(tf.constant(data), SIZE, 3, resize="stretch")
    np.testing.assert_allclose(whole, expected.numpy(), atol=1e-6)
