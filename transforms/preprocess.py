"""Deterministic image preprocessing shared by ingest, training, evaluation and serving.

Everything here is TensorFlow graph code, so the exported serving signature runs exactly what
ingest and training ran: one set of rules turns any supported file into RGB pixels.
"""

import re

import tensorflow as tf

from transforms import exif

DEFAULT_BACKGROUND = (255, 255, 255)
# data.resize and data.crop_fraction (configs/schema/data.py), for callers without a config.
RESIZE_MODES = ("crop", "stretch")
DEFAULT_RESIZE = "crop"
DEFAULT_CROP_FRACTION = 1.0


def decode_rgb(image_bytes: tf.Tensor, background=DEFAULT_BACKGROUND) -> tf.Tensor:
    """Encoded image -> uint8 [height, width, 3], normalised the same way for every format.

    - JPEG: decoded to RGB (CMYK and grayscale included), then turned upright by its EXIF
      orientation tag;
    - anything with transparency (RGBA, gray + alpha, palette with a transparent colour, WebP
      with alpha): composited on `background`;
    - grayscale: replicated to three channels; 16-bit: the high byte (libpng's strip_16);
    - animated GIF/WebP: the first frame.
    """
    return tf.cond(
        is_jpeg(image_bytes),
        lambda: exif.apply_orientation(
            tf.io.decode_jpeg(image_bytes, channels=3), exif.orientation(image_bytes)
        ),
        lambda: composite_on(
            tf.io.decode_image(image_bytes, channels=0, expand_animations=False), background
        ),
    )


def decode_stored(image_bytes: tf.Tensor) -> tf.Tensor:
    """decode_rgb for the bytes of an ingested shard, in one op: ingest stores only JPEGs that
    are upright and PNGs without transparency (transforms/images.py rewrites every other file
    with decode_rgb's pixels), so neither an EXIF tag nor compositing is left to do. decode_rgb's
    checks and branches cost more than decoding a small JPEG in the input pipeline."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return tf.ensure_shape(image, (None, None, 3))


def is_jpeg(image_bytes: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(image_bytes, 0, 3), b"\xff\xd8\xff")


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
    resize: str = DEFAULT_RESIZE,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    stored: bool = False,
) -> tf.Tensor:
    """Encoded image bytes -> float32 [height, width, channels] in [0, 1].

    The only path from bytes to model input: tf.data and the exported serving signature both
    trace this function, so a model sees identical pixels in training and in production.
    `resize` is data.resize: "crop" keeps the aspect ratio and takes the centre
    (`centre_crop`), "stretch" scales each side to image_size (`stretch`). `stored` bytes
    come from an ingested shard (see decode_stored): same pixels, less work.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES} (received {resize!r})")
    pixels = decode_stored(image_bytes) if stored else decode_rgb(image_bytes, background)
    if resize == "stretch":
        image = stretch(to_unit_range(pixels, channels), image_size)
    else:
        image = to_unit_range(centre_crop(pixels, image_size, crop_fraction), channels)
    return finish(image, image_size, channels)


def to_unit_range(image: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 RGB, or float32 RGB already in [0, 1] -> float32 [H, W, channels] in [0, 1]."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    return tf.image.rgb_to_grayscale(image) if channels == 1 else image


def finish(image: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """Clips interpolation overshoot and fixes the static shape the model input needs."""
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, (*image_size, channels))


def stretch(image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize of each side to image_size, whatever the aspect ratio."""
    height, width = image_size
    # Antialiasing (an area filter) costs about 5x plain bilinear, and is needed only when
    # bilinear's 2x2 taps would skip source pixels: more than 2x down on either axis.
    source = tf.shape(image)
    skips_pixels = tf.logical_or(source[0] > 2 * height, source[1] > 2 * width)
    same_size = tf.logical_and(tf.equal(source[0], height), tf.equal(source[1], width))
    return tf.case(
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


def centre_crop(pixels: tf.Tensor, image_size: tuple[int, int], crop_fraction: float) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [height, width, 3] in [0, 1]: the centre box of the image with
    image_size's aspect ratio, spanning crop_fraction of the side that limits it, resized.

    timm's evaluation transform (scale until image_size / crop_fraction is covered, keep the
    centre image_size) and the same filter: PIL's bilinear, a triangle widened to the scale
    when shrinking, so it never skips source pixels. Unlike timm, the scale and the centring
    are not rounded to whole pixels, so an image stored downscaled (data.store.max_side) gives
    the model the same view as its original.
    """
    height, width = image_size
    source = tf.cast(tf.shape(pixels)[:2], tf.float32)
    target = tf.constant(image_size, tf.float32)
    scale = tf.reduce_max(target / (crop_fraction * source))
    # tf.image.resize's antialiased op, asked for the window only and fed the uint8 pixels:
    # converting a 1500x1000 photo to float first would add half the resize's time again.
    resized = tf.raw_ops.ScaleAndTranslate(
        images=pixels[tf.newaxis],
        size=tf.constant([height, width], tf.int32),
        scale=tf.stack([scale, scale]),
        translation=(target - scale * source) / 2,
        kernel_type="triangle",
        antialias=True,
    )
    return resized[0] * (1.0 / 255.0)  # the factor tf.image.convert_image_dtype uses


def decode_batch(
    image_bytes: tf.Tensor,
    image_size: tuple[int, int],
    channels: int,
    background=DEFAULT_BACKGROUND,
    resize: str = DEFAULT_RESIZE,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
) -> tf.Tensor:
    """1-D string tensor of encoded images -> float32 [N, height, width, channels]."""
    height, width = image_size
    return tf.map_fn(
        lambda one: decode_and_resize(one, image_size, channels, background, resize, crop_fraction),
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
