"""A finished search as results: ranked table, objective and importance chart, best.yaml.

Importance of a key is a one-key-at-a-time measure over the completed trials where the key
was active: |Spearman rank correlation| between its value (log of it for log_uniform) and the
objective for numbers, the correlation ratio eta (share of the objective's spread explained by
the groups) for choices. Both lie in 0..1; neither sees interactions between keys. It needs at
least 3 such trials with 2 different values, else it is left out.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib import pyplot  # noqa: E402

from configs import loader  # noqa: E402
from core import atomic_write  # noqa: E402
from tracking import records  # noqa: E402
from trainer.tuning import space, trials  # noqa: E402

RESULTS_JSON = "results.json"
CHART = "search.png"
BEST_CONFIG = "best.yaml"
COMPLETED, FAILED = "completed", "failed"
MIN_TRIALS_FOR_IMPORTANCE = 3


@dataclass
class Row:
    """One trial: the oracle's view (status, score, values) and its runs' records."""

    trial_id: str
    status: str
    score: float | None
    values: dict
    run_ids: list[str]
    objectives: dict[str, float] = field(default_factory=dict)  # each, at the best epoch
    test_accuracy: float | None = None
    epochs: int | None = None
    duration_s: float | None = None
    reason: str | None = None
    order: int = 0


@dataclass
class Results:
    rows: list[Row]  # ranked: completed best first, then the others in trial order
    importance: dict[str, float | None]
    directory: Path
    best_config: Path | None
    chart: Path
    elapsed_s: float | None = None
    objective: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def best(self) -> Row | None:
        return self.rows[0] if self.rows and self.rows[0].status == COMPLETED else None

    def summary(self) -> str:
        done = sum(row.status == COMPLETED for row in self.rows)
        failed = sum(row.status == FAILED for row in self.rows)
        head = f"tune: {len(self.rows)} trial(s) ({done} completed, {failed} failed)"
        if self.elapsed_s is not None:
            head += f" in {format_duration(self.elapsed_s)}"
        best = self.best
        if best is None:
            return f"{head}; no trial completed, so no best.yaml; results in {self.directory}"
        test = f", test accuracy {best.test_accuracy:.4f}" if best.test_accuracy is not None else ""
        return (
            f"{head}; best trial {best.trial_id}: {self.objective} {best.score:.4f}{test} "
            f"-> {self.best_config} (chart {self.chart})"
        )


def write(search, oracle) -> "Results":
    """Collects every trial of the oracle, prints the ranked table and writes results.json,
    search.png and best.yaml (the best trial's full config) into the search directory."""
    rows = rank(collect(search, oracle), search.direction)
    importance = parameter_importance(rows, search.params)
    directory = search.directory
    directory.mkdir(parents=True, exist_ok=True)
    chart = plot(rows, importance, search.label, search.direction, directory / CHART)
    best_path = None
    if rows and rows[0].status == COMPLETED:
        best_path = write_best_config(search, rows[0], directory / BEST_CONFIG)
    outcome = Results(
        rows=rows,
        importance=importance,
        directory=directory,
        best_config=best_path,
        chart=chart,
        elapsed_s=getattr(oracle, "elapsed_s", lambda: None)(),
        objective=search.label,
    )
    write_results(outcome, search, directory / RESULTS_JSON)
    print(table(rows, search))
    ranked = [f"{key} {value:.2f}" for key, value in importance.items() if value is not None]
    if ranked:
        print(f"tune: importance (|rank correlation| or eta): {', '.join(ranked)}")
    print(outcome.summary())
    return outcome


def collect(search, oracle) -> list[Row]:
    order = {trial_id: i for i, trial_id in enumerate(getattr(oracle, "start_order", []))}
    rows = []
    for trial_id, trial in oracle.trials.items():
        values = trial.hyperparameters.values
        chosen = space.config_values(search.params, values)
        if "tuner/epochs" in values:
            chosen["train.epochs"] = int(values["tuner/epochs"])
        run_ids = [search.run_id_of(trial_id, k) for k in range(search.tuning.executions_per_trial)]
        row = Row(
            trial_id=trial_id,
            status=str(trial.status).lower(),
            score=trial.score if records.is_number(trial.score) else None,
            values=chosen,
            run_ids=run_ids,
            objectives={
                name: trial.metrics.get_last_value(name)
                for name in trials.objective_names(search.objective)
                if trial.metrics.exists(name)
            },
            order=order.get(trial_id, len(order) + len(rows)),
        )
        fill_from_records(row, search.runs_dir)
        if row.status != COMPLETED and row.reason is None and trial.message:
            row.reason = trial.message.strip().splitlines()[-1].split("FailedTrialError: ")[-1]
        rows.append(row)
    return rows


def fill_from_records(row: Row, runs_dir: Path) -> None:
    """Test accuracy, epochs and duration from the trial's run.json files (mean over its
    executions); nothing when the runs are not in this runs folder (another machine's)."""
    found = [records.read(Path(runs_dir) / run_id) for run_id in row.run_ids]
    found = [record for record in found if record]
    if not found:
        return
    accuracies = [(r.get("metrics") or {}).get("accuracy") for r in found]
    accuracies = [a for a in accuracies if records.is_number(a)]
    row.test_accuracy = sum(accuracies) / len(accuracies) if accuracies else None
    row.epochs = max(len(r.get("epochs") or []) for r in found)
    durations = [r.get("duration_s") for r in found if records.is_number(r.get("duration_s"))]
    row.duration_s = sum(durations) if durations else None
    reasons = [r["reason"] for r in found if r.get("status") == records.FAILED and r.get("reason")]
    row.reason = reasons[0] if reasons else None


def rank(rows: list[Row], direction: str) -> list[Row]:
    scored = [row for row in rows if row.status == COMPLETED and row.score is not None]
    scored.sort(key=lambda row: (-row.score if direction == "max" else row.score, row.order))
    others = sorted((row for row in rows if row not in scored), key=lambda row: row.order)
    return scored + others


def table(rows: list[Row], search) -> str:
    keys = [param.key for param in search.params]
    if any("train.epochs" in row.values for row in rows) and "train.epochs" not in keys:
        keys.append("train.epochs")
    # Several objectives: the score, then each of them.
    parts = trials.objective_names(search.objective)
    parts = parts if len(parts) > 1 else []
    header = ["rank", "trial", "status", search.label, *parts, "test acc", "epochs", "time"]
    header += keys
    lines = []
    for rank_number, row in enumerate(rows, start=1):
        cells = [
            str(rank_number) if row.status == COMPLETED else "-",
            row.trial_id,
            row.status,
            f"{row.score:.4f}" if row.score is not None else "-",
            *(short(row.objectives.get(name, "-")) for name in parts),
            f"{row.test_accuracy:.4f}" if row.test_accuracy is not None else "-",
            str(row.epochs) if row.epochs is not None else "-",
            format_duration(row.duration_s),
        ]
        cells += [short(row.values.get(key, "-")) for key in keys]
        lines.append(cells)
    widths = [max(len(c) for c in column) for column in zip(header, *lines, strict=True)]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *lines]
    ]
    for row in rows:
        if row.reason and row.status != COMPLETED:
            text.append(f"  trial {row.trial_id}: {short(row.reason, 160)}")
    return "\n".join(text)


