"""evaluator.plots and evaluator.report: real PNGs, one self-contained HTML page, its rendering."""

import base64
import csv
import hashlib
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluator import plots, report
from tests.conftest import encode, noise_image
from trainer.evaluate import classification_metrics

CLASSES = ["airplane", "<b>cat & dog</b>", "ship", "truck $1 $2"]
ESCAPED_NAME = "&lt;b&gt;cat &amp; dog&lt;/b&gt;"
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input", "source", "wbr"}


def build_metrics(seed: int = 0, n: int = 240) -> dict:
    """The evaluator's metrics dict for seeded random predictions that beat chance."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    y_true = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.6 * np.eye(k)[y_true]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = classification_metrics(y_true, probs, CLASSES, top_k=[3], calibration_bins=10)
    metrics.update(
        dataset_version="v20250101-abc123",
        split="test",
        model_path="runs/20250101-120000-digits/export",
    )
    return metrics


def write_history(path: Path, epochs: int = 6, validation: bool = True) -> Path:
    fields = ["epoch", "loss", "accuracy", "learning_rate"]
    fields += ["val_loss", "val_accuracy"] if validation else []
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for epoch in range(epochs):
            row = {"epoch": epoch, "loss": 2.0 / (epoch + 1), "accuracy": 1 - 0.5 / (epoch + 1)}
            row["learning_rate"] = 1e-3
            if validation:
                row.update(val_loss=2.2 / (epoch + 1) + 0.05, val_accuracy=1 - 0.6 / (epoch + 1))
            writer.writerow(row)
    return path


def misclassified_examples(count: int) -> list[dict]:
    return [
        {
            "image": encode(noise_image(i, (32, 32)), "PNG" if i % 2 else "JPEG"),
            "true": CLASSES[i % 4],
            "predicted": CLASSES[(i + 1) % 4],
            "confidence": 0.5 + i / 40,
            "name": f"test/{i:04d}.png",
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return build_metrics()


@pytest.fixture(scope="module")
def images(tmp_path_factory, metrics) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("plots")
    loss, accuracy = plots.plot_curves(write_history(out / "history.csv"), out)
    return {
        "loss": loss,
        "accuracy": accuracy,
        "confusion_matrix": plots.plot_confusion_matrix(
            metrics["confusion_matrix"],
            metrics["confusion_matrix_normalized"],
            CLASSES,
            out / "confusion_matrix.png",
        ),
        "per_class": plots.plot_per_class(metrics["per_class"], out / "per_class.png"),
        "reliability": plots.plot_reliability(metrics["calibration"], out / "reliability.png"),
        "misclassified": plots.plot_misclassified(
            misclassified_examples(7), out / "misclassified.png"
        ),
    }


CONTEXT = {
    "blessing": {
        "blessed": False,
        "checks": [
            {"name": "accuracy", "value": 0.71, "threshold": 0.7, "passed": True},
            {"name": "macro_f1", "value": 0.64, "threshold": 0.68, "passed": False},
        ],
    },
    "config": {"data": {"image_size": [32, 32], "batch_size": 64}, "train": {"epochs": 6}},
    "environment": {
        "python": "3.11.2",
        "tensorflow": "2.21.0",
        "devices": [{"name": "/physical_device:CPU:0", "type": "CPU"}],
    },
    "git": {"commit": "0123456789abcdef", "dirty": True},
}


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, metrics, images) -> Path:
    return report.write_report(tmp_path_factory.mktemp("report"), metrics, images, CONTEXT)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def near(rgb: np.ndarray, colour: str, tolerance: int = 12) -> int:
    """How many pixels are within `tolerance` of a #rrggbb colour on every channel."""
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - target) <= tolerance).all(axis=-1).sum())


