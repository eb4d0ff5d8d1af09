"""EXIF orientation of a JPEG, read and applied in TensorFlow graph ops (so serving does it too).

Cameras store pixels as the sensor saw them and record how to turn them upright in tag 0x0112 of
the EXIF block (APP1 "Exif\\0\\0" + a TIFF header). Pillow's ImageOps.exif_transpose applies the
same rules; tests compare the two.
"""

import tensorflow as tf

EXIF_MARKER = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112
HEADER_SEARCH_BYTES = 65536  # APP1 comes first in the file; a JPEG segment is at most 64 KiB
TIFF_WINDOW = 4096  # IFD0 sits near the start of the TIFF block in every camera we know of
MAX_ENTRIES = 64


def orientation(jpeg_bytes: tf.Tensor) -> tf.Tensor:
    """int32 scalar in 1..8 (1 = upright; also when there is no EXIF block or tag)."""
    head = tf.strings.substr(jpeg_bytes, 0, HEADER_SEARCH_BYTES)
    parts = tf.strings.split(head, sep=EXIF_MARKER, maxsplit=1)
    # Many files carry no EXIF block; skipping the parse's ~60 small ops for them saves 0.1-0.2 ms
    # per file in the input pipeline, a third to half of decoding a 320x240 JPEG.
    return tf.cond(
        tf.size(parts) > 1, lambda: _tiff_orientation(parts[-1]), lambda: tf.constant(1, tf.int32)
    )


def _tiff_orientation(tiff: tf.Tensor) -> tf.Tensor:
    window = tf.strings.substr(tiff, 0, TIFF_WINDOW)
    raw = tf.io.decode_raw(window, tf.uint8)
    padding = TIFF_WINDOW + 16 - tf.size(raw)
    data = tf.cast(tf.pad(raw, [[0, padding]]), tf.int32)
    little_endian = tf.equal(data[0], ord("I"))

    def u16(at):
        low, high = tf.gather(data, at), tf.gather(data, at + 1)
        return tf.where(little_endian, low + high * 256, low * 256 + high)

    def u32(at):
        return tf.where(little_endian, u16(at) + u16(at + 2) * 65536, u16(at) * 65536 + u16(at + 2))

    is_tiff = tf.logical_and(
        tf.logical_or(little_endian, tf.equal(data[0], ord("M"))), tf.equal(data[0], data[1])
    )
    limit = TIFF_WINDOW - 14
    ifd = tf.clip_by_value(u32(4), 0, limit)
    count = tf.minimum(u16(ifd), MAX_ENTRIES)
    entries = ifd + 2 + 12 * tf.range(MAX_ENTRIES)
    entries = tf.clip_by_value(entries, 0, limit)
    is_tag = tf.logical_and(tf.equal(u16(entries), ORIENTATION_TAG), tf.range(MAX_ENTRIES) < count)
    values = u16(entries + 8)
    value = tf.reduce_max(tf.where(is_tag, values, 0))
    valid = tf.logical_and(is_tiff, tf.logical_and(value >= 1, value <= 8))
    return tf.where(valid, value, 1)


def apply_orientation(image: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """Turns [H, W, C] upright for EXIF orientation `value` (1..8)."""

    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,  # 1: upright
        lambda: tf.reverse(image, [1]),  # 2: mirrored
        lambda: tf.reverse(image, [0, 1]),  # 3: rotated 180
        lambda: tf.reverse(image, [0]),  # 4: flipped vertically
        lambda: transpose(image),  # 5: transposed
        lambda: tf.reverse(transpose(image), [1]),  # 6: rotated 90 clockwise to be upright
        lambda: tf.reverse(transpose(image), [0, 1]),  # 7: transversed
        lambda: tf.reverse(transpose(image), [0]),  # 8: rotated 90 counter-clockwise
    ]
    return tf.switch_case(tf.cast(value - 1, tf.int32), branches)