def short(value, width: int = 24) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"


# --- importance ---


def parameter_importance(rows: list[Row], params) -> dict[str, float | None]:
    """{key: importance in 0..1 or None}, most important first (see the module docstring)."""
    done = [row for row in rows if row.status == COMPLETED and row.score is not None]
    found: dict[str, float | None] = {}
    for param in params:
        pairs = [(row.values[param.key], row.score) for row in done if param.key in row.values]
        if len(pairs) < MIN_TRIALS_FOR_IMPORTANCE or len({json.dumps(v) for v, _ in pairs}) < 2:
            found[param.key] = None
            continue
        values, scores = zip(*pairs, strict=True)
        if param.kind == "choice":
            found[param.key] = correlation_ratio([json.dumps(v) for v in values], scores)
        else:
            numbers = [math.log(v) if param.kind == "log_uniform" else v for v in values]
            found[param.key] = abs_spearman(numbers, scores)
    return dict(sorted(found.items(), key=lambda item: -1 if item[1] is None else -item[1]))


def ranks(values) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    array = np.asarray(values, dtype=float)
    order = array.argsort(kind="stable")
    result = np.empty(len(array))
    result[order] = np.arange(len(array), dtype=float)
    for value in np.unique(array):
        tied = array == value
        result[tied] = result[tied].mean()
    return result


def abs_spearman(values, scores) -> float | None:
    a, b = ranks(values), ranks(scores)
    if a.std() == 0 or b.std() == 0:
        return 0.0 if b.std() == 0 else None
    return float(abs(np.corrcoef(a, b)[0, 1]))