def colours(rgb: np.ndarray) -> int:
    """How many distinct colours an image has (packed to one int each: fast on big screenshots)."""
    packed = rgb.astype(np.int32)
    return len(np.unique(packed[..., 0] << 16 | packed[..., 1] << 8 | packed[..., 2]))


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "key, width, height",
    [
        ("loss", (500, 800), (300, 500)),
        ("accuracy", (500, 800), (300, 500)),
        ("confusion_matrix", (500, 1000), (400, 900)),
        ("per_class", (500, 1000), (350, 600)),
        ("reliability", (500, 700), (500, 700)),
        ("misclassified", (1000, 1500), (400, 700)),
    ],
)
def test_every_plot_is_a_sized_png_with_content(images, key, width, height):
    rgb = pixels(images[key])
    assert width[0] <= rgb.shape[1] <= width[1], rgb.shape
    assert height[0] <= rgb.shape[0] <= height[1], rgb.shape
    assert rgb.std() > 20
    assert colours(rgb) > 50


def test_curves_show_validation_only_when_recorded(tmp_path):
    with_val = plots.plot_curves(write_history(tmp_path / "a.csv"), tmp_path / "a")
    without = plots.plot_curves(write_history(tmp_path / "b.csv", validation=False), tmp_path / "b")
    assert [p.name for p in with_val] == [p.name for p in without] == ["loss.png", "accuracy.png"]
    assert near(pixels(with_val[0]), plots.VAL_COLOUR) > 100
    assert near(pixels(without[0]), plots.VAL_COLOUR) == 0
    assert near(pixels(without[0]), plots.TRAIN_COLOUR) > 100


def test_curves_without_history_write_nothing(tmp_path):
    assert plots.plot_curves(tmp_path / "missing.csv", tmp_path / "out") == []
    (tmp_path / "empty.csv").write_text("")
    assert plots.plot_curves(tmp_path / "empty.csv", tmp_path / "out") == []
    (tmp_path / "header.csv").write_text("epoch,loss,accuracy\n")
    assert plots.plot_curves(tmp_path / "header.csv", tmp_path / "out") == []
    assert not (tmp_path / "out").exists()


def test_both_curves_mark_the_run_s_best_epoch_counted_from_one(tmp_path, drawn):
    history = write_history(tmp_path / "history.csv")
    plots.plot_curves(history, tmp_path / "out", best_epoch=2, monitor="val_loss")

    assert len(drawn) == 2
    for figure in drawn:
        [axes] = figure.axes
        train, validation, marker = axes.get_lines()
        assert list(train.get_xdata()) == [1, 2, 3, 4, 5, 6]  # epoch 0 of history.csv is 1
        assert list(marker.get_xdata()) == [3, 3] and marker.get_linestyle() == ":"
        assert marker.get_label() == "best epoch 3 (val_loss)"


def test_curves_mark_no_best_epoch_when_the_run_recorded_none(tmp_path, drawn):
    plots.plot_curves(write_history(tmp_path / "history.csv"), tmp_path / "out")
    assert len(drawn) == 2
    for figure in drawn:
        [axes] = figure.axes
        assert [line.get_label() for line in axes.get_lines()] == ["train", "validation"]


def test_the_banner_says_why_and_diagnoses_are_a_warning(tmp_path, metrics):
    why = (
        "NOT blessed: accuracy 0.2500 does not beat always answering 'airplane' (0.2500 of the "
        "240 images) by the required margin: needs >= 0.3250 and p < 0.01 (p = 0.54)"
    )
    blessing = {"blessed": False, "checks": [], "reason": why[13:], "summary": why}
    diagnosed = {**metrics, "diagnoses": ["validation accuracy stayed at chance (0.25)"]}
    raw = report.write_report(tmp_path, diagnosed, {}, {"blessing": blessing}).read_text()
    verdict = raw[raw.index('<div class="verdict fail">') :]
    assert verdict.index(report._e(why)) < verdict.index("</div>")
    warning = raw[raw.index('<div class="warning">') :]
    assert warning.index("validation accuracy stayed at chance (0.25)") < warning.index("</div>")

    plain = report.write_report(tmp_path / "plain", metrics, {}, {"blessing": blessing})
    assert 'class="warning"' not in plain.read_text()


