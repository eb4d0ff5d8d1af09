"""Evaluation charts (curves, confusion matrix, per-class scores, calibration, mistakes) as PNGs."""

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import numpy as np  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

DPI = 100
# Past this many classes the per-cell counts would overlap, so the heat-map goes without them.
MAX_ANNOTATED_CLASSES = 30
# Past this many classes tick labels are unreadable at any sensible figure size.
MAX_LABELLED_CLASSES = 100
MAX_FIGURE_INCHES = 30
TRAIN_COLOUR, VAL_COLOUR = "#2563eb", "#f97316"


def plot_curves(
    history_csv: Path, out_dir: Path, best_epoch: int | None = None, monitor: str | None = None
) -> list[Path]:
    """`loss.png` and `accuracy.png`: train vs validation per epoch, numbered from 1 as the
    trainer prints them; [] without a history.

    `best_epoch` (0-based, as metrics.json records it) is the epoch the run's `monitor` picked;
    both charts mark that one, and none is marked when the run recorded none.
    """
    history = _read_history(Path(history_csv))
    if not history.get("epoch"):
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in ("loss", "accuracy"):
        if not any(
            v is not None for v in history.get(metric, []) + history.get(f"val_{metric}", [])
        ):
            continue
        figure, axes = pyplot.subplots(figsize=(6.4, 4))
        for key, label, colour in (
            (metric, "train", TRAIN_COLOUR),
            (f"val_{metric}", "validation", VAL_COLOUR),
        ):
            values = history.get(key) or [None] * len(history["epoch"])
            points = [
                (e + 1, v) for e, v in zip(history["epoch"], values, strict=True) if v is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", markersize=3, label=label, color=colour)
        if best_epoch is not None:
            picked = f"best epoch {best_epoch + 1}" + (f" ({monitor})" if monitor else "")
            axes.axvline(best_epoch + 1, color="#9ca3af", linestyle=":", linewidth=1, label=picked)
        axes.set_title(metric)
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.legend()
        written.append(_save(figure, out_dir / f"{metric}.png"))
    return written


def plot_confusion_matrix(
    matrix: list[list[int]], normalized: list[list[float]], class_names: list[str], path: Path
) -> Path:
    """Heat-map of the row-normalised matrix (rows = true class), cells annotated with counts."""
    counts = np.asarray(matrix, dtype=np.int64)
    rates = np.nan_to_num(np.asarray(normalized, dtype=np.float64))
    n = len(class_names)
    if counts.shape != (n, n) or rates.shape != (n, n):
        raise ValueError(
            f"confusion matrices must be {n}x{n} for {n} class names "
            f"(received counts {counts.shape}, normalized {rates.shape})"
        )
    side = min(max(5.0, 0.45 * n + 2.5), MAX_FIGURE_INCHES)
    figure, axes = pyplot.subplots(figsize=(side + 1, side))
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= MAX_ANNOTATED_CLASSES:
        size = 10 if n <= 10 else 8 if n <= 20 else 7
        for row in range(n):
            for column in range(n):
                colour = "white" if rates[row, column] > 0.5 else "#1f2937"
                text = str(counts[row, column])
                axes.text(column, row, text, ha="center", va="center", color=colour, fontsize=size)
    if n <= MAX_LABELLED_CLASSES:
        labels = [_label(name, 22) for name in class_names]
        axes.set_xticks(range(n), labels, rotation=90 if n > 6 else 30, ha="center")
        axes.set_yticks(range(n), labels)
        axes.tick_params(labelsize=9 if n <= 30 else 7)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"confusion matrix ({int(counts.sum())} examples, rows normalised)")
    return _save(figure, path)


def plot_per_class(per_class: dict, path: Path) -> Path:
    """Grouped precision / recall / F1 bars, one group per class, support under each name."""
    names = list(per_class)
    n = len(names)
    width = min(max(6.4, 0.7 * n + 2), MAX_FIGURE_INCHES)
    figure, axes = pyplot.subplots(figsize=(width, 4.5))
    positions = np.arange(n)
    bar = 0.26
    for offset, (metric, colour) in zip(
        (-bar, 0.0, bar),
        (("precision", "#2563eb"), ("recall", "#f97316"), ("f1", "#10b981")),
        strict=True,
    ):
        values = [_number(per_class[name].get(metric)) for name in names]
        axes.bar(positions + offset, values, bar, label=metric, color=colour)
    labels = [f"{_label(name, 18)}\n(n={per_class[name].get('support', '?')})" for name in names]
    if n <= MAX_LABELLED_CLASSES:
        axes.set_xticks(
            positions, labels, rotation=90 if n > 12 else 0, fontsize=9 if n <= 30 else 6
        )
    axes.set_ylim(0, 1.12)
    axes.set_ylabel("score")
    axes.set_title("per-class precision, recall and F1")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(ncol=3, loc="upper right")
    return _save(figure, path)


