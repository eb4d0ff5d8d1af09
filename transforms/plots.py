"""Charts of dataset statistics, written as PNG files."""

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

from matplotlib import pyplot  # noqa: E402


def plot_class_counts(dataset: dict, path: str) -> None:
    """Stacked bars of images per class and split."""
    classes = dataset["label_map"]
    figure, axes = pyplot.subplots(figsize=(max(6, 0.5 * len(classes) + 2), 4))
    bottom = [0] * len(classes)
    for split, info in dataset["splits"].items():
        counts = [info["per_class"].get(name, 0) for name in classes]
        axes.bar(classes, counts, bottom=bottom, label=f"{split} ({info['count']})")
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.set_title(
        f"dataset {dataset['version']}: {dataset['written']} images, "
        f"imbalance {dataset['imbalance_ratio']:.2f}"
    )
    axes.set_ylabel("images")
    axes.legend()
    if len(classes) > 12:
        axes.tick_params(axis="x", labelrotation=90)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