def test_confusion_matrix_plot_follows_the_matrix(tmp_path, metrics, images):
    matrix = np.array(metrics["confusion_matrix"])
    matrix[0, 0], matrix[0, 1] = matrix[0, 1], matrix[0, 0]
    normalized = matrix / matrix.sum(axis=1, keepdims=True)
    changed = plots.plot_confusion_matrix(
        matrix.tolist(), normalized.tolist(), CLASSES, tmp_path / "changed.png"
    )
    again = plots.plot_confusion_matrix(
        metrics["confusion_matrix"],
        metrics["confusion_matrix_normalized"],
        CLASSES,
        tmp_path / "again.png",
    )
    assert digest(changed) != digest(images["confusion_matrix"])
    assert digest(again) == digest(images["confusion_matrix"])


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plots draw, kept open for inspection instead of being closed on saving."""
    figures = []
    close = plots.pyplot.close
    monkeypatch.setattr(plots.pyplot, "close", figures.append)
    yield figures
    for figure in figures:
        close(figure)


def bars(axes) -> dict[str, list[tuple[float, float, float]]]:
    """Each bar series of `axes` by its label: (left edge, width, height) per bar."""
    return {
        container.get_label(): [(p.get_x(), p.get_width(), p.get_height()) for p in container]
        for container in axes.containers
    }


def test_per_class_bars_show_each_class_s_precision_recall_and_f1(tmp_path, metrics, drawn):
    per_class = metrics["per_class"]
    plots.plot_per_class(per_class, tmp_path / "per_class.png")

    [figure] = drawn
    [axes] = figure.axes
    series = bars(axes)
    assert list(series) == ["precision", "recall", "f1"]
    ticks = [label.get_text() for label in axes.get_xticklabels()]
    assert ticks == [
        f"{plots._label(name, 18)}\n(n={per_class[name]['support']})" for name in CLASSES
    ]
    for metric, offset in zip(series, (-1, 0, 1), strict=True):
        centres = [left + width / 2 for left, width, _ in series[metric]]
        assert centres == pytest.approx([i + offset * 0.26 for i in range(len(CLASSES))])
        heights = [height for _, _, height in series[metric]]
        assert heights == pytest.approx([per_class[name][metric] for name in CLASSES])
    # The three series differ for these predictions, so swapping two could not go unnoticed.
    assert len({tuple(h for _, _, h in bars) for bars in series.values()}) == 3


def test_reliability_diagram_shows_each_bin_s_accuracy_confidence_and_count(
    tmp_path, metrics, drawn
):
    calibration = metrics["calibration"]
    bins = calibration["bins"]
    filled = [b for b in bins if b["count"]]
    assert 0 < len(filled) < len(bins)  # some empty bins, which must not be drawn on top
    plots.plot_reliability(calibration, tmp_path / "reliability.png")

    [figure] = drawn
    top, bottom = figure.axes
    assert bars(top) == {
        "accuracy": [
            (pytest.approx(b["lower"]), pytest.approx(0.1), pytest.approx(b["accuracy"]))
            for b in filled
        ]
    }
    [diagonal] = [line for line in top.get_lines() if line.get_label() == "perfect calibration"]
    assert diagonal.get_xydata().tolist() == [[0, 0], [1, 1]]
    [points] = [
        line for line in top.get_lines() if line.get_marker() == "o" and len(line.get_xdata())
    ]
    assert points.get_xdata() == pytest.approx([b["lower"] + 0.05 for b in filled])
    assert points.get_ydata() == pytest.approx([b["confidence"] for b in filled])
    assert top.get_title() == f"reliability (ECE {calibration['ece']:.4f})"
    [counts] = bars(bottom).values()
    assert counts == [(pytest.approx(b["lower"]), pytest.approx(0.1), b["count"]) for b in bins]


def test_confusion_matrix_many_classes_and_wrong_shape(tmp_path):
    n = 40
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 5, (n, n)) + np.diag(rng.integers(20, 40, n))
    normalized = matrix / matrix.sum(axis=1, keepdims=True)
    names = [f"class_{i}" for i in range(n)]
    path = plots.plot_confusion_matrix(matrix.tolist(), normalized.tolist(), names, tmp_path / "m")
    assert pixels(path).shape[1] < 3100
    with pytest.raises(ValueError, match=r"must be 3x3 .*received counts \(40, 40\)"):
        plots.plot_confusion_matrix(matrix.tolist(), normalized.tolist(), names[:3], path)


def test_misclassified_grid(tmp_path):
    assert plots.plot_misclassified([], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    examples = misclassified_examples(2) + [{**misclassified_examples(1)[0], "image": b"junk"}]
    path = plots.plot_misclassified(examples, tmp_path / "grid.png", columns=2)
    rgb = pixels(path)
    assert rgb.shape[0] > rgb.shape[1]  # 2 columns x 2 rows of taller-than-wide cells
    with pytest.raises(ValueError, match=r"columns must be >= 1 \(received 0\)"):
        plots.plot_misclassified(examples, tmp_path / "bad.png", columns=0)


class Page(HTMLParser):
    """Tags, attributes and text of a page; fails on a closing tag that closes nothing open."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.ids: list[str] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._heading = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
            if name == "id":
                self.ids.append(value)
        if tag not in VOID_TAGS:
            self.open.append(tag)
        self._heading = tag in ("h1", "h2", "h3")

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        self._heading = False

    def handle_data(self, data):
        self.text.append(data)
        if self._heading:
            self.headings.append(data)


