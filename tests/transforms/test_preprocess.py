"""transforms.preprocess: how data.resize (crop, stretch) and data.crop_fraction fit an image to
image_size. Train/serve parity of these modes: tests/artifacts/test_export_resize.py."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

from configs import schema
from tests.transforms import photos
from transforms import preprocess


def png(pixels: np.ndarray) -> bytes:
    return tf.io.encode_png(pixels).numpy()


def fit(data: bytes, size, resize="crop", crop_fraction=1.0, channels=3) -> np.ndarray:
    image = preprocess.decode_and_resize(
        tf.constant(data), size, channels, resize=resize, crop_fraction=crop_fraction
    )
    return image.numpy()


def pil_centre_box(pixels: np.ndarray, size, crop_fraction: float) -> np.ndarray:
    """The reference, computed by Pillow in float32: its bilinear resize (a triangle filter
    widened when shrinking, as timm's evaluation uses) of the centre box with the target's
    aspect ratio that spans crop_fraction of the limiting side."""
    height, width = pixels.shape[:2]
    scale = max(size[0] / (crop_fraction * height), size[1] / (crop_fraction * width))
    box_height, box_width = size[0] / scale, size[1] / scale
    box = (
        (width - box_width) / 2,
        (height - box_height) / 2,
        (width + box_width) / 2,
        (height + box_height) / 2,
    )
    channels = [
        Image.fromarray(pixels[..., c].astype(np.float32), "F").resize(
            (size[1], size[0]), Image.Resampling.BILINEAR, box=box
        )
        for c in range(3)
    ]
    return np.stack([np.asarray(c) for c in channels], axis=-1) / 255.0


def photo(shape: str) -> np.ndarray:
    china, _ = photos.sample_photos()
    return {
        "landscape": china,
        "portrait": np.ascontiguousarray(china[:, ::-1].transpose(1, 0, 2)),
        "strip": china[200:240, 40:600],  # 14:1, the other axis limits every target
    }[shape]


@pytest.mark.parametrize("shape", ["landscape", "portrait", "strip"])
@pytest.mark.parametrize(
    ("size", "crop_fraction"),
    [((224, 224), 1.0), ((96, 96), 0.875), ((60, 100), 0.9), ((100, 60), 1.0), ((40, 40), 0.5)],
)
def test_crop_is_pils_bilinear_resize_of_the_centre_box(shape, size, crop_fraction):
    """Geometry (scale, centring, aspect ratio) and filter at once, against an independent
    implementation; a whole pixel of offset or a plain bilinear shrink is off by > 0.05."""
    pixels = photo(shape)
    fitted = fit(png(pixels), size, crop_fraction=crop_fraction)
    assert fitted.shape == (*size, 3)
    np.testing.assert_allclose(fitted, pil_centre_box(pixels, size, crop_fraction), atol=2e-4)


def disc_on_red_sides() -> bytes:
    """300x100: a black disc on a white middle square, red squares either side."""
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 0, 199, 99), fill=(255, 255, 255))
    draw.ellipse((110, 10, 189, 89), fill=(0, 0, 0))
    return png(np.asarray(image))


def extent(mask: np.ndarray, axis: int) -> int:
    return int(np.count_nonzero(mask.any(axis=axis)))


def test_crop_keeps_the_aspect_ratio_and_the_centre_where_stretch_distorts():
    data = disc_on_red_sides()
    cropped, stretched = fit(data, (40, 40)), fit(data, (40, 40), resize="stretch")
    dark = cropped.max(axis=-1) < 0.5
    assert abs(extent(dark, axis=0) - extent(dark, axis=1)) <= 1  # still round
    assert np.count_nonzero((cropped[..., 0] > 0.9) & (cropped[..., 1] < 0.1)) == 0  # no red
    dark = stretched.max(axis=-1) < 0.5
    assert extent(dark, axis=1) > 2.5 * extent(dark, axis=0)  # a third as wide as tall
    assert np.count_nonzero((stretched[..., 0] > 0.9) & (stretched[..., 1] < 0.1)) > 400


def test_crop_fraction_keeps_only_the_centre():
    """200x200, a 25-pixel red border around green: 0.7 of the side sees only green, the whole
    image (1.0) its red border too."""
    pixels = np.zeros((200, 200, 3), np.uint8)
    pixels[..., 0] = 255
    pixels[25:175, 25:175] = (0, 255, 0)
    centre = fit(png(pixels), (32, 32), crop_fraction=0.7)
    whole = fit(png(pixels), (32, 32), crop_fraction=1.0)
    np.testing.assert_allclose(centre, np.broadcast_to([0.0, 1.0, 0.0], centre.shape), atol=1e-6)
    assert whole[0, 0, 0] > 0.99 and whole[16, 16, 1] > 0.99


def test_an_image_of_the_model_size_keeps_its_pixels():
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), np.uint8)
    expected = tf.image.convert_image_dtype(pixels, tf.float32).numpy()
    for resize in preprocess.RESIZE_MODES:
        np.testing.assert_array_equal(fit(png(pixels), (24, 40), resize=resize), expected)


def test_grayscale_crop_is_the_grey_of_the_colour_crop():
    data = png(photo("landscape"))
    colour = fit(data, (48, 64), crop_fraction=0.875)
    gray = fit(data, (48, 64), crop_fraction=0.875, channels=1)
    assert gray.shape == (48, 64, 1)
    np.testing.assert_allclose(gray, tf.image.rgb_to_grayscale(colour).numpy(), atol=1e-6)


def test_a_panorama_costs_no_more_than_its_window():
    """A 1x10000 strip must not be scaled to 224x2240000 before cropping (6 GB of floats)."""
    pixels = np.random.default_rng(1).integers(0, 256, (1, 10000, 3), np.uint8)
    assert fit(png(pixels), (224, 224)).shape == (224, 224, 3)


@pytest.mark.parametrize("resize", preprocess.RESIZE_MODES)
def test_decode_batch_matches_single_decodes(resize):
    china, flower = photos.sample_photos()
    blobs = [png(china[:200, :300]), png(flower[:300, :120]), png(china[:50, :50])]
    batch = preprocess.decode_batch(tf.constant(blobs), (32, 48), 3, resize=resize).numpy()
    for blob, image in zip(blobs, batch, strict=True):
        np.testing.assert_array_equal(fit(blob, (32, 48), resize=resize), image)
    other = preprocess.decode_batch(tf.constant(blobs[:1]), (32, 48), 3, resize="crop")
    assert (resize == "crop") is np.array_equal(other.numpy()[0], batch[0])


def test_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="resize must be one of"):
        fit(png(photo("landscape")), (8, 8), resize="strech")


def test_defaults_are_the_schemas():
    data = schema.DataConfig()
    assert preprocess.DEFAULT_RESIZE == data.resize
    assert preprocess.DEFAULT_CROP_FRACTION == data.crop_fraction
    assert preprocess.DEFAULT_BACKGROUND == data.background
    assert set(preprocess.RESIZE_MODES) == set(
        schema.DataConfig.model_fields["resize"].annotation.__args__
    )
