"""`runs compare --html`: one self-contained page, its curves as PNGs embedded in base64."""

import base64
import html
import io
from pathlib import Path

from tracking import compare, records, render

# Curves drawn per run: (metric, title); train solid, validation dashed, one colour per run.
CURVES = (("loss", "loss"), ("accuracy", "accuracy"))
COLOURS = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #111; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.value { max-width: 28em; word-break: break-all; }
.better { background: #dcfce7; }
.worse, .regression { background: #fee2e2; color: #991b1b; font-weight: 600; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; }
"""


def write(result: compare.Comparison, out: str | Path) -> Path:
    """Writes the comparison page to `out` and returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(result))
    return out


def page(result: compare.Comparison) -> str:
    ids = result.run_ids
    heads = "".join(f"<th>run {i + 1}</th>" for i in range(len(ids)))
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>imgclf: {len(ids)} runs compared</title><style>{STYLE}</style></head><body>",
        f"<h1>{len(ids)} runs compared</h1>",
        _runs_table(result),
        "<h2>Curves</h2>",
        f'<img alt="per-epoch curves" src="data:image/png;base64,{curves_png(result.records)}">',
        f"<h2>Config differences ({len(result.config)})</h2>",
    ]
    if result.config:
        rows = "".join(
            f"<tr><td>{_e(key)}</td>"
            + "".join(f'<td class="value">{_e(render.cell(v, 10_000))}</td>' for v in values)
            + "</tr>"
            for key, values in result.config.items()
        )
        parts.append(f"<table><tr><th>key</th>{heads}</tr>{rows}</table>")
    else:
        parts.append("<p>None: the runs share one config.</p>")
    parts += ["<h2>Final metrics</h2>", "<p>Deltas are against run 1 (the baseline).</p>"]
    rows = "".join(_metric_row(key, values) for key, values in result.metrics.items())
    parts.append(f"<table><tr><th>metric</th>{heads}</tr>{rows}</table>")
    if result.classes:
        parts += [
            "<h2>Per-class scores</h2>",
            f"<p>{len(result.regressions)} regression(s): a class's recall or F1 lower than "
            "in run 1, highlighted.</p>",
            _class_table(result),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _runs_table(result: compare.Comparison) -> str:
    rows = []
    for i, record in enumerate(result.records):
        colour = COLOURS[i % len(COLOURS)]
        rows.append(
            f'<tr><td><span class="swatch" style="background:{colour}"></span>run {i + 1}'
            f"{' (baseline)' if i == 0 else ''}</td><td>{_e(record['run_id'])}</td>"
            f"<td>{_e(records.display_status(record))}</td>"
            f"<td>{_e(render.when(record.get('started')))}</td>"
            f"<td>{_e(render.duration(records.elapsed_s(record)))}</td>"
            f"<td>{_e(record.get('dataset_version') or '-')}</td></tr>"
        )
    return (
        "<table><tr><th>run</th><th>id</th><th>status</th><th>started</th><th>duration</th>"
        f"<th>dataset</th></tr>{''.join(rows)}</table>"
    )


def _metric_row(key: str, values: list) -> str:
    cells = [f'<td class="num">{_e(render.cell(values[0]))}</td>']
    for value in values[1:]:
        if value is None or values[0] is None:
            cells.append(f'<td class="num">{_e(render.cell(value))}</td>')
            continue
        verdict = compare.verdict(key, values[0], value)
        css = f"num {verdict}" if verdict in ("better", "worse") else "num"
        cells.append(f'<td class="{css}">{_e(render.cell(value))} ({value - values[0]:+.4f})</td>')
    return f"<tr><td>{_e(key)}</td>{''.join(cells)}</tr>"


def _class_table(result: compare.Comparison) -> str:
    count = len(result.records)
    metrics = list(compare.CLASS_METRICS)
    head = "".join(f"<th>{m} {i + 1}</th>" for m in metrics for i in range(count))
    rows = []
    for name, scores in result.classes.items():
        cells = []
        for metric in metrics:
            for run, value in enumerate(scores.get(metric) or [None] * count):
                regression = result.is_regression(run, name, metric)
                css = "num regression" if regression else "num"
                mark = f"{compare.REGRESSION_MARK} " if regression else ""
                cells.append(f'<td class="{css}">{mark}{_e(render.cell(value))}</td>')
        rows.append(f"<tr><td>{_e(name)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>class</th>{head}</tr>{''.join(rows)}</table>"


def curves_png(compared: list[dict]) -> str:
    """Loss and accuracy per epoch of every run, overlaid, as base64 PNG text."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    from matplotlib import pyplot, ticker

    figure, axes = pyplot.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4.2))
    for axis, (metric, title) in zip(axes, CURVES, strict=True):
        for i, record in enumerate(compared):
            epochs = record.get("epochs") or []
            colour = COLOURS[i % len(COLOURS)]
            for key, style, split in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                points = [(e["epoch"] + 1, e[key]) for e in epochs if key in e]
                if points:
                    xs, ys = zip(*points, strict=True)
                    axis.plot(
                        xs,
                        ys,
                        style,
                        color=colour,
                        marker="o",
                        markersize=3,
                        label=f"run {i + 1} {split}",
                    )
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _e(text) -> str:
    return html.escape(str(text))