def plot_reliability(calibration: dict, path: Path) -> Path:
    """Reliability diagram: accuracy vs confidence per bin over the diagonal; counts underneath."""
    bins = calibration.get("bins", [])
    figure, (top, bottom) = pyplot.subplots(
        2, 1, figsize=(6, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", label="perfect calibration")
    filled = [b for b in bins if b.get("count") and b.get("accuracy") is not None]
    if filled:
        lefts = [b["lower"] for b in filled]
        widths = [b["upper"] - b["lower"] for b in filled]
        top.bar(
            lefts,
            [b["accuracy"] for b in filled],
            widths,
            align="edge",
            color=TRAIN_COLOUR,
            edgecolor="white",
            alpha=0.85,
            label="accuracy",
        )
        centres = [b["lower"] + w / 2 for b, w in zip(filled, widths, strict=True)]
        top.plot(centres, [b["confidence"] for b in filled], "o", color=VAL_COLOUR, ms=4)
        top.plot([], [], "o", color=VAL_COLOUR, ms=4, label="mean confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    ece = calibration.get("ece")
    top.set_title("reliability" + (f" (ECE {ece:.4f})" if ece is not None else ""))
    bottom.bar(
        [b["lower"] for b in bins],
        [b.get("count") or 0 for b in bins],
        [b["upper"] - b["lower"] for b in bins],
        align="edge",
        color="#6b7280",
        edgecolor="white",
    )
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("examples")
    return _save(figure, path)


def plot_misclassified(examples: list[dict], path: Path, columns: int = 5) -> Path | None:
    """Grid of misclassified images titled "true → predicted (confidence)"; None without any."""
    if not examples:
        return None
    if columns < 1:
        raise ValueError(f"columns must be >= 1 (received {columns})")
    columns = min(columns, len(examples))
    rows = math.ceil(len(examples) / columns)
    figure, grid = pyplot.subplots(
        rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False
    )
    for axes, example in zip(grid.flat, examples, strict=False):
        image = _decode(example["image"])
        if image is None:
            axes.text(0.5, 0.5, "unreadable image", ha="center", va="center", color="#b91c1c")
        else:
            axes.imshow(image, interpolation="nearest" if max(image.shape) < 96 else "antialiased")
        title = (
            f"{_label(example['true'], 14)} → {_label(example['predicted'], 14)}"
            f" ({example['confidence']:.2f})"
        )
        axes.set_title(title, fontsize=9, color="#b91c1c")
        axes.set_xlabel(_label(example.get("name", ""), 28), fontsize=7)
        axes.set_xticks([])
        axes.set_yticks([])
    for axes in list(grid.flat)[len(examples) :]:
        axes.axis("off")
    return _save(figure, path)


def _read_history(path: Path) -> dict[str, list]:
    """Columns of history.csv: epochs as ints, blanks as None; {} when missing or empty."""
    if not path.is_file():
        return {}
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    history: dict[str, list] = {}
    for index, row in enumerate(rows):
        history.setdefault("epoch", []).append(int(float(row.get("epoch") or index)))
        for key, value in row.items():
            if key and key != "epoch":
                history.setdefault(key, []).append(
                    float(value) if value not in ("", None) else None
                )
    return history


def _decode(data: bytes) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _label(text: object, limit: int) -> str:
    """A user string made safe for matplotlib: shortened, and `$` kept from starting mathtext."""
    text = str(text)
    if len(text) > limit:
        # Keep both ends: names often differ only in their suffix (class_101, class_102).
        head = (limit - 1) // 2
        text = text[:head] + "…" + text[len(text) - (limit - 1 - head) :]
    return text.replace("$", r"\$")


def _number(value: object) -> float:
    return 0.0 if value is None else float(value)


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, format="png")  # exactly `path`, whatever its suffix
    pyplot.close(figure)
    return path
