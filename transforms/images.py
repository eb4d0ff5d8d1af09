"""Turns one file's bytes into the image ingest stores, or names why the file is unusable.

Pillow reads the header first (format, size, mode, EXIF orientation), so a decompression bomb is
refused before any pixel is decoded. A JPEG or PNG stored as it is (upright, opaque, no larger
than data.store.max_side: most files) is then decoded without TensorFlow, whose import costs
5 s in every ingest worker: JPEGs by libjpeg-turbo through simplejpeg with TensorFlow's DCT
(identical pixels) and every libjpeg warning raised, PNGs by Pillow. A file either decoder has
any doubt about goes to TensorFlow, which decides as training and serving would. Any other file
is decoded by transforms.preprocess, the TensorFlow code the serving signature runs, and its
normalised pixels are stored, so stored pixels equal served pixels.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from configs import schema
from transforms import near_duplicates, pillow_formats

# Decoded by TensorFlow in training and serving; bytes may be stored as they are.
TF_FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}
# Read by Pillow and stored re-encoded: TensorFlow cannot decode them itself.
CONVERTED_FORMATS = {"TIFF": "tiff"}
KEEPABLE = {"png", "jpeg"}  # formats stored as-is when nothing about them must change
EXIF_ORIENTATION = 0x0112
# Modes decoded without TensorFlow to the same pixels (tests/transforms/test_images.py). CMYK is
# not one: TensorFlow converts it to RGB its own way, so CMYK files take the TensorFlow path.
FAST_DECODED_MODES = ("L", "RGB", "P")
LEVELS = np.arange(256, dtype=np.float64) / 255.0


class InvalidImage(ValueError):
    """The file cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class Header:
    format: str  # lower-case, e.g. "png"
    height: int
    width: int
    mode: str  # Pillow's mode: L, RGB, RGBA, P, I;16, CMYK, ...
    tf_decodable: bool  # False: Pillow converts it first (TIFF, 1-bit and palette BMP)
    needs_rewrite: bool  # stored pixels would differ from a plain decode of the bytes


@dataclass(frozen=True)
class PreparedImage:
    data: bytes  # what the shard stores
    format: str
    height: int  # of the stored image
    width: int
    original_height: int
    original_width: int
    original_mode: str
    original_format: str
    rewritten: bool  # False when `data` are the file's own bytes
    channel_mean: tuple[float, float, float]  # of the normalised RGB pixels, in [0, 1]
    channel_std: tuple[float, float, float]
    perceptual_hash: int | None = None  # of the stored pixels, when near-duplicates are sought


def read_header(data: bytes, max_pixels: int) -> Header:
    """Format, size and mode from the header alone; InvalidImage for anything unusable."""
    return open_image(data, max_pixels)[0]


