"""Inception-style random-resized crop at decode time (augment.random_resized_crop): training only.

A crop box of random area and aspect ratio is drawn from the image's size, which a JPEG gives
from its header (tf.io.extract_jpeg_shape), and only that box is decoded
(tf.io.decode_and_crop_jpeg): a small crop of a large photo costs a fraction of a full decode.
The pixels are those of decoding the whole file with transforms.preprocess and then cropping;
other formats take that path itself. The bytes are a shard's: ingest stores every JPEG upright,
so no EXIF orientation is read (it would cost more than decoding the crop). The crop is then
stretched to image_size with preprocess's filter rule. Draws are stateless, from a seed the
caller derives per example, so a resumed epoch crops as the interrupted one did.
"""

import tensorflow as tf

from transforms import preprocess

# libjpeg-turbo's fancy upsampling of subsampled chroma (4:2:0, 4:2:2) blends each pixel with
# the neighbouring chroma sample; at the edge of a cropped decode it repeats the edge sample
# instead, which moves the crop's first or last column by up to 20 levels. Decoding one more
# pixel on each side gives it the true neighbour; the margin is dropped afterwards.
JPEG_CROP_MARGIN = 1


def sample_box(
    shape: tf.Tensor,
    seed: tf.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(begin, size), int32 [y, x] and [height, width], of a crop of an image of `shape`
    ([height, width]) covering a `scale` fraction of its area with width / height in `ratio`;
    the whole image when `attempts` draws find none."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([tf.cast(shape, tf.int32), [3]], axis=0),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        # Whole-image box and no coverage rule: area and ratio alone bound the crop (timm).
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=attempts,
        use_image_if_no_bounding_boxes=True,
    )
    return begin[:2], size[:2]


def decode_jpeg_window(
    jpeg_bytes: tf.Tensor, shape: tf.Tensor, begin: tf.Tensor, size: tf.Tensor
) -> tf.Tensor:
    """uint8 [height, width, 3] of the box: decode_jpeg(channels=3) then crop, decoding only the
    box (and its JPEG_CROP_MARGIN). `shape` is the JPEG's [height, width]."""
    start = tf.maximum(begin - JPEG_CROP_MARGIN, 0)
    stop = tf.minimum(begin + size + JPEG_CROP_MARGIN, shape)
    window = tf.io.decode_and_crop_jpeg(jpeg_bytes, tf.concat([start, stop - start], 0), channels=3)
    inner = begin - start
    return window[inner[0] : inner[0] + size[0], inner[1] : inner[1] + size[1]]


def decode_random_crop(
    image_bytes: tf.Tensor,
    seed: tf.Tensor,
    image_size: tuple[int, int],
    channels: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int,
) -> tf.Tensor:
    """A shard's encoded image -> float32 [height, width, channels] in [0, 1]: a random box of
    it (`sample_box`, drawn from `seed`, int64 [2]), stretched to image_size.

    Each step is one op where it can be: per-example branches and conversions cost as much as
    decoding a small JPEG here, so the box is resized from its uint8 pixels."""

    def jpeg_fast_path():
        shape = tf.io.extract_jpeg_shape(image_bytes)[:2]
        begin, size = sample_box(shape, seed, scale, ratio, attempts)
        return decode_jpeg_window(image_bytes, shape, begin, size)

    def decode_then_crop():
        pixels = preprocess.decode_stored(image_bytes)
        begin, size = sample_box(tf.shape(pixels)[:2], seed, scale, ratio, attempts)
        return tf.slice(pixels, tf.concat([begin, [0]], 0), tf.concat([size, [3]], 0))

    pixels = tf.cond(preprocess.is_jpeg(image_bytes), jpeg_fast_path, decode_then_crop)
    image = stretch_pixels(pixels, image_size) * (1.0 / 255.0)
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    return preprocess.finish(image, image_size, channels)


def stretch_pixels(pixels: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [height, width, 3] in 0-255: bilinear, antialiased only past a
    2x shrink (preprocess.stretch's rule), from the uint8 pixels without a float copy first."""
    height, width = image_size
    source = tf.shape(pixels)
    skips_pixels = tf.logical_or(source[0] > 2 * height, source[1] > 2 * width)
    return tf.cond(
        skips_pixels,
        lambda: tf.image.resize(pixels, image_size, antialias=True),
        lambda: tf.image.resize(pixels, image_size),
    )
