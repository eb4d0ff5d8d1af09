"""Run records and comparisons as terminal text: aligned tables, one section per part."""

import datetime
import json

from tracking import compare, listing, records

LIST_COLUMNS = (
    ("run_id", "run id"),
    ("status", "status"),
    ("started", "started"),
    ("duration_s", "duration"),
    ("dataset_version", "dataset"),
    ("model.backbone", "backbone"),
    ("epochs_run", "epochs"),
    ("accuracy", "accuracy"),
    ("macro_f1", "macro F1"),
)
MAX_CELL = 40  # longer text (a model.cnn layer list) is cut in terminal tables


def table(header: list[str], rows: list[list[str]], indent: str = "") -> str:
    """Columns left-aligned for text, right-aligned for numbers, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    numeric = [
        bool(rows) and all(listing.as_number(row[i]) is not None or row[i] == "-" for row in rows)
        for i in range(len(header))
    ]

    def line(cells):
        return (
            indent
            + "  ".join(
                str(cell).rjust(width) if right else str(cell).ljust(width)
                for cell, width, right in zip(cells, widths, numeric, strict=True)
            ).rstrip()
        )

    return "\n".join([line(header), *(line(row) for row in rows)])


def cell(value, width: int = MAX_CELL) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def when(timestamp: str | None) -> str:
    """An ISO timestamp as local 'YYYY-MM-DD HH:MM:SS'."""
    if not timestamp:
        return "-"
    try:
        moment = datetime.datetime.fromisoformat(timestamp).astimezone()
    except ValueError:
        return timestamp
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def list_row(record: dict, keys: list[str]) -> list[str]:
    row = []
    for key in keys:
        if key == "started":
            row.append(when(record.get("started")))
        elif key == "duration_s":
            row.append(duration(records.elapsed_s(record)))
        elif key == "epochs_run":
            value = listing.lookup(record, key)
            row.append(cell(value if value is not None else len(record.get("epochs") or [])))
        else:
            row.append(cell(listing.lookup(record, key)))
    return row


def run_table(selected: list[dict], extra_keys: list[str] = ()) -> str:
    """The `runs list` table; keys filtered or sorted on get a column of their own."""
    columns = list(LIST_COLUMNS)
    shown = {key for key, _ in columns} | {"status", "started", "id", "run_id"}
    columns += [(key, key) for key in dict.fromkeys(extra_keys) if key not in shown]
    keys = [key for key, _ in columns]
    return table([heading for _, heading in columns], [list_row(r, keys) for r in selected])


def show(record: dict) -> str:
    """Everything in a run record, section by section."""
    lines = [f"run {record['run_id']}", f"  path: {record.get('path', '-')}"]
    for key in ("name", "status", "reason", "started", "ended", "attempts", "host", "pid"):
        value = records.display_status(record) if key == "status" else record.get(key)
        if value is not None:
            lines.append(f"  {key}: {when(value) if key in ('started', 'ended') else value}")
    lines.append(f"  duration: {duration(records.elapsed_s(record))}")
    lines.append(f"  dataset version: {record.get('dataset_version') or '-'}")
    git = record.get("git")
    lines.append(
        f"  git: {git['commit']}{' (uncommitted changes)' if git.get('dirty') else ''}"
        if git
        else "  git: - (not run from a git checkout)"
    )
    if record.get("mlflow"):
        mlflow = record["mlflow"]
        lines.append(
            f"  mlflow: run {mlflow['run_id']} in experiment {mlflow['experiment']} "
            f"at {mlflow['uri']}"
        )
    environment = record.get("environment")
    if environment:
        lines.append("environment:")
        for key, value in environment.items():
            if key == "devices":
                value = ", ".join(f"{d['name']} ({d['type']})" for d in value) or "-"
            elif key == "argv":
                value = " ".join(value)
            lines.append(f"  {key}: {value}")
    lines += ["config:", *("  " + line for line in _yaml(record.get("config") or {}))]
    epochs = record.get("epochs") or []
    lines.append(f"epochs: {len(epochs)}")
    if epochs:
        keys = list(dict.fromkeys(key for epoch in epochs for key in epoch))
        rows = [[cell(epoch.get(key)) for key in keys] for epoch in epochs]
        lines.append(table(keys, rows, indent="  "))
    lines += _metrics(record.get("metrics") or {})
    lines.append("artefacts:")
    for name, path in (record.get("artefacts") or {}).items():
        lines.append(f"  {name}: {path}")
    return "\n".join(lines)


def _yaml(config: dict) -> list[str]:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100).splitlines()


def _metrics(metrics: dict) -> list[str]:
    if not metrics:
        return ["metrics: - (none yet)"]
    lines = ["metrics:"]
    for key, value in records.flat_metrics(metrics, skip=("per_class",)).items():
        lines.append(f"  {key}: {cell(value)}")
    for key, value in metrics.items():
        if isinstance(value, list) and key != "confusion_matrix":
            lines.append(f"  {key}: {cell(value, width=200)}")
        elif isinstance(value, str):
            lines.append(f"  {key}: {value}")
    per_class = metrics.get("per_class") or {}
    if per_class:
        keys = list(dict.fromkeys(key for scores in per_class.values() for key in scores))
        rows = [[name, *(cell(scores.get(k)) for k in keys)] for name, scores in per_class.items()]
        lines += ["  per class:", table(["class", *keys], rows, indent="    ")]
    return lines


def comparison(result: compare.Comparison) -> str:
    """`runs compare` as text: the runs, differing config, metric deltas, per-class scores
    with regressions marked."""
    count = len(result.records)
    runs = [f"run {i + 1}" for i in range(count)]
    lines = ["runs:"]
    for i, record in enumerate(result.records):
        role = " (baseline)" if i == 0 else ""
        lines.append(
            f"  {runs[i]}: {record['run_id']}{role}  {records.display_status(record)}, "
            f"started {when(record.get('started'))}"
        )
    if result.config:
        lines.append(f"config differences ({len(result.config)}):")
        rows = [[key, *(cell(v) for v in values)] for key, values in result.config.items()]
        lines.append(table(["key", *runs], rows, indent="  "))
    else:
        lines.append("config differences: none")
    lines.append(f"final metrics (delta vs run 1, {compare.REGRESSION_MARK} = worse):")
    rows = []
    for key, values in result.metrics.items():
        row = [key, cell(values[0])]
        for value in values[1:]:
            row.append(_with_delta(key, values[0], value))
        rows.append(row)
    lines.append(table(["metric", *runs], rows, indent="  "))
    if result.classes:
        lines.append(f"per-class scores ({REGRESSION_NOTE}):")
        metrics = list(compare.CLASS_METRICS)
        header = ["class", *(f"{m} {i + 1}" for m in metrics for i in range(count))]
        rows = []
        for name, scores in result.classes.items():
            row = [name]
            for metric in metrics:
                for run, value in enumerate(scores.get(metric) or [None] * count):
                    mark = (
                        compare.REGRESSION_MARK if result.is_regression(run, name, metric) else ""
                    )
                    row.append(f"{mark}{cell(value)}")
            rows.append(row)
        lines.append(table(header, rows, indent="  "))
    for regression in result.regressions:
        lines.append(
            f"  {compare.REGRESSION_MARK} {regression.class_name} {regression.metric}: "
            f"{regression.baseline:.4f} -> {regression.value:.4f} "
            f"({regression.change:+.4f}) in run {regression.run + 1}"
        )
    return "\n".join(lines)


REGRESSION_NOTE = f"{compare.REGRESSION_MARK} = lower than in run 1"


def _with_delta(metric: str, baseline, value) -> str:
    if value is None:
        return "-"
    if baseline is None:
        return cell(value)
    verdict = compare.verdict(metric, baseline, value)
    mark = f" {compare.REGRESSION_MARK}" if verdict == "worse" else ""
    return f"{cell(value)} ({value - baseline:+.4f}){mark}"
