"""Writes scikit-learn's bundled handwritten digits as a class-folder tree of PNGs."""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn import datasets

DIGITS_SIZE = 32


def write_digits(out_dir: str | Path, size: int = DIGITS_SIZE) -> int:
    """Writes out_dir/<digit>/<n>.png for all 1,797 images; returns how many were written.

    The source images are 8x8 with intensities 0..16 (ink = high). They are scaled to 0..255,
    inverted to dark ink on white like a scanned page, and upscaled with bicubic interpolation,
    which keeps strokes smooth rather than blocky; the result is 8-bit grayscale.
    """
    digits = datasets.load_digits()
    out = Path(out_dir)
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        gray = 255 - np.round(pixels * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BICUBIC)
        class_dir = out / str(target)
        class_dir.mkdir(parents=True, exist_ok=True)
        image.save(class_dir / f"{index:04d}.png", optimize=False)
    return len(digits.images)
