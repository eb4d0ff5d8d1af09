"""transforms.images.inspect: which files ingest accepts, and the reason it gives for the rest."""

import struct
import zlib

import pytest

from transforms import images

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


@pytest.mark.parametrize(
    ("pil_format", "mode", "expected_format"),
    [
        ("PNG", "RGB", "png"),
        ("PNG", "L", "png"),
        ("PNG", "RGBA", "png"),
        ("JPEG", "RGB", "jpeg"),
        ("JPEG", "L", "jpeg"),
        ("GIF", "RGB", "gif"),
        ("BMP", "RGB", "bmp"),
        ("WEBP", "RGB", "webp"),
    ],
)
def test_accepts_supported_format(make_image, pil_format, mode, expected_format):
    data = make_image(0, pil_format, size=(30, 20), mode=mode)
    info = images.inspect(data, MAX_PIXELS)
    assert info == images.ImageInfo(format=expected_format, height=20, width=30)


def test_accepts_image_of_exactly_max_pixels(make_image):
    data = make_image(0, "PNG", size=(100, 100))
    assert images.inspect(data, max_pixels=100 * 100).height == 100


def test_rejects_empty_file():
    with pytest.raises(images.InvalidImage, match=r"empty file \(0 bytes\)"):
        images.inspect(b"", MAX_PIXELS)


def test_rejects_text_file():
    with pytest.raises(images.InvalidImage, match="not an image"):
        images.inspect(b"label,file\ncat,cat.png\n", MAX_PIXELS)


def test_rejects_truncated_png(make_image):
    data = make_image(0, "PNG", size=(40, 30))
    with pytest.raises(images.InvalidImage, match="corrupt or truncated"):
        images.inspect(data[: len(data) // 2], MAX_PIXELS)


def test_rejects_truncated_jpeg(make_image):
    data = make_image(0, "JPEG", size=(40, 30))
    with pytest.raises(images.InvalidImage, match="corrupt or truncated"):
        images.inspect(data[: len(data) // 2], MAX_PIXELS)


def test_rejects_too_many_pixels_naming_size_and_limit(make_image):
    data = make_image(0, "PNG", size=(101, 100))
    with pytest.raises(images.InvalidImage) as raised:
        images.inspect(data, max_pixels=100 * 100)
    assert "too many pixels: 101x100 > data.max_pixels=10000" in str(raised.value)


def test_checks_pixels_before_decoding():
    # A header alone must be enough to refuse a bomb: no pixel data is ever decoded.
    with pytest.raises(images.InvalidImage, match="too many pixels: 200x150"):
        images.inspect(png_header_only(200, 150), MAX_PIXELS)


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["pillow-warning", "pillow-error"])
def test_rejects_pillow_decompression_bomb_above_generous_limit(side):
    # Pillow's own limit (~89 Mpx warns, ~179 Mpx errors) applies even if data.max_pixels is larger.
    with pytest.raises(images.InvalidImage, match="decompression bomb"):
        images.inspect(png_header_only(side, side), max_pixels=10**12)


def test_rejects_unsupported_format_naming_supported_ones(make_image):
    data = make_image(0, "TIFF", size=(30, 20))
    with pytest.raises(images.InvalidImage) as raised:
        images.inspect(data, MAX_PIXELS)
    message = str(raised.value)
    assert message.startswith("unsupported format TIFF")
    for name in images.SUPPORTED_FORMATS:
        assert name in message
