"""Labelled crops of real photographs shipped inside packages, for the real-photo benchmark.

Two crop sets, written deterministically from a seed (same files, same bytes):
- the task (`task/`): four texture classes cut from scikit-image's photos of a brick wall, grass,
  gravel and the moon (grey photos, so colour alone separates nothing), as `train/<class>/` and
  `holdout/<class>/`. Each photo is split into a training region and a holdout band along one
  side; every crop lies wholly inside one of them, so no holdout pixel was ever seen in training;
- the pretraining set (`pretrain/`): twelve other photos (scikit-image's and scikit-learn's
  sample images), one class per photo, crops from anywhere, `train/<class>/` only: weights
  pretrained on it are a backbone's "pretrained locally" start for the task.

Crops are 80-400 px with mixed aspect ratios and scales, stored as JPEG (some with an EXIF
orientation tag: the pixels are stored turned, only the tag makes them upright), PNG, WebP, RGBA
PNG with a transparent surround, and grayscale. `manifest.json` records each crop's source photo
and box, so a test can check that holdout and training boxes never meet.

    .venv/bin/python bench/photos.py --out /tmp/photos [--seed 0]
"""

import argparse
import hashlib
import importlib.resources
import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

TASK_PHOTOS = {
    "brick": ("skimage", "brick.png"),
    "grass": ("skimage", "grass.png"),
    "gravel": ("skimage", "gravel.png"),
    "moon": ("skimage", "moon.png"),
}
PRETRAIN_PHOTOS = {
    "astronaut": ("skimage", "astronaut.png"),
    "camera": ("skimage", "camera.png"),
    "chelsea": ("skimage", "chelsea.png"),
    "coffee": ("skimage", "coffee.png"),
    "coins": ("skimage", "coins.png"),
    "hubble": ("skimage", "hubble_deep_field.jpg"),
    "ihc": ("skimage", "ihc.png"),
    "retina": ("skimage", "retina.jpg"),
    "rocket": ("skimage", "rocket.jpg"),
    "motorcycle": ("skimage", "motorcycle_left.png"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
}
PACKAGE_DATA = {"skimage": ("skimage", "data"), "sklearn": ("sklearn.datasets", "images")}

HOLDOUT_BAND = 0.3  # fraction of a task photo's height or width reserved for holdout crops
MIN_SIDE, MAX_SIDE = 80, 400  # stored crop sides
MIN_REGION_SIDE = 48  # smallest source box side (upscaled to at least MIN_SIDE)
# Stored format of a crop and how often it is drawn.
FORMATS = {
    "jpeg": 0.35,
    "jpeg_exif": 0.15,  # pixels stored turned; EXIF orientation 3, 6 or 8 turns them upright
    "png": 0.15,
    "webp": 0.15,
    "rgba_png": 0.10,  # an elliptical cut-out: the surround is fully transparent
    "gray": 0.10,  # single-channel PNG or JPEG
}
EXTENSIONS = {"jpeg": "jpg", "jpeg_exif": "jpg", "png": "png", "webp": "webp", "rgba_png": "png"}
# EXIF orientation -> the transpose that stores an upright view so the tag undoes it (Pillow's
# exif_transpose applies ROTATE_180, ROTATE_270 and ROTATE_90 for 3, 6 and 8).
STORED_TURN = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Crop:
    """One written crop: where it came from and how it is stored."""

    path: str  # relative to the output folder
    set: str  # "task" or "pretrain"
    split: str  # "train" or "holdout"
    label: str
    photo: str
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the source photo, exclusive
    format: str
    size: tuple[int, int]  # stored (width, height), before any EXIF turn
    orientation: int  # EXIF orientation tag (1 = none)


def photo_path(package: str, name: str) -> Path:
    module, folder = PACKAGE_DATA[package]
    return Path(str(importlib.resources.files(module) / folder / name))


def load_photo(package: str, name: str) -> Image.Image:
    with Image.open(photo_path(package, name)) as image:
        return image.convert("RGB")


def split_regions(
    width: int, height: int, rng: np.random.Generator
) -> dict[str, tuple[int, int, int, int]]:
    """A holdout band along a random side of the photo and the training region beside it."""
    side = ["top", "bottom", "left", "right"][rng.integers(4)]
    band_h, band_w = round(height * HOLDOUT_BAND), round(width * HOLDOUT_BAND)
    regions = {
        "top": ((0, 0, width, band_h), (0, band_h, width, height)),
        "bottom": ((0, height - band_h, width, height), (0, 0, width, height - band_h)),
        "left": ((0, 0, band_w, height), (band_w, 0, width, height)),
        "right": ((width - band_w, 0, width, height), (0, 0, width - band_w, height)),
    }[side]
    return {"holdout": regions[0], "train": regions[1]}


def sample_box(
    region: tuple[int, int, int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A box of random area and aspect ratio (3:1 to 1:3) wholly inside `region`."""
    left, top, right, bottom = region
    region_w, region_h = right - left, bottom - top
    aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))  # width / height
    area = rng.uniform(0.05, 0.6) * region_w * region_h
    box_w = int(np.clip(round(np.sqrt(area * aspect)), MIN_REGION_SIDE, region_w))
    box_h = int(np.clip(round(np.sqrt(area / aspect)), MIN_REGION_SIDE, region_h))
    x = left + int(rng.integers(region_w - box_w + 1))
    y = top + int(rng.integers(region_h - box_h + 1))
    return (x, y, x + box_w, y + box_h)


def stored_size(box: tuple[int, int, int, int], rng: np.random.Generator) -> tuple[int, int]:
    """The crop's stored size: the box at a random scale, each side kept within 80-400 px."""
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    scale = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    # Bound the scale so both sides fit 80..400 where the aspect ratio allows it.
    low = max(MIN_SIDE / box_w, MIN_SIDE / box_h)
    high = min(MAX_SIDE / box_w, MAX_SIDE / box_h)
    scale = min(max(scale, low), high) if low <= high else high
    return (
        int(np.clip(round(box_w * scale), MIN_SIDE, MAX_SIDE)),
        int(np.clip(round(box_h * scale), MIN_SIDE, MAX_SIDE)),
    )


def encode(view: Image.Image, kind: str, rng: np.random.Generator) -> tuple[bytes, int]:
    """(file bytes, EXIF orientation) of an upright RGB view in the stored format `kind`."""
    buffer = io.BytesIO()
    orientation = 1
    quality = int(rng.integers(80, 96))
    if kind == "jpeg":
        view.save(buffer, "JPEG", quality=quality)
    elif kind == "jpeg_exif":
        orientation = int(rng.choice(list(STORED_TURN)))
        exif = Image.Exif()
        exif[0x0112] = orientation
        view.transpose(STORED_TURN[orientation]).save(
            buffer, "JPEG", quality=quality, exif=exif.tobytes()
        )
    elif kind == "png":
        view.save(buffer, "PNG")
    elif kind == "webp":
        view.save(buffer, "WEBP", quality=quality, method=4)
    elif kind == "rgba_png":
        buffer.write(rgba_cut_out(view, rng))
    elif kind == "gray":
        gray = view.convert("L")
        if rng.random() < 0.5:
            gray.save(buffer, "PNG")
        else:
            gray.save(buffer, "JPEG", quality=quality)
    else:
        raise ValueError(f"unknown crop format {kind!r}")
    return buffer.getvalue(), orientation


def rgba_cut_out(view: Image.Image, rng: np.random.Generator) -> bytes:
    """PNG bytes of `view` inside a soft-edged ellipse, the surround transparent black (as
    cut-out tools leave it: only the alpha says it is background)."""
    width, height = view.size
    inset = rng.uniform(0.0, 0.12)
    mask = Image.new("L", view.size, 0)
    ImageDraw.Draw(mask).ellipse(
        (inset * width, inset * height, (1 - inset) * width - 1, (1 - inset) * height - 1),
        fill=255,
    )
    mask = mask.filter(ImageFilter.GaussianBlur(2))
    rgba = Image.new("RGBA", view.size, (0, 0, 0, 0))
    rgba.paste(view, mask=mask)
    rgba.putalpha(mask)
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    return buffer.getvalue()


def extension(kind: str, data: bytes) -> str:
    if kind == "gray":
        return "jpg" if data[:3] == b"\xff\xd8\xff" else "png"
    return EXTENSIONS[kind]


def write_crops(
    out: Path,
    set_name: str,
    split: str,
    label: str,
    photo: Image.Image,
    photo_name: str,
    region: tuple[int, int, int, int],
    count: int,
    rng: np.random.Generator,
) -> list[Crop]:
    kinds, weights = list(FORMATS), np.array(list(FORMATS.values()))
    crops = []
    for index in range(count):
        box = sample_box(region, rng)
        size = stored_size(box, rng)
        view = photo.crop(box).resize(size, Image.Resampling.BICUBIC)
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        data, orientation = encode(view, kind, rng)
        relative = Path(set_name) / split / label / f"{index:04d}.{extension(kind, data)}"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
        stored = size[::-1] if orientation in (6, 8) else size
        crops.append(
            Crop(str(relative), set_name, split, label, photo_name, box, kind, stored, orientation)
        )
    return crops


def write_sets(
    out: Path,
    seed: int = 0,
    train_per_class: int = 250,
    holdout_per_class: int = 50,
    pretrain_per_class: int = 100,
) -> list[Crop]:
    """Writes task/ and pretrain/ under `out` with manifest.json; returns every crop.

    Each class draws from its own generator seeded by (seed, class), so changing one count does
    not reshuffle the other classes' crops.
    """
    for set_name in ("task", "pretrain"):
        shutil.rmtree(out / set_name, ignore_errors=True)  # crops of other counts or seeds
    out.mkdir(parents=True, exist_ok=True)
    crops = []
    for set_index, (set_name, photos) in enumerate(
        (("task", TASK_PHOTOS), ("pretrain", PRETRAIN_PHOTOS))
    ):
        for class_index, (label, (package, name)) in enumerate(photos.items()):
            rng = np.random.default_rng((seed, set_index, class_index))
            photo = load_photo(package, name)
            if set_name == "task":
                regions = split_regions(*photo.size, rng)
                plan = [("train", train_per_class), ("holdout", holdout_per_class)]
            else:
                regions = {"train": (0, 0, *photo.size)}
                plan = [("train", pretrain_per_class)]
            for split, count in plan:
                crops += write_crops(
                    out, set_name, split, label, photo, name, regions[split], count, rng
                )
    manifest = {
        "seed": seed,
        "counts": {
            "train_per_class": train_per_class,
            "holdout_per_class": holdout_per_class,
            "pretrain_per_class": pretrain_per_class,
        },
        "crops": [asdict(crop) for crop in crops],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return crops


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def ensure_sets(
    out: Path,
    seed: int = 0,
    train_per_class: int = 250,
    holdout_per_class: int = 50,
    pretrain_per_class: int = 100,
) -> Path:
    """`out` holding the sets for these arguments, written only when missing or different."""
    counts = {
        "train_per_class": train_per_class,
        "holdout_per_class": holdout_per_class,
        "pretrain_per_class": pretrain_per_class,
    }
    manifest = read_manifest(out)
    if not manifest or manifest["seed"] != seed or manifest["counts"] != counts:
        write_sets(out, seed, **counts)
    return out


def digest(out: Path) -> str:
    """sha256 over every crop file's path and bytes: equal digests, identical sets."""
    hasher = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST):
        hasher.update(str(path.relative_to(out)).encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=250)
    parser.add_argument("--holdout-per-class", type=int, default=50)
    parser.add_argument("--pretrain-per-class", type=int, default=100)
    args = parser.parse_args()
    crops = write_sets(
        args.out,
        args.seed,
        args.train_per_class,
        args.holdout_per_class,
        args.pretrain_per_class,
    )
    by_format: dict[str, int] = {}
    for crop in crops:
        by_format[crop.format] = by_format.get(crop.format, 0) + 1
    formats = ", ".join(f"{kind} {count}" for kind, count in sorted(by_format.items()))
    print(f"photos: wrote {len(crops)} crops to {args.out} ({formats})")
    print(f"photos: sha256 of the files {digest(args.out)}")


if __name__ == "__main__":
    main()