def correlation_ratio(groups, scores) -> float:
    scores = np.asarray(scores, dtype=float)
    total = ((scores - scores.mean()) ** 2).sum()
    if total == 0:
        return 0.0
    between = 0.0
    for group in set(groups):
        members = scores[[g == group for g in groups]]
        between += len(members) * (members.mean() - scores.mean()) ** 2
    return float(math.sqrt(between / total))


# --- files ---


def plot(rows: list[Row], importance: dict, objective: str, direction: str, path: Path) -> Path:
    """search.png: the objective of every trial in start order with the best so far, failed
    trials marked at the bottom; beside it the importance of each key."""
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4), width_ratios=[3, 2])
    in_order = sorted(rows, key=lambda row: row.order)
    xs = list(range(1, len(in_order) + 1))
    done = [(x, row.score) for x, row in zip(xs, in_order, strict=True) if row.score is not None]
    if done:
        dx, dy = zip(*done, strict=True)
        left.scatter(dx, dy, color="#2563eb", zorder=3, label="trial")
        best, best_line = None, []
        for y in dy:
            best = y if best is None else (max(best, y) if direction == "max" else min(best, y))
            best_line.append(best)
        left.step(dx, best_line, where="post", color="#f97316", label="best so far")
    failed = [x for x, row in zip(xs, in_order, strict=True) if row.score is None]
    if failed:
        bottom = min((y for _, y in done), default=0.0)
        left.scatter(failed, [bottom] * len(failed), marker="x", color="#dc2626", label="failed")
    left.set_xlabel("trial (in start order)")
    left.set_ylabel(f"{objective} ({direction})")
    left.set_title(f"{objective} per trial")
    if xs:
        left.set_xticks(xs, [row.trial_id for row in in_order], rotation=90 if len(xs) > 20 else 0)
    left.legend(loc="best")
    known = [(key, value) for key, value in importance.items() if value is not None]
    if known:
        keys, values = zip(*reversed(known), strict=True)
        right.barh(keys, values, color="#2563eb")
        right.set_xlim(0, 1)
        right.set_xlabel("importance (|rank correlation| or eta)")
    else:
        right.text(0.5, 0.5, "importance needs 3+ completed trials", ha="center", va="center")
        right.set_axis_off()
    right.set_title("parameter importance")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def best_config(search, best: Row) -> dict:
    """The best trial's full config as `imgclf train` takes it: its first run's resolved config
    (or the base with its values when that run is elsewhere), without the tuning section and
    with the configured train.run_id (a new run, not the trial's folder)."""

    record = records.read(search.runs_dir / best.run_ids[0])
    if record and record.get("config"):
        raw = dict(record["config"])
    else:
        values = {param.key: param.encode(best.values[param.key]) for param in search.params}
        values = {k: v for k, v in values.items() if k in best.values}
        if "train.epochs" in best.values:
            values["tuner/epochs"] = best.values["train.epochs"]
        raw = trials.trial_config(search, values, best.run_ids[0])
    raw.pop("tuning", None)
    raw["train"] = {**raw["train"], "run_id": search.run_id}
    loader.validate(raw)  # best.yaml loads: a bad one would fail here, not at `imgclf train`
    return raw


def write_best_config(search, best: Row, path: Path) -> Path:
    raw = best_config(search, best)
    header = (
        f"# Best trial {best.trial_id} of search {search.name} "
        f"({search.label} {best.score:.4f}): the full config it trained with.\n"
        f"# Train it again: imgclf train --config {path.name}\n"
    )
    body = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=100)
    return atomic_write.write_text(path, header + body)


def write_results(outcome: Results, search, path: Path) -> None:
    payload = {
        "search": search.name,
        "algorithm": search.tuning.algorithm,
        "objective": search.label,
        "objectives": [o.model_dump() for o in search.tuning.objectives()],
        "direction": search.direction,
        "elapsed_s": outcome.elapsed_s,
        "best_config": str(outcome.best_config) if outcome.best_config else None,
        "importance": outcome.importance,
        "trials": [
            {
                "rank": rank_number if row.status == COMPLETED else None,
                "trial_id": row.trial_id,
                "status": row.status,
                "objective": row.score,
                "objectives": row.objectives,
                "test_accuracy": row.test_accuracy,
                "epochs": row.epochs,
                "duration_s": row.duration_s,
                "hyperparameters": row.values,
                "runs": row.run_ids,
                "reason": row.reason,
            }
            for rank_number, row in enumerate(outcome.rows, start=1)
        ],
    }
    atomic_write.write_json(path, payload)
