"""The evaluation report: one self-contained HTML file (inline CSS, images as data URIs)."""

import base64
import datetime
import html
import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from core import errors, run_layout
from evaluator import report_page

log = logging.getLogger(__name__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Trailing path parts that say nothing about which model this is (runs/<id>/export/1).
GENERIC_PARTS = {"export", "exports", "saved_model", "savedmodel", "model", "models", "serving"}
# Where each image goes, and its caption.
FIGURES = {
    "loss": ("curves", "Loss per epoch"),
    "accuracy": ("curves", "Accuracy per epoch"),
    "confusion_matrix": ("confusion", "Confusion matrix"),
    "per_class": ("per-class", "Precision, recall and F1 per class"),
    "reliability": ("calibration", "Reliability diagram"),
    "misclassified": ("misclassified", "Misclassified examples"),
}
SECTIONS = {
    "summary": "Summary",
    "curves": "Training curves",
    "confusion": "Confusion",
    "per-class": "Per class",
    "calibration": "Calibration",
    "misclassified": "Misclassified",
    "config": "Config",
    "dataset": "Dataset card",
    "environment": "Environment",
}
IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def write_report(out_dir: Path, metrics: dict, images: dict[str, Path], context: dict) -> Path:
    """Writes `out_dir/report.html` and returns its path.

    `images` maps FIGURES keys (any may be missing or None; unknown keys go under "More figures")
    to PNG files. `context` may hold "blessing", "config", "environment", "git" ({"commit",
    "dirty"}), "name" (the title, by default derived from the model path), "created" and
    "monitor" (the metric whose best epoch the run recorded).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {key: _data_uri(Path(path)) for key, path in images.items() if path is not None}
    name = context.get("name") or _model_name(metrics.get("model_path"))
    created = context.get("created") or datetime.datetime.now(datetime.UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    body = {
        "summary": _summary(metrics, context.get("blessing")),
        "curves": _curves(figures, metrics, context.get("monitor")),
        "confusion": _split(_figures(figures, "confusion"), _most_confused(metrics)),
        "per-class": _figures(figures, "per-class") + _per_class_table(metrics),
        "calibration": _figures(figures, "calibration") + _calibration(metrics),
        "misclassified": _figures(figures, "misclassified") or _muted("No misclassified examples."),
        "config": _config(context.get("config")),
        "dataset": _dataset_card(context.get("dataset_card")),
        "environment": _environment(metrics, context),
    }
    extra = [key for key in figures if key not in FIGURES]
    if extra:
        body["more"] = _figure_grid([(key.replace("_", " "), figures[key]) for key in extra])
    titles = {**SECTIONS, "more": "More figures"}
    subtitle = " · ".join(
        part
        for part in (
            f"dataset {metrics['dataset_version']}" if metrics.get("dataset_version") else "",
            f"split {metrics['split']}" if metrics.get("split") else "",
            f"{metrics.get('num_examples', '?')} examples",
            f"{metrics.get('num_classes', '?')} classes",
            f"test-time augmentation {metrics['tta']}"
            if metrics.get("tta", "none") != "none"
            else "",
            created,
        )
        if part
    )
    nav = "".join(f'<a href="#{key}">{_e(titles[key])}</a>' for key in body)
    sections = "".join(
        f'<section id="{key}" class="card"><h2>{_e(titles[key])}</h2>{content}</section>'
        for key, content in body.items()
    )
    page = report_page.PAGE.format(
        title=_e(f"imgclf evaluation — {name}"),
        css=report_page.CSS,
        subtitle=_e(subtitle),
        nav=nav,
        sections=sections,
    )
    path = out_dir / run_layout.REPORT
    path.write_text(page, encoding="utf-8")
    log.info("wrote %s (%d KiB)", path, len(page) // 1024)
    return path


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html_path: Path, png_path: Path, width: int = 1280, height: int = 2400) -> Path:
    """Renders `html_path` in headless Chromium to a width x height PNG (the top of the page)."""
    browser = find_browser()
    if browser is None:
        raise errors.UserError(
            f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH): "
            "install Chromium, e.g. apt-get install chromium"
        )
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    # A throw-away profile: parallel runs don't fight over one, and nothing lands in ~/.config.
    with tempfile.TemporaryDirectory(
        prefix="imgclf-chromium-", ignore_cleanup_errors=True
    ) as profile:
        command = [
            browser,
            "--headless",  # the new headless mode since Chromium 132; the old one is gone
            "--no-sandbox",  # the sandbox can't start as root or in most containers
            "--disable-gpu",
            "--disable-dev-shm-usage",  # small /dev/shm in containers crashes the renderer
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png_path}",
            Path(html_path).resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not png_path.is_file():
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{browser} wrote no screenshot (exit {result.returncode}):\n{tail}")
    return png_path


def _summary(metrics: dict, blessing: dict | None) -> str:
    cards = [("Accuracy", _pct(metrics.get("accuracy")))]
    for k, value in sorted((metrics.get("top_k_accuracy") or {}).items(), key=lambda i: int(i[0])):
        cards.append((f"Top-{k} accuracy", _pct(value)))
    cards += [
        ("Macro F1", _num(metrics.get("macro_f1"))),
        ("ROC-AUC (macro)", _num((metrics.get("roc_auc") or {}).get("macro"))),
        ("ROC-AUC (weighted)", _num((metrics.get("roc_auc") or {}).get("weighted"))),
        ("ECE", _num((metrics.get("calibration") or {}).get("ece"))),
    ]
    tiles = "".join(
        f'<div class="tile"><div class="value">{_e(value)}</div>'
        f'<div class="label">{_e(label)}</div></div>'
        for label, value in cards
    )
    averages = ("macro", "micro", "weighted")
    rows = [
        [metric.capitalize() if metric != "f1" else "F1"]
        + [_num((metrics.get(metric) or {}).get(a)) for a in averages]
        for metric in ("precision", "recall", "f1")
    ]
    table = _table(["", *averages], rows, numeric_from=1)
    return (
        _blessing(blessing)
        + _diagnoses(metrics.get("diagnoses"))
        + f'<div class="tiles">{tiles}</div>'
        + table
    )


def _blessing(blessing: dict | None) -> str:
    if not blessing:
        return ""
    blessed = bool(blessing.get("blessed"))
    # Why, not only what: the gate's own sentence (older blessings have only a reason).
    why = blessing.get("summary") or blessing.get("reason")
    verdict = (
        f'<div class="verdict {"pass" if blessed else "fail"}">'
        f"{'✓ Blessed' if blessed else '✗ Not blessed'}"
        + (f'<p class="why">{_e(why)}</p>' if why else "")
        + "</div>"
    )
    rows = []
    for check in blessing.get("checks", []):
        passed = bool(check.get("passed"))
        status = (
            '<span class="pass">✓ pass</span>' if passed else '<span class="fail">✗ fail</span>'
        )
        rows.append(
            [_e(check.get("name")), _e(_num(check.get("value"))), _e(_num(check.get("threshold")))]
            + [status]
        )
    table = _table(["check", "value", "threshold", ""], rows, numeric_from=1, escaped=True)
    return verdict + (table if rows else "")


def _diagnoses(diagnoses: list[str] | None) -> str:
    """What training or this evaluation found wrong (metrics.json "diagnoses"), unmissable."""
    if not diagnoses:
        return ""
    items = "".join(f"<li>{_e(sentence)}</li>" for sentence in diagnoses)
    return f'<div class="warning"><strong>⚠ Diagnoses</strong><ul>{items}</ul></div>'


def _curves(figures: dict[str, str], metrics: dict, monitor: str | None) -> str:
    shown = _figures(figures, "curves")
    if not shown:
        return _muted("No training history was found.")
    best = metrics.get("best_epoch")
    if best is None:
        return shown + _muted("Epochs from 1. The run recorded no best epoch: none is marked.")
    watched = f"the best {monitor}" if monitor else "the best"
    return shown + _muted(
        f"Epochs from 1. The dotted line marks epoch {best + 1}, {watched}, on both charts."
    )


def _per_class_table(metrics: dict) -> str:
    per_class = metrics.get("per_class") or {}
    if not per_class:
        return _muted("No per-class metrics.")
    worst_count = min(5, max(1, len(per_class) // 5))
    by_recall = sorted(per_class, key=lambda name: _sort_key(per_class[name].get("recall")))
    worst = set(by_recall[:worst_count])
    rows, classes = [], []
    for name, values in per_class.items():
        recall = values.get("recall")
        bar = f' style="--v:{float(recall):.4f}"' if recall is not None else ""
        rows.append(
            [
                _e(name),
                _e(_num(values.get("precision"))),
                f'<span class="bar"{bar}>{_e(_num(recall))}</span>',
                _e(_num(values.get("f1"))),
                _e(str(values.get("support", "—"))),
                _e(_num(values.get("roc_auc"))),
            ]
        )
        classes.append("worst" if name in worst else "")
    header = ["class", "precision", "recall", "F1", "support", "ROC-AUC"]
    note = _muted(
        f"Highlighted: the {worst_count} class{'es' if worst_count > 1 else ''} "
        "with the lowest recall."
    )
    return _table(header, rows, numeric_from=1, escaped=True, row_classes=classes) + note


def _most_confused(metrics: dict) -> str:
    pairs = metrics.get("most_confused") or []
    if not pairs:
        return _muted("No confused pairs: every example was classified correctly.")
    rows = [
        [p.get("true"), p.get("predicted"), _num(p.get("count")), _pct(p.get("rate"))]
        for p in pairs
    ]
    return "<h3>Most confused pairs</h3>" + _table(
        ["true class", "predicted as", "count", "rate of true class"], rows, numeric_from=2
    )


def _calibration(metrics: dict) -> str:
    calibration = metrics.get("calibration")
    if not calibration:
        return _muted("No calibration data.")
    return _muted(
        f"Expected calibration error {_num(calibration.get('ece'))} over "
        f"{calibration.get('num_bins', len(calibration.get('bins', [])))} confidence bins: the "
        "example-weighted gap between confidence and accuracy (0 is perfectly calibrated)."
    )


def _dataset_card(card: str | None) -> str:
    """The evaluated dataset version's card.md, as written (Markdown reads as plain text)."""
    if not card:
        return _muted("No dataset card: the test data is not an ingested version with one.")
    return f'<pre class="dataset-card">{_e(card)}</pre>'


def _config(config: dict | None) -> str:
    if not config:
        return _muted("No config recorded.")
    # Through JSON first so Paths, enums and the like print as plain strings.
    plain = json.loads(json.dumps(config, default=str))
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return f"<pre>{_e(text)}</pre>"


def _environment(metrics: dict, context: dict) -> str:
    rows = [
        ["model path", metrics.get("model_path")],
        ["dataset version", metrics.get("dataset_version")],
        ["split", metrics.get("split")],
        ["test-time augmentation", metrics.get("tta")],
    ]
    git = context.get("git")
    if git:
        rows.append(["git commit", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}"])
    rows += [[key, value] for key, value in (context.get("environment") or {}).items()]
    return _table(["", ""], [[key, _plain(value)] for key, value in rows], header_row=False)


def _figures(figures: dict[str, str], section: str) -> str:
    # In FIGURES order (loss before accuracy), whatever order the caller built `images` in.
    chosen = [
        (caption, figures[key])
        for key, (where, caption) in FIGURES.items()
        if where == section and key in figures
    ]
    return _figure_grid(chosen) if chosen else ""


def _split(left: str, right: str) -> str:
    """Two blocks side by side on wide screens, stacked on narrow ones."""
    if not left:
        return right
    return f'<div class="split"><div>{left}</div><div>{right}</div></div>'


def _figure_grid(figures: list[tuple[str, str]]) -> str:
    items = "".join(
        f'<figure><img src="{uri}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for caption, uri in figures
    )
    return f'<div class="figures">{items}</div>'


def _table(
    header: list[str],
    rows: list[list],
    numeric_from: int = 99,
    escaped: bool = False,
    row_classes: list[str] | None = None,
    header_row: bool = True,
) -> str:
    """A zebra table; cells are escaped unless `escaped` says they are already safe HTML."""
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f"<td{_num_class(i, numeric_from)}>{cell if escaped else _e(cell)}</td>"
            for i, cell in enumerate(row)
        )
        css = row_classes[index] if row_classes else ""
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    head = "".join(f"<th{_num_class(i, numeric_from)}>{_e(h)}</th>" for i, h in enumerate(header))
    thead = f"<thead><tr>{head}</tr></thead>" if header_row else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def _num_class(column: int, numeric_from: int) -> str:
    return ' class="num"' if column >= numeric_from else ""


def _data_uri(path: Path) -> str:
    data = path.read_bytes()
    for signature, mime in IMAGE_TYPES.items():
        if data.startswith(signature):
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    raise ValueError(f"report images must be PNG or JPEG files (received {path}: {data[:8]!r})")


def _model_name(model_path: str | None) -> str:
    """runs/20250101-abc/export/1 -> 20250101-abc: the last part that names something."""
    if not model_path:
        return "unnamed model"
    parts = [p for p in Path(str(model_path).rstrip("/")).parts if p not in ("/", "")]
    while len(parts) > 1 and (parts[-1].isdigit() or parts[-1].lower() in GENERIC_PARTS):
        parts.pop()
    return parts[-1] if parts else str(model_path)


def _plain(value: object) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, list):
        return "; ".join(
            " ".join(str(v) for v in item.values()) if isinstance(item, dict) else str(item)
            for item in value
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _sort_key(value: object) -> float:
    return float("inf") if value is None else float(value)


def _num(value: object, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _muted(text: str) -> str:
    return f'<p class="muted">{_e(text)}</p>'


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)
