"""Deterministic image preprocessing shared by ingest, training, evaluation and serving.

Everything here is TensorFlow graph code, so the exported serving signature runs exactly what
ingest and training ran: one set of rules turns any supported file into RGB pixels.
"""

import re

import tensorflow as tf

from transforms import exif

DEFAULT_BACKGROUND = (255, 255, 255)


def decode_rgb(image_bytes: tf.Tensor, background=DEFAULT_BACKGROUND) -> tf.Tensor:
    """Encoded image -> uint8 [height, width, 3], normalised the same way for every format.

    - JPEG: decoded to RGB (CMYK and grayscale included), then turned upright by its EXIF
      orientation tag;
    - anything with transparency (RGBA, gray + alpha, palette with a transparent colour, WebP
      with alpha): composited on `background`;
    - grayscale: replicated to three channels; 16-bit: the high byte (libpng's strip_16);
    - animated GIF/WebP: the first frame.
    """
    is_jpeg = tf.equal(tf.strings.substr(image_bytes, 0, 3), b"\xff\xd8\xff")
    return tf.cond(
        is_jpeg,
        lambda: exif.apply_orientation(
            tf.io.decode_jpeg(image_bytes, channels=3), exif.orientation(image_bytes)
        ),
        lambda: composite_on(
            tf.io.decode_image(image_bytes, channels=0, expand_animations=False), background
        ),
    )


def composite_on(image: tf.Tensor, background) -> tf.Tensor:
    """uint8 [H, W, 1..4] -> uint8 [H, W, 3]: gray replicated, alpha blended onto `background`."""
    image = tf.ensure_shape(image, (None, None, None))
    channels = tf.shape(image)[-1]
    # Channels 1 and 2 are gray (+ alpha), 3 and 4 are RGB (+ alpha).
    rgb = tf.cond(
        channels >= 3, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, axis=-1)
    )
    has_alpha = tf.equal(channels % 2, 0)

    def blend():
        alpha = tf.cast(image[..., -1:], tf.float32) / 255.0
        fill = tf.constant(background, tf.float32)
        mixed = tf.cast(rgb, tf.float32) * alpha + fill * (1.0 - alpha)
        return tf.cast(tf.round(mixed), tf.uint8)

    return tf.cond(has_alpha, blend, lambda: rgb)


def decode_and_resize(
    image_bytes: tf.Tensor,
    image_size: tuple[int, int],
    channels: int,
    background=DEFAULT_BACKGROUND,
) -> tf.Tensor:
    """Encoded image bytes -> float32 [height, width, channels] in [0, 1].

    The only path from bytes to model input: tf.data and the exported serving signature both
    trace this function, so a model sees identical pixels in training and in production.
    """
    # Scale before resizing so that the interpolation works on the same [0, 1] values everywhere.
    image = tf.image.convert_image_dtype(decode_rgb(image_bytes, background), tf.float32)
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    height, width = image_size
    # Antialiasing (an area filter) costs about 5x plain bilinear, and is needed only when
    # bilinear's 2x2 taps would skip source pixels: more than 2x down on either axis.
    source = tf.shape(image)
    skips_pixels = tf.logical_or(source[0] > 2 * height, source[1] > 2 * width)
    same_size = tf.logical_and(tf.equal(source[0], height), tf.equal(source[1], width))
    image = tf.case(
        [
            (same_size, lambda: image),  # bilinear at scale 1 returns the pixels unchanged
            (
                skips_pixels,
                lambda: tf.image.resize(image, (height, width), method="bilinear", antialias=True),
            ),
        ],
        default=lambda: tf.image.resize(image, (height, width), method="bilinear"),
        exclusive=True,
    )
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, (height, width, channels))


def decode_batch(
    image_bytes: tf.Tensor,
    image_size: tuple[int, int],
    channels: int,
    background=DEFAULT_BACKGROUND,
) -> tf.Tensor:
    """1-D string tensor of encoded images -> float32 [N, height, width, channels]."""
    height, width = image_size
    return tf.map_fn(
        lambda one: decode_and_resize(one, image_size, channels, background),
        image_bytes,
        fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32),
    )


def decode_error_reason(error: tf.errors.OpError) -> str:
    """The reason line of a failed decode, without graph-node names and stack boilerplate
    (they change between runs, and a user cannot act on them)."""
    boilerplate = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    reasons = [
        re.sub(r"\{\{[^}]*\}\}\s*", "", line).strip()
        for line in error.message.splitlines()
        if line.strip() and not line.strip().startswith(boilerplate)
    ]
    reasons = [reason for reason in reasons if reason]
    return reasons[-1] if reasons else error.message
