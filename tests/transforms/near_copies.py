"""Real photos (shipped with scikit-image) and the near copies that byte hashes miss: half
size, re-encoded as a quality-40 JPEG, cropped by 2 px a side."""

import io

import numpy as np
import skimage.data
from PIL import Image


def photo(name: str, width: int = 160) -> Image.Image:
    pixels = getattr(skimage.data, name)()
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255 if pixels.max() <= 1 else pixels).astype(np.uint8)
    image = Image.fromarray(pixels).convert("RGB")
    return image.resize((width, round(width * image.height / image.width)))


def half(image: Image.Image) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)


def reencoded(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def cropped(image: Image.Image) -> Image.Image:
    """2 px off each side of 160: a 1.25% crop."""
    return image.crop((2, 2, image.width - 2, image.height - 2))