def test_report_is_one_valid_self_contained_file(report_html):
    raw = report_html.read_text(encoding="utf-8")
    page = Page(raw)
    assert page.open == []
    assert report_html.name == "report.html"
    for marker in ("http://", "https://", "<script", "<link", "@import", "url(", "//cdn"):
        assert marker not in raw.lower(), marker
    images = [value for tag, name, value in page.attributes if tag == "img" and name == "src"]
    assert len(images) == 6
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
            assert image.format == "PNG"
    for tag, name, value in page.attributes:
        if name in ("href", "src", "action", "srcset", "poster"):
            assert value.startswith(("#", "data:")), (tag, name, value)


def test_report_has_every_section_and_number(report_html, metrics):
    raw = report_html.read_text(encoding="utf-8")
    page = Page(raw)
    text = " ".join(page.text)
    assert set(report.SECTIONS) <= set(page.ids)
    for title in report.SECTIONS.values():
        assert title in page.headings
    assert "imgclf evaluation — 20250101-120000-digits" in page.headings
    assert f"{100 * metrics['accuracy']:.2f}%" in text
    assert f"{100 * metrics['top_k_accuracy']['3']:.2f}%" in text
    for metric in ("precision", "recall", "f1"):
        for average in ("macro", "micro", "weighted"):
            assert f"{metrics[metric][average]:.4f}" in text
    assert f"{metrics['roc_auc']['macro']:.4f}" in text
    assert f"{metrics['calibration']['ece']:.4f}" in text
    assert "✗ Not blessed" in text and "macro_f1" in text and "✗ fail" in text
    for name, values in metrics["per_class"].items():
        assert name in text
        assert f"{values['recall']:.4f}" in text and f"{values['roc_auc']:.4f}" in text
    worst = min(metrics["per_class"], key=lambda name: metrics["per_class"][name]["recall"])
    assert f'<tr class="worst"><td>{report._e(worst)}</td>' in raw
    assert raw.count('class="worst"') == 1
    assert "Most confused pairs" in page.headings
    assert "image_size:" in text and "batch_size: 64" in text
    for value in ("v20250101-abc123", metrics["model_path"], "2.21.0", "0123456789abcdef (dirty)"):
        assert value in text


