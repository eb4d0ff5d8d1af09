"""transforms.images: which files ingest accepts, how it normalises them, why it refuses others."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from configs import loader, schema
from tests.conftest import encode, noise_image
from tests.transforms import photos
from transforms import exif, images, pillow_formats, preprocess

MAX_PIXELS = 10_000


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data is a few empty bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def exif_orientation_block(orientation: int, endian: str = "<") -> bytes:
    order = b"II*\x00" if endian == "<" else b"MM\x00*"
    return (
        b"Exif\x00\x00"
        + order
        + struct.pack(endian + "IH", 8, 2)
        + struct.pack(endian + "HHI", 0x010F, 2, 4)
        + b"cam\x00"
        + struct.pack(endian + "HHIH", 0x0112, 3, 1, orientation)
        + b"\x00\x00"
        + struct.pack(endian + "I", 0)
    )


def preparer(*overrides: str) -> images.Preparer:
    return images.Preparer(loader.load(None, [f"data.max_pixels={MAX_PIXELS}", *overrides]).data)


@pytest.fixture(scope="module")
def default_preparer() -> images.Preparer:
    return preparer()


def served_pixels(data: bytes, background=(255, 255, 255)) -> np.ndarray:
    """What the exported serving graph computes from the original bytes."""
    return preprocess.decode_rgb(tf.constant(data), background).numpy()


def animated_gif() -> bytes:
    frames = [noise_image(seed, (12, 10)).convert("P") for seed in (1, 2, 3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return buffer.getvalue()


# One file of every kind ingest must handle: (id, bytes, stored as-is?).
KINDS = [
    ("jpeg-rgb", encode(noise_image(0), "JPEG", quality=90), True),
    ("jpeg-gray", encode(noise_image(0, mode="L"), "JPEG"), True),
    ("jpeg-cmyk", encode(noise_image(0, mode="CMYK"), "JPEG"), True),
    ("jpeg-exif-6", encode(noise_image(0), "JPEG", exif=exif_orientation_block(6)), False),
    (
        "jpeg-exif-3-big-endian",
        encode(noise_image(0), "JPEG", exif=exif_orientation_block(3, ">")),
        False,
    ),
    ("png-rgb", encode(noise_image(1), "PNG"), True),
    ("png-gray", encode(noise_image(1, mode="L"), "PNG"), True),
    ("png-rgba", encode(noise_image(1, mode="RGBA"), "PNG"), False),
    ("png-gray-alpha", encode(noise_image(1, mode="RGBA").convert("LA"), "PNG"), False),
    ("png-palette", encode(noise_image(1, mode="P"), "PNG"), True),
    ("png-palette-transparent", encode(noise_image(1, mode="P"), "PNG", transparency=0), False),
    (
        "png-16-bit",
        encode(Image.fromarray(np.arange(320, dtype=np.uint16).reshape(16, 20) * 200), "PNG"),
        False,
    ),
    ("gif-animated", animated_gif(), False),
    ("bmp-rgb", encode(noise_image(2), "BMP"), False),
    ("bmp-1-bit", encode(noise_image(2, mode="1"), "BMP"), False),
    ("bmp-palette", encode(noise_image(2, mode="P"), "BMP"), False),
    ("webp-rgb", encode(noise_image(3), "WEBP", lossless=True), False),
    ("webp-rgba", encode(noise_image(3, mode="RGBA"), "WEBP", lossless=True), False),
    ("tiff", encode(noise_image(4), "TIFF"), False),
]


@pytest.mark.parametrize(("data", "kept"), [k[1:] for k in KINDS], ids=[k[0] for k in KINDS])
@pytest.mark.parametrize("store_format", ["png", "jpeg"])
def test_stored_bytes_decode_in_one_op_to_their_pixels(data, kept, store_format):
    """The shard decoders (preprocess.decode_stored) read no EXIF tag and composite nothing:
    ingest must store only upright JPEGs and PNGs without transparency."""
    preparer = images.Preparer(schema.DataConfig(store={"format": store_format}))
    stored = tf.constant(preparer.prepare(data).data)
    if preprocess.is_jpeg(stored):
        assert int(exif.orientation(stored)) == 1
    np.testing.assert_array_equal(
        preprocess.decode_stored(stored).numpy(), preprocess.decode_rgb(stored).numpy()
    )


@pytest.mark.parametrize(("data", "kept"), [k[1:] for k in KINDS], ids=[k[0] for k in KINDS])
def test_the_formats_pillow_converts_are_told_by_their_first_bytes(data, kept):
    with Image.open(io.BytesIO(data)) as image:
        only_pillow = image.format == "TIFF" or (image.format == "BMP" and image.mode in "1P")
    assert pillow_formats.needs_pillow(data) is only_pillow


def test_an_os2_bmp_header_is_read_at_its_own_offsets():
    core_header = b"BM" + bytes(12) + (12).to_bytes(4, "little") + bytes(6)
    assert pillow_formats.needs_pillow(core_header + (8).to_bytes(2, "little") + bytes(8))
    assert not pillow_formats.needs_pillow(core_header + (24).to_bytes(2, "little") + bytes(8))


@pytest.mark.parametrize(("data", "kept"), [k[1:] for k in KINDS], ids=[k[0] for k in KINDS])
def test_stored_pixels_equal_what_serving_decodes(default_preparer, data, kept):
    prepared = default_preparer.prepare(data)
    assert prepared.rewritten is not kept
    assert (prepared.data == data) is kept
    stored = served_pixels(prepared.data)
    assert stored.shape == (prepared.height, prepared.width, 3)
    if images.read_header(data, MAX_PIXELS).tf_decodable:
        # Formats TensorFlow reads: the serving graph on the original gives the stored pixels.
        np.testing.assert_array_equal(stored, served_pixels(data))
    else:
        # Formats only Pillow reads (serving converts them the same way): Pillow's pixels.
        expected = Image.open(io.BytesIO(data)).convert("RGBA")
        white = Image.new("RGBA", expected.size, (255, 255, 255, 255))
        np.testing.assert_array_equal(
            stored, np.asarray(Image.alpha_composite(white, expected))[..., :3]
        )


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("endian", ["<", ">"])
def test_exif_orientation_matches_pillow(orientation, endian):
    data = encode(
        noise_image(5, (9, 6)),
        "JPEG",
        quality=100,
        exif=exif_orientation_block(orientation, endian),
    )
    plain = tf.io.decode_jpeg(data, channels=3).numpy()
    # Pillow's geometry applied to TensorFlow's pixels: JPEG decoders may differ by a level.
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    expected = Image.fromarray(plain)
    transposes = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    if orientation in transposes:
        expected = expected.transpose(transposes[orientation])
    got = served_pixels(data)
    assert got.shape[:2] == (upright.height, upright.width)
    np.testing.assert_array_equal(got, np.asarray(expected))


def test_transparent_pixels_take_the_configured_background():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :3, 3] = 255  # left half opaque grey, right half fully transparent
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    pixels = preparer("data.background=[10,20,30]").prepare(data)
    stored = served_pixels(pixels.data, (10, 20, 30))
    assert (stored[:, :3] == 200).all()
    assert (stored[:, 3:] == [10, 20, 30]).all()
    np.testing.assert_array_equal(stored, served_pixels(data, (10, 20, 30)))


def test_animated_gif_keeps_the_first_frame(default_preparer):
    first = np.asarray(Image.open(io.BytesIO(animated_gif())).convert("RGB"))
    stored = served_pixels(default_preparer.prepare(animated_gif()).data)
    np.testing.assert_array_equal(stored, first)


def test_gray_images_are_stored_with_one_channel(default_preparer):
    prepared = default_preparer.prepare(encode(noise_image(1, mode="LA"), "PNG"))
    assert Image.open(io.BytesIO(prepared.data)).mode == "L"


def test_max_side_downscales_and_keeps_aspect():
    data = encode(noise_image(6, (80, 40)), "PNG")
    prepared = preparer("data.store.max_side=20").prepare(data)
    assert (prepared.width, prepared.height) == (20, 10)
    assert (prepared.original_width, prepared.original_height) == (80, 40)
    assert prepared.rewritten


def test_jpeg_store_format_encodes_rewritten_images_as_jpeg():
    prepared = preparer("data.store.format=jpeg").prepare(
        encode(noise_image(7, mode="RGBA"), "PNG")
    )
    assert prepared.format == "jpeg" and prepared.data[:3] == b"\xff\xd8\xff"


# Measured on photos.large_photo() (1500x1000, JPEG q92) stored at max_side 512 (341x512), in
# 0-255 levels, crop_fraction 1.0 / 0.875: png 96 px mean 0.34 / 0.40, max 6.6 / 7.5; png 224 px
# 0.93 / 1.18, max 21.5 / 20.3; jpeg (q95) 96 px 1.33 / 1.44, max 10.9 / 14.1; jpeg 224 px
# 2.27 / 2.54, max 31.3 / 31.3. The bounds sit just above. Scale and centre rounded to whole
# pixels (timm) shift the view by a pixel between the two: mean 4.5-5.5, max 120-130 at 224 px.
STORED_PHOTO_BOUNDS = {
    ("png", 96): (0.5, 9),
    ("png", 224): (1.3, 24),
    ("jpeg", 96): (1.6, 16),
    ("jpeg", 224): (2.8, 35),
}


@pytest.mark.parametrize(("store_format", "image_size"), list(STORED_PHOTO_BOUNDS))
def test_a_photo_stored_downscaled_gives_the_model_what_its_original_gives(
    store_format, image_size
):
    """data.store.max_side / format: training decodes the stored copy, serving the original
    file a client sends; crop mode's model input must agree within the bounds above."""
    original = encode(Image.fromarray(photos.large_photo()), "JPEG", quality=92)
    cfg = loader.load(None, ["data.store.max_side=512", f"data.store.format={store_format}"])
    prepared = images.Preparer(cfg.data).prepare(original)
    assert (prepared.height, prepared.width, prepared.format) == (341, 512, store_format)
    mean_bound, max_bound = STORED_PHOTO_BOUNDS[store_format, image_size]
    for crop_fraction in (1.0, 0.875):
        stored, served = (
            preprocess.decode_and_resize(
                tf.constant(data), (image_size, image_size), 3, crop_fraction=crop_fraction
            ).numpy()
            for data in (prepared.data, original)
        )
        levels = np.abs(stored - served) * 255
        assert levels.mean() < mean_bound and levels.max() < max_bound, (
            crop_fraction,
            levels.mean(),
            levels.max(),
        )


