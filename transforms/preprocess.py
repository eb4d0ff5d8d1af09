"""Deterministic image preprocessing shared by training, evaluation and serving."""

import tensorflow as tf


def decode_and_resize(
    image_bytes: tf.Tensor, image_size: tuple[int, int], channels: int
) -> tf.Tensor:
    """Encoded image bytes -> float32 [height, width, channels] in [0, 1].

    The only path from bytes to model input: tf.data and the exported serving signature both
    trace this function, so a model sees identical pixels in training and in production.
    """
    # Every format decodes to RGB first (BMP cannot decode to one channel), then to gray if asked,
    # so one rule turns colour into gray whatever the file format.
    image = decode_rgb(image_bytes)
    # Scale before resizing so that the interpolation works on the same [0, 1] values everywhere.
    image = tf.image.convert_image_dtype(image, tf.float32)
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    height, width = image_size
    image = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, (height, width, channels))


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded image -> uint8 [height, width, 3]; alpha is dropped, gray is replicated."""
    # WebP with alpha decodes only to 4 channels; every other format converts to RGB itself.
    header = tf.strings.join([tf.strings.substr(image_bytes, 0, 12), "\0" * 12])
    is_webp = tf.equal(tf.strings.substr(header, 8, 4), "WEBP")
    return tf.cond(
        is_webp,
        lambda: tf.io.decode_image(image_bytes, channels=0, expand_animations=False)[..., :3],
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )


def decode_batch(image_bytes: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """1-D string tensor of encoded images -> float32 [N, height, width, channels]."""
    height, width = image_size
    return tf.map_fn(
        lambda one: decode_and_resize(one, image_size, channels),
        image_bytes,
        fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32),
    )
