"""Synthetic photo-like class images as a class-folder tree, for ingest benchmarks at any scale.

Each class has its own palette, gradient direction and shape kind, so a classifier can learn the
classes; each image varies size, aspect, shape placement and grain, so no two share bytes. Image
`i` depends only on (seed, i) and belongs to class `i % classes`: the same arguments always give
the same files, and a smaller count is a prefix of a larger one.
"""

import argparse
import colorsys
import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

JPEG_QUALITY = 85
MARKER = ".synthetic.json"  # ingest ignores names starting with "."
SHAPES = ("ellipse", "rectangle", "triangle", "stripes")
PROGRESS_SECONDS = 5.0
CHUNK = 256  # images per pool task: big enough to amortise IPC, small enough to balance


def class_name(label: int) -> str:
    return f"class_{label:02d}"


def image_path(out_dir: Path, index: int, classes: int) -> Path:
    return out_dir / class_name(index % classes) / f"{index:07d}.jpg"


def rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), np.float32) * 255.0


def render(index: int, classes: int, seed: int, size: tuple[int, int]) -> bytes:
    """JPEG bytes of image `index`: a class-coloured gradient, class-kind shapes and grain.

    `size` is the nominal (width, height); each image's own size varies around it.
    """
    label = index % classes
    rng = np.random.default_rng((seed, index))
    # Photo-like sizes: each side within ±25% of the nominal (width, height), a quarter of the
    # images turned to portrait, aspect (width / height) kept within 0.6..1.6.
    width = size[0] * rng.uniform(0.75, 1.25)
    height = size[1] * rng.uniform(0.75, 1.25)
    if rng.random() < 0.25:
        width, height = height, width
    width = max(16, int(round(width)))
    height = max(16, int(round(width / min(max(width / height, 0.6), 1.6))))

    hue = label / classes
    angle = 2 * math.pi * label / classes + rng.normal(0, 0.15)
    dark = rgb(hue + rng.normal(0, 0.02), 0.6, rng.uniform(0.15, 0.35))
    light = rgb(hue + 0.5 / classes + rng.normal(0, 0.02), 0.35, rng.uniform(0.75, 0.95))
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    ramp = np.clip(0.5 + 0.5 * (xs * math.cos(angle) + ys * math.sin(angle)), 0.0, 1.0)
    pixels = dark + ramp[..., None] * (light - dark)
    # Sensor-like grain, a little stronger for odd classes: texture is a cue too.
    grain = 6.0 + 4.0 * (label % 2)
    pixels += rng.standard_normal((height, width, 1), dtype=np.float32) * grain
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(image)
    kind = SHAPES[label % len(SHAPES)]
    shape_hue = hue + 0.5  # complementary, so shapes stand out from the background
    for _ in range(int(rng.integers(1, 4))):
        color = tuple(int(v) for v in rgb(shape_hue + rng.normal(0, 0.03), 0.8, 0.9))
        extent = rng.uniform(0.15, 0.45) * min(width, height)
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        box = (cx - extent, cy - extent, cx + extent, cy + extent)
        if kind == "ellipse":
            draw.ellipse(box, fill=color)
        elif kind == "rectangle":
            draw.rectangle(box, fill=color)
        elif kind == "triangle":
            draw.polygon(
                [(cx, cy - extent), (cx - extent, cy + extent), (cx + extent, cy + extent)],
                fill=color,
            )
        else:
            step = max(4, int(extent / 3))
            for x in range(int(cx - extent), int(cx + extent), 2 * step):
                draw.rectangle((x, cy - extent, x + step, cy + extent), fill=color)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _write_range(job: tuple[str, int, int, int, int, tuple[int, int]]) -> int:
    out_dir, start, stop, classes, seed, size = job
    for index in range(start, stop):
        image_path(Path(out_dir), index, classes).write_bytes(render(index, classes, seed, size))
    return stop - start


def write_synthetic(
    out_dir: str | os.PathLike,
    count: int,
    classes: int = 10,
    seed: int = 0,
    size: tuple[int, int] = (320, 240),
    workers: int = 2,
) -> int:
    """Writes `count` JPEGs as `<out_dir>/class_NN/<index>.jpg`; returns how many were written."""
    if count < 0 or classes < 2:
        raise ValueError(f"need count >= 0 and classes >= 2 (received {count}, {classes})")
    out = Path(out_dir)
    for label in range(min(classes, max(count, 1))):
        (out / class_name(label)).mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out), start, min(start + CHUNK, count), classes, seed, tuple(size))
        for start in range(0, count, CHUNK)
    ]
    done, started, last = 0, time.monotonic(), time.monotonic()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for written in pool.imap_unordered(_write_range, jobs):
            done += written
            if time.monotonic() - last > PROGRESS_SECONDS:
                last = time.monotonic()
                rate = done / (last - started)
                print(f"synthetic: {done}/{count} images ({rate:.0f}/s)", file=sys.stderr)
    marker = {"count": count, "classes": classes, "seed": seed, "size": list(size)}
    (out / MARKER).write_text(json.dumps(marker) + "\n")
    return done


def read_marker(out_dir: str | os.PathLike) -> dict | None:
    """What `write_synthetic` last wrote to `out_dir` (None if it never finished there)."""
    path = Path(out_dir) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def ensure(
    out_dir: Path, count: int, classes: int = 10, seed: int = 0, size: tuple[int, int] = (320, 240)
) -> Path:
    """`out_dir` holding these `count` images, generated only when missing or different: the
    benchmarks' cache of synthetic images."""
    wanted = {"count": count, "classes": classes, "seed": seed, "size": list(size)}
    if read_marker(out_dir) == wanted and sum(1 for _ in out_dir.glob("class_*/*.jpg")) == count:
        print(f"bench: reusing {count} synthetic images in {out_dir}")
        return out_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    print(f"bench: generating {count} synthetic JPEGs in {out_dir}", flush=True)
    started = time.perf_counter()
    write_synthetic(out_dir, count, classes=classes, seed=seed, size=size)
    seconds = time.perf_counter() - started
    print(f"bench: generated {count} images in {seconds:.1f}s ({count / seconds:.0f}/s)")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (<out>/class_NN/<n>.jpg)")
    parser.add_argument("--count", type=int, required=True, help="number of images")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    args = parser.parse_args()
    started = time.perf_counter()
    written = write_synthetic(
        args.out, args.count, args.classes, args.seed, args.size, args.workers
    )
    seconds = time.perf_counter() - started
    print(
        f"synthetic: wrote {written} JPEGs in {args.classes} classes to {args.out}/class_NN/ "
        f"in {seconds:.1f}s ({written / max(seconds, 1e-9):.0f} images/s)"
    )


if __name__ == "__main__":
    main()