def test_statistics_describe_the_stored_pixels(default_preparer):
    solid = encode(Image.new("RGB", (8, 8), (255, 0, 51)), "PNG")
    prepared = default_preparer.prepare(solid)
    np.testing.assert_allclose(prepared.channel_mean, (1.0, 0.0, 0.2), atol=1e-9)
    np.testing.assert_allclose(prepared.channel_std, (0.0, 0.0, 0.0), atol=1e-6)
    assert prepared.original_mode == "RGB" and prepared.original_format == "png"


def test_rejects_empty_file(default_preparer):
    with pytest.raises(images.InvalidImage, match=r"empty file \(0 bytes\)"):
        default_preparer.prepare(b"")


def test_rejects_text_file(default_preparer):
    with pytest.raises(images.InvalidImage, match="not an image"):
        default_preparer.prepare(b"label,file\ncat,cat.png\n")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_rejects_truncated_image(default_preparer, image_format):
    data = encode(noise_image(0, (40, 30)), image_format)
    with pytest.raises(images.InvalidImage, match="corrupt or truncated"):
        default_preparer.prepare(data[: len(data) // 2])


def test_rejects_too_many_pixels_naming_size_and_limit(default_preparer):
    with pytest.raises(images.InvalidImage) as raised:
        default_preparer.prepare(encode(noise_image(0, (101, 100)), "PNG"))
    assert "too many pixels: 101x100 > data.max_pixels=10000" in str(raised.value)


def test_checks_pixels_before_decoding():
    # A header alone must be enough to refuse a bomb: no pixel data is ever decoded.
    with pytest.raises(images.InvalidImage, match="too many pixels: 200x150"):
        images.read_header(png_header_only(200, 150), MAX_PIXELS)


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["pillow-warning", "pillow-error"])
def test_rejects_pillow_decompression_bomb_above_generous_limit(side):
    with pytest.raises(images.InvalidImage, match="decompression bomb"):
        images.read_header(png_header_only(side, side), max_pixels=10**12)


def test_rejects_unsupported_format_naming_supported_ones(default_preparer):
    with pytest.raises(images.InvalidImage) as raised:
        default_preparer.prepare(encode(noise_image(0), "PPM"))
    message = str(raised.value)
    assert message.startswith("unsupported format PPM")
    for name in (*images.TF_FORMATS, *images.CONVERTED_FORMATS):
        assert name in message


# --- the fast path: files stored as they are, decoded without TensorFlow ---

FAST_PATH_FILES = {
    "jpeg-rgb": lambda: encode(noise_image(1, (41, 29)), "JPEG", quality=80),
    "jpeg-gray": lambda: encode(noise_image(2, (33, 20), "L"), "JPEG"),
    "jpeg-4:2:0-smooth": lambda: encode(
        Image.radial_gradient("L").convert("RGB").resize((70, 50)), "JPEG", subsampling=2
    ),
    "png-rgb": lambda: encode(noise_image(3), "PNG"),
    "png-gray": lambda: encode(noise_image(4, mode="L"), "PNG"),
    "png-palette": lambda: encode(noise_image(5, mode="P"), "PNG"),
}


@pytest.mark.parametrize("name", sorted(FAST_PATH_FILES))
def test_the_fast_path_measures_exactly_the_pixels_tensorflow_decodes(default_preparer, name):
    data = FAST_PATH_FILES[name]()
    header = images.read_header(data, MAX_PIXELS)
    fast = default_preparer.prepare(data)
    decoded = default_preparer.normalise(data, header, too_large=False)  # decode_rgb's pixels
    assert not header.needs_rewrite and not fast.rewritten and fast.data == data
    # The same pixels, so the same moments up to float summation order.
    np.testing.assert_allclose(fast.channel_mean, decoded.channel_mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.channel_std, decoded.channel_std, rtol=0, atol=1e-9)
    assert (fast.height, fast.width) == (decoded.height, decoded.width)


def corruptions(data: bytes, count: int, seed: int) -> list[bytes]:
    """Seeded damage of the kinds files suffer: bytes flipped in the body, cut short."""
    rng = np.random.default_rng(seed)
    damaged = []
    for index in range(count):
        copy = bytearray(data)
        if index % 2:
            copy = copy[: int(rng.integers(len(copy) // 4, len(copy) - 1))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(len(copy) // 4, len(copy) - 2))
                copy[at] ^= int(rng.integers(1, 256))
        damaged.append(bytes(copy))
    return damaged


def tensorflow_decodes(data: bytes) -> bool:
    try:
        preprocess.decode_rgb(tf.constant(data)).numpy()
    except tf.errors.InvalidArgumentError:
        return False
    return True


def kept(preparer: images.Preparer, data: bytes) -> bool:
    try:
        preparer.prepare(data)
    except images.InvalidImage:
        return False
    return True


def test_a_damaged_jpeg_is_kept_exactly_when_tensorflow_decodes_it(default_preparer):
    original = encode(noise_image(7, (48, 40)), "JPEG")
    damaged = corruptions(original, 120, seed=11)
    # A stuffed 0xFF00 in the entropy data turned into 0xFFFF: libjpeg only warns and Pillow
    # decodes the file, but TensorFlow runs out of data and refuses it.
    stuffed = original.index(b"\xff\x00", original.index(b"\xff\xda"))
    damaged.append(original[: stuffed + 1] + b"\xff" + original[stuffed + 2 :])
    verdicts = [kept(default_preparer, data) for data in damaged]
    assert verdicts == [tensorflow_decodes(data) for data in damaged]
    assert 0 < sum(verdicts) < len(verdicts) and not verdicts[-1]


def test_a_damaged_png_is_kept_only_when_tensorflow_decodes_it(default_preparer):
    # Pillow refuses more PNGs than TensorFlow (a damaged text chunk fails its header read), so
    # this direction is the rule: nothing TensorFlow cannot decode reaches a shard.
    for data in corruptions(encode(noise_image(7, (48, 40)), "PNG"), 120, seed=12):
        assert not kept(default_preparer, data) or tensorflow_decodes(data)


def test_the_fast_path_needs_no_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from configs import schema\n"
        "from transforms import images\n"
        "from tests.conftest import encode, noise_image\n"
        "preparer = images.Preparer(schema.DataConfig(source='x'))\n"
        "for fmt in ('JPEG', 'PNG'):\n"
        "    preparer.prepare(encode(noise_image(1), fmt))\n"
        "print('tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr
