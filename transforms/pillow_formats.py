"""Images TensorFlow cannot decode, told apart by their first bytes and converted by Pillow:
TIFF, and BMPs of 1, 4 or 8 bits a pixel (TensorFlow cannot read 1-bit BMPs and reads palette
indices as gray levels). Ingest stores such a file as the PNG made here; serving converts
uploads the same way before the graph decodes them: one rule, so every format ingest accepts
is servable, with the same pixels.
"""

import io

from PIL import Image

TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
BMP_MAGIC = b"BM"
BMP_CORE_HEADER_SIZE = 12  # OS/2 BITMAPCOREHEADER: the bit count sits earlier


class UnreadableImage(ValueError):
    """Pillow could not read the file either; the message says why."""


def needs_pillow(data: bytes) -> bool:
    """Whether `data` is a TIFF or a BMP of at most 8 bits a pixel (from its header)."""
    if data[:4] in TIFF_MAGIC:
        return True
    if data[:2] != BMP_MAGIC or len(data) < 30:
        return False
    header_size = int.from_bytes(data[14:18], "little")
    bits_at = 24 if header_size == BMP_CORE_HEADER_SIZE else 28
    return int.from_bytes(data[bits_at : bits_at + 2], "little") <= 8


def to_png(data: bytes) -> bytes:
    """The image as an RGBA PNG, which TensorFlow decodes (and composites) as it does any PNG."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        rgba = image.convert("RGBA")
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"corrupt or truncated image: {error}") from None
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    return buffer.getvalue()