def test_report_escapes_user_strings(tmp_path, metrics):
    raw = report.write_report(tmp_path, metrics, {}, {"name": "<i>x</i>"}).read_text()
    assert ESCAPED_NAME in raw
    assert "<b>" not in raw and "<i>" not in raw
    assert "&lt;i&gt;x&lt;/i&gt;" in raw
    assert "<b>cat & dog</b>" in " ".join(Page(raw).text)


def test_report_without_optional_parts(tmp_path, metrics):
    lean = {**metrics, "most_confused": [], "dataset_version": None, "split": None}
    path = report.write_report(tmp_path, lean, {"misclassified": None}, {})
    page = Page(path.read_text())
    text = " ".join(page.text)
    assert page.open == [] and set(report.SECTIONS) <= set(page.ids)
    assert not any(tag == "img" for tag, _, _ in page.attributes)
    assert "No training history was found." in text and "No config recorded." in text
    assert "blessed" not in text.lower()


def test_report_refuses_a_non_image(tmp_path, metrics):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="must be PNG or JPEG"):
        report.write_report(tmp_path, metrics, {"loss": tmp_path / "notes.txt"}, {})


@pytest.mark.parametrize(
    "model_path, name",
    [
        ("runs/20250101-abc/export", "20250101-abc"),
        ("/srv/models/digits/3", "digits"),
        ("models/flowers.keras", "flowers.keras"),
        (None, "unnamed model"),
    ],
)
def test_title_names_the_model(model_path, name):
    assert report._model_name(model_path) == name


def test_report_renders_in_headless_chromium(tmp_path, report_html):
    if report.find_browser() is None:
        pytest.skip(
            "no Chromium on PATH (chromium, chromium-browser, google-chrome): "
            "install it with apt-get install chromium"
        )
    shot = pixels(report.screenshot(report_html, tmp_path / "report.png", height=2400))
    assert shot.shape == (2400, 1280, 3)
    top = shot[:1200]
    assert colours(top) > 500
    assert (top.min(axis=-1) < 200).mean() > 0.05  # text, tiles and charts, not a blank page
    assert near(shot[:150], "#111827", 2) > 50_000  # the dark header bar
    # The same page without its images: the charts' colours must disappear from the screenshot.
    stripped = tmp_path / "stripped.html"
    raw = report_html.read_text(encoding="utf-8")
    assert raw.count('src="data:') == 6
    stripped.write_text(re.sub(r'src="data:[^"]*"', "", raw), encoding="utf-8")
    bare = pixels(report.screenshot(stripped, tmp_path / "bare.png", height=2400))
    assert near(shot, plots.VAL_COLOUR) > 200  # the validation curves
    assert near(bare, plots.VAL_COLOUR) == 0
    assert colours(shot) > 2 * colours(bare)


def test_the_dataset_card_renders_as_text_in_headless_chromium(tmp_path, metrics):
    if report.find_browser() is None:
        pytest.skip("no Chromium on PATH: install it with apt-get install chromium")
    card = "# Dataset 0123456789abcdef\n\nCats and dogs.\n\n" + "".join(
        f"| class_{i:02d} | 160 | 20 | 20 | 200 |\n" for i in range(30)
    )
    shots = {}
    for name, context in (("with", {**CONTEXT, "dataset_card": card}), ("without", CONTEXT)):
        html = report.write_report(tmp_path / name, metrics, {}, context)
        assert ('class="dataset-card"' in html.read_text()) == (name == "with")
        shots[name] = pixels(report.screenshot(html, tmp_path / f"{name}.png", height=4000))
    # Thirty-odd lines of card text: many more dark (text) pixels than the page without it.
    dark = {name: int((shot.min(axis=-1) < 120).sum()) for name, shot in shots.items()}
    assert dark["with"] > dark["without"] + 5_000, dark
