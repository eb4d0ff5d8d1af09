"""Validates one image file by decoding it fully, and names the reason when it is unusable."""

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Formats tf.io.decode_image reads in the training and serving graphs: bytes are kept as-is.
SUPPORTED_FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}


class InvalidImage(ValueError):
    """The file cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    height: int
    width: int


def inspect(data: bytes, max_pixels: int) -> ImageInfo:
    """Decodes `data` once and returns its format and size, or raises InvalidImage with a reason."""
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
            image.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImage(f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise InvalidImage("not an image (no known image format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImage(f"corrupt or truncated image: {error}") from None
    if image.format == "BMP" and image.mode == "1":
        raise InvalidImage("unsupported format: 1-bit BMP (TensorFlow cannot decode it)")
    if image.format not in SUPPORTED_FORMATS:
        raise InvalidImage(
            f"unsupported format {image.format}; supported: {', '.join(SUPPORTED_FORMATS)}"
        )
    return ImageInfo(format=SUPPORTED_FORMATS[image.format], height=height, width=width)
