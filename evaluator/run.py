"""One evaluation: a SavedModel on labelled test images -> metrics.json, charts,
predictions.jsonl, blessing.json and report.html in one folder.

The output folder is the model's run folder when the evaluation is the run's own record (its
dataset's test split, which run.json describes and `imgclf registry push` reads the blessing
of); any other evaluation of a run goes to `<run>/evaluations/<timestamp>-<data>/`, so it never
overwrites that record, and a model outside any run to `./evaluation-<model>-<timestamp>/`.
"""

import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from configs import loader, schema
from core import atomic_write, errors, run_layout
from evaluator import data, diagnose, gate, models, plots, predictions, report
from tracking import environment, records
from trainer import evaluate as metrics_lib

logger = logging.getLogger(__name__)

# Longest name of the test data in an evaluation folder's name.
DATA_NAME_CHARS = 40
CHARTS = {
    "confusion_matrix": "confusion_matrix.png",
    "per_class": "per_class.png",
    "reliability": "reliability.png",
    "misclassified": "misclassified.png",
}


class EvaluationError(errors.UserError):
    """The evaluation cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Result:
    out_dir: Path
    metrics: dict
    blessing: dict
    report: Path
    skipped: list[dict]
    test: data.TestData

    def line(self) -> str:
        """The one-line summary the command ends with: the verdict, why, and where it wrote."""
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        augmented = self.metrics.get("tta", models.NO_TTA) != models.NO_TTA
        tta = f", tta {self.metrics['tta']}" if augmented else ""
        return (
            f"evaluate: accuracy {self.metrics['accuracy']:.4f} on "
            f"{self.metrics['num_examples']:,} images{skipped} ({self.test.describe()}{tta}), "
            f"{self.blessing['summary']} -> {self.report}"
        )


def evaluate(
    cfg: schema.Config,
    model: str | models.ModelSource,
    test_data: str | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    baseline: str | None = None,
    progress: bool | None = None,
) -> Result:
    """Evaluates `model` (and the gate's baseline, on the same images) and writes every artefact.

    `test_data` defaults to the dataset version the model was trained on; `baseline` to
    evaluation.gate.baseline.
    """
    source = model if isinstance(model, models.ModelSource) else resolve(model, cfg)
    test = data.open_test_data(test_data or default_test_data(source, cfg), split, cfg.data)
    evaluation = cfg.evaluation
    baseline_source, no_baseline = find_baseline(
        baseline or evaluation.gate.baseline, cfg, source, asked=baseline is not None
    )
    classifiers = [models.Classifier(source, evaluation.tta)]
    if baseline_source is not None:
        # Scored the same way as the candidate, TTA included: the drop compares like with like.
        classifiers.append(models.Classifier(baseline_source, evaluation.tta))
    where = f"--test-data {test.location}"
    if test.labels is not None:
        for classifier in classifiers:
            predictions.check_labels(test.labels, classifier, where)
    results, skipped = predictions.predict(
        classifiers,
        test.read(),
        evaluation.batch_size,
        evaluation.misclassified_images,
        test.count,
        where,
        progress,
    )
    report_skipped(skipped)
    if not len(results[0].y_true):
        example = f" (e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise EvaluationError(
            f"no image of {where} could be classified: {len(skipped)} skipped{example}"
        )
    metrics = compute_metrics(results[0], evaluation)
    metrics.update(
        dataset_version=test.dataset_version,
        split=test.split,
        model_path=str(source.path),
        test_data=test.location,
        tta=evaluation.tta,
        num_skipped=len(skipped),
        skipped=skipped,
    )
    baseline_metrics = baseline_summary = None
    if baseline_source is not None:
        baseline_metrics = compute_metrics(results[1], evaluation)
        baseline_summary = {
            "spec": baseline_source.spec,
            "model_path": str(baseline_source.path),
            **{key: baseline_metrics[key] for key in ("accuracy", "macro_f1", "num_examples")},
        }
    blessing = gate.bless(
        evaluation.gate, metrics, baseline_metrics, baseline_summary, no_baseline=no_baseline
    )
    blessing.update(
        model_path=str(source.path), dataset_version=test.dataset_version, split=test.split
    )
    out = Path(out_dir) if out_dir is not None else default_out_dir(source, test)
    report_path = write_artefacts(out, cfg, source, metrics, results[0], blessing, test.card)
    return Result(out, metrics, blessing, report_path, skipped, test)


def resolve(spec: str, cfg: schema.Config) -> models.ModelSource:
    return models.resolve(spec, cfg.registry.store)


def find_baseline(
    spec: str | None, cfg: schema.Config, source: models.ModelSource, asked: bool
) -> tuple[models.ModelSource | None, str | None]:
    """The model to compare with, or None and why there is none (for blessing.json).

    `auto` is the production version of the model the pipeline pushes. A configured baseline
    that is not labelled yet (before the first promotion) is no baseline: the first model is
    judged without one. One given on the command line (`asked`) must exist.
    """
    if not spec:
        return None, None
    auto = spec == models.AUTO
    if auto:
        spec = models.production_spec(cfg.pipeline.push.model or cfg.serving.model_name)
    try:
        found = resolve(spec, cfg)
    except models.NothingLabelled as error:
        if asked and not auto:
            raise
        print(f"evaluate: no baseline yet ({error})", file=sys.stderr)
        return None, str(error)
    if auto and models.same_model(found, source):
        # Production is this very model (the pipeline evaluating what it pushed before).
        return None, f"{spec} is the model evaluated"
    theirs, ours = found.metadata.get("class_names"), source.metadata.get("class_names")
    if auto and theirs and ours and set(theirs) != set(ours):
        # A new label map (a class added or renamed): production cannot score the same images.
        return None, f"{spec} has other classes ({', '.join(theirs)})"
    return found, None


def compute_metrics(result: predictions.Predictions, cfg: schema.EvaluationConfig) -> dict:
    return metrics_lib.classification_metrics(
        result.y_true,
        result.probabilities,
        result.class_names,
        top_k=cfg.top_k,
        calibration_bins=cfg.calibration_bins,
        most_confused=cfg.most_confused,
    )


def default_test_data(source: models.ModelSource, cfg: schema.Config) -> str:
    """The dataset version the model was trained on, under its own data.output_dir or this
    config's."""
    version = source.metadata.get("dataset_version")
    model_config = source.metadata.get("config") or {}
    roots = [(model_config.get("data") or {}).get("output_dir"), cfg.data.output_dir]
    for root in filter(None, roots):
        candidate = os.path.join(root, version or "-")
        if version and data.find_version_dir(candidate, root, cfg.data) is not None:
            return candidate
    trained_on = f"dataset {version}" if version else "its dataset"
    raise EvaluationError(
        f"--test-data is needed: {source.spec} was trained on {trained_on}, which is not under "
        f"{' or '.join(filter(None, roots))}; give a class folder, a manifest or a dataset "
        "version folder"
    )


def default_out_dir(source: models.ModelSource, test: data.TestData) -> Path:
    """The run folder for the run's own record, else a new folder: see the module docstring."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if source.run_dir is None:
        return Path(f"evaluation-{source.name}-{stamp}")
    if is_own_record(source, test):
        return source.run_dir
    out = source.run_dir / run_layout.EVALUATIONS / f"{stamp}-{data_name(test)}"
    number = 1
    while out.exists():  # two evaluations of one run on the same data in one second
        number += 1
        out = out.with_name(f"{stamp}-{data_name(test)}-{number}")
    return out


def is_own_record(source: models.ModelSource, test: data.TestData) -> bool:
    """Whether `test` is the split the run's metrics.json and run.json describe: the test split
    of the dataset version it was trained on."""
    version = source.metadata.get("dataset_version")
    return version is not None and test.dataset_version == version and test.split == "test"


def data_name(test: data.TestData) -> str:
    """A short, file-name-safe name of the test data: `<version>-<split>`, or the last part of
    its location (`holdout`, `labels` for labels.csv) with the split when there is one."""
    if test.dataset_version:
        name = test.dataset_version
    else:
        last = test.location.rstrip("/").rsplit("/", 1)[-1]
        name = last.split(".", 1)[0] or last or "data"
    if test.split:
        name = f"{name}-{test.split}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:DATA_NAME_CHARS]


def report_skipped(skipped: list[dict], shown: int = 10) -> None:
    for entry in skipped[:shown]:
        logger.warning("skipped %s: %s", entry["path"], entry["reason"])
    if len(skipped) > shown:
        logger.warning("... and %d more skipped (all in metrics.json)", len(skipped) - shown)


def write_artefacts(
    out: Path,
    cfg: schema.Config,
    source: models.ModelSource,
    metrics: dict,
    result: predictions.Predictions,
    blessing: dict,
    dataset_card: str | None = None,
) -> Path:
    """metrics.json, predictions.jsonl, blessing.json, the charts and report.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    # A run's model: what training recorded (epochs, timing, diagnoses) goes beside the new
    # figures, in the run folder and in any evaluation of the run elsewhere.
    trained = training_facts(source.run_dir) if source.run_dir is not None else {}
    notes = list(trained.get("diagnoses", []))
    found = diagnose.one_class_answers(metrics)
    if found:
        print(f"evaluate: warning: {found}", file=sys.stderr)
        notes.append(found)
    written = {**metrics, **trained, "diagnoses": list(dict.fromkeys(notes))}
    atomic_write.write_json(out / run_layout.METRICS, written)
    with open(out / run_layout.PREDICTIONS, "w", encoding="utf-8") as file:
        for row in result.rows():
            file.write(json.dumps(row) + "\n")
    atomic_write.write_json(out / run_layout.BLESSING, blessing)
    images = {}
    monitor = early_stopping_monitor(source)
    if source.history_csv is not None:
        curves = plots.plot_curves(source.history_csv, out, written.get("best_epoch"), monitor)
        images.update({path.stem: path for path in curves})
    images["confusion_matrix"] = plots.plot_confusion_matrix(
        metrics["confusion_matrix"],
        metrics["confusion_matrix_normalized"],
        metrics["class_names"],
        out / CHARTS["confusion_matrix"],
    )
    images["per_class"] = plots.plot_per_class(metrics["per_class"], out / CHARTS["per_class"])
    images["reliability"] = plots.plot_reliability(
        metrics["calibration"], out / CHARTS["reliability"]
    )
    images["misclassified"] = plots.plot_misclassified(result.wrong, out / CHARTS["misclassified"])
    if images["misclassified"] is None:
        # No mistakes this time: a grid from an earlier evaluation here would mislead.
        (out / CHARTS["misclassified"]).unlink(missing_ok=True)
    context = {
        "name": source.name,
        "config": loader.to_dict(cfg),
        "dataset_version": metrics["dataset_version"],
        "model_path": metrics["model_path"],
        "environment": environment.environment(),
        "git": environment.git_commit(Path(__file__).parent),
        "blessing": blessing,
        "monitor": monitor,
        "dataset_card": dataset_card,
    }
    return report.write_report(out, written, images, context)


def training_facts(run_dir: Path) -> dict:
    """run_layout.TRAINING_KEYS as the trainer recorded them in run.json; for a run trained
    before they were recorded there, as the trainer then wrote them into metrics.json."""
    record = records.read(run_dir) or {}
    recorded = record.get("training") or read_json(run_dir / run_layout.METRICS)
    return {key: recorded[key] for key in run_layout.TRAINING_KEYS if key in recorded}


def early_stopping_monitor(source: models.ModelSource) -> str | None:
    """The history column whose best epoch the run recorded (train.early_stopping.monitor)."""
    saved = source.metadata.get("config") or {}
    return ((saved.get("train") or {}).get("early_stopping") or {}).get("monitor")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}