def open_image(data: bytes, max_pixels: int) -> tuple[Header, Image.Image]:
    """The header and the opened, not yet decoded, Pillow image."""
    if not data:
        raise InvalidImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(
                    f"too many pixels: {width}x{height} > data.max_pixels={max_pixels} "
                    "(possible decompression bomb)"
                )
            # Only JPEG orientation is applied in the graph (transforms/exif.py).
            orientation = image.getexif().get(EXIF_ORIENTATION, 1) if image.format == "JPEG" else 1
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImage(f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise InvalidImage("not an image (no known image format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImage(f"corrupt or truncated image: {error}") from None
    if image.format not in TF_FORMATS and image.format not in CONVERTED_FORMATS:
        supported = ", ".join(sorted({*TF_FORMATS, *CONVERTED_FORMATS}))
        raise InvalidImage(f"unsupported format {image.format}; supported: {supported}")
    image_format = {**TF_FORMATS, **CONVERTED_FORMATS}[image.format]
    tf_decodable = image.format in TF_FORMATS and not pillow_formats.needs_pillow(data)
    transparent = "A" in image.mode or "transparency" in image.info
    needs_rewrite = (
        not tf_decodable
        or image_format not in KEEPABLE
        or transparent
        or image.mode not in ("L", "RGB", "P", "CMYK")
        or orientation not in (1, None)
    )
    return Header(image_format, height, width, image.mode, tf_decodable, needs_rewrite), image


class Preparer:
    """Validates, measures and (when needed) normalises images: Pillow for files stored as they
    are, one traced TensorFlow function, built on first use, for the rest."""

    def __init__(self, cfg: schema.DataConfig):
        self.cfg = cfg
        self.hashes = cfg.near_duplicates.mode != "off"
        self._decode = None

    def prepare(self, data: bytes) -> PreparedImage:
        header, image = open_image(data, self.cfg.max_pixels)
        max_side = self.cfg.store.max_side
        too_large = max_side is not None and max(header.height, header.width) > max_side
        if not header.needs_rewrite and not too_large and header.mode in FAST_DECODED_MODES:
            return self.keep(data, header, image)
        return self.normalise(data, header, too_large)

    def keep(self, data: bytes, header: Header, image: Image.Image) -> PreparedImage:
        """The file's own bytes, proven decodable by decoding every pixel; TensorFlow decides
        when the fast decoder doubts the file."""
        pixels = decode_fast(data, header, image)
        if pixels is None:
            return self.normalise(data, header, too_large=False)
        mean, std = pixel_moments(pixels)
        return PreparedImage(
            data=data,
            format=header.format,
            height=header.height,
            width=header.width,
            original_height=header.height,
            original_width=header.width,
            original_mode=header.mode,
            original_format=header.format,
            rewritten=False,
            channel_mean=mean,
            channel_std=std,
            perceptual_hash=self.perceptual_hash(pixels),
        )

    def normalise(self, data: bytes, header: Header, too_large: bool) -> PreparedImage:
        """decode_rgb's pixels (upright, composited, downscaled to max_side), re-encoded when
        they differ from what a plain decode of the file gives."""
        import tensorflow as tf

        from transforms import preprocess

        try:
            decodable = data if header.tf_decodable else pillow_formats.to_png(data)
        except pillow_formats.UnreadableImage as error:
            raise InvalidImage(str(error)) from None
        try:
            pixels, mean, mean_square = (t.numpy() for t in self.decoder()(tf.constant(decodable)))
        except tf.errors.InvalidArgumentError as error:
            reason = preprocess.decode_error_reason(error)
            raise InvalidImage(f"corrupt or truncated image: {reason}") from None
        if too_large:
            pixels = downscale(pixels, self.cfg.store.max_side)
        rewrite = header.needs_rewrite or too_large or decodable is not data
        stored, stored_format = (data, header.format) if not rewrite else self.encode(pixels)
        variance = np.maximum(mean_square - np.square(mean), 0.0)
        return PreparedImage(
            data=stored,
            format=stored_format,
            height=int(pixels.shape[0]),
            width=int(pixels.shape[1]),
            original_height=header.height,
            original_width=header.width,
            original_mode=header.mode,
            original_format=header.format,
            rewritten=rewrite,
            channel_mean=tuple(float(v) for v in mean),
            channel_std=tuple(float(v) for v in np.sqrt(variance)),
            perceptual_hash=self.perceptual_hash(Image.fromarray(pixels)),
        )

    def perceptual_hash(self, image: Image.Image) -> int | None:
        return near_duplicates.perceptual_hash(image) if self.hashes else None

    def decoder(self):
        """decode_rgb and the pixels' moments as one traced function."""
        if self._decode is None:
            import tensorflow as tf

            from transforms import preprocess

            background = tuple(self.cfg.background)

            def decode_with_moments(image_bytes):
                pixels = preprocess.decode_rgb(image_bytes, background)
                unit = tf.cast(pixels, tf.float64) / 255.0
                # Eigen's parallel reductions: far cheaper than numpy over a float copy.
                mean = tf.reduce_mean(unit, axis=[0, 1])
                mean_square = tf.reduce_mean(tf.square(unit), axis=[0, 1])
                return pixels, mean, mean_square

            self._decode = tf.function(
                decode_with_moments, input_signature=[tf.TensorSpec([], tf.string)]
            )
        return self._decode

    def encode(self, pixels: np.ndarray) -> tuple[bytes, str]:
        import tensorflow as tf

        # Gray pictures are stored with one channel: decode_rgb replicates it back exactly.
        gray = bool((pixels[..., :1] == pixels).all())
        stored = pixels[..., :1] if gray else pixels
        store = self.cfg.store
        if store.format == "jpeg":
            encoded = tf.io.encode_jpeg(stored, quality=store.jpeg_quality)
        else:
            encoded = tf.io.encode_png(stored)
        return encoded.numpy(), store.format


def decode_fast(data: bytes, header: Header, image: Image.Image) -> Image.Image | None:
    """The decoded image, or None when the decoder warned or failed: a JPEG through libjpeg-turbo
    (simplejpeg, strict: any warning raises) with TensorFlow's default DCT, a PNG through
    Pillow."""
    if header.format == "jpeg":
        try:
            # RGBX: a layout Pillow wraps without copying (its RGB buffers are 4 bytes a pixel).
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGBX", fastdct=True, strict=True)
        except ValueError:
            return None
        height, width = pixels.shape[:2]
        return Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):
        return None
    return image


def pixel_moments(image: Image.Image) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a decoded image's RGB pixels in [0, 1], from
    Pillow's per-band histograms (exact sums, no float copy of the pixels)."""
    rgb = image if image.mode in ("L", "RGB", "RGBX") else image.convert("RGB")
    counts = np.array(rgb.histogram(), np.float64).reshape(-1, 256)[:3]
    if len(counts) == 1:  # gray: decode_rgb replicates it to three equal channels
        counts = np.repeat(counts, 3, axis=0)
    total = counts.sum(axis=1)
    mean = counts @ LEVELS / total
    variance = np.maximum(counts @ np.square(LEVELS) / total - np.square(mean), 0.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in np.sqrt(variance))


def downscale(pixels: np.ndarray, max_side: int) -> np.ndarray:
    import tensorflow as tf

    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = tf.image.resize(pixels, size, method="area")
    return tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8).numpy()
