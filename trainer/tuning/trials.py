"""One trial = one recorded training run: its config, and the KerasTuner tuner that runs it.

A trial is `trainer.task.run` on the search's base config with the trial's values set at their
key paths, in its own run folder `<train.runs_dir>/<search>-trial-<id>`; it scores the test split
in memory, since no trial is exported. KerasTuner's BaseTuner drives it, so its chief/worker
distribution and its saved state apply unchanged.
"""

import copy
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import keras_tuner
from keras_tuner.engine import base_tuner
from keras_tuner.src.engine import objective as keras_tuner_objective

from configs import loader, schema
from core import locations, run_layout
from tracking import records
from trainer import task
from trainer.tuning import space
from transforms import dataset_store

# --- one search: what every trial starts from ---


@dataclass
class Search:
    """Everything a trial needs; the same in every process of a (distributed) search."""

    name: str
    directory: Path
    tuning: schema.TuningConfig
    # KerasTuner's: several are one MultiObjective, its score their sum (see build_objective).
    objective: keras_tuner.Objective
    params: list[space.Param]
    base: dict  # the config of every trial before its values: no tuning section, pinned data
    runs_dir: Path
    run_id: str | None  # the configured train.run_id, restored in best.yaml

    @property
    def direction(self) -> str:
        return self.objective.direction

    @property
    def label(self) -> str:
        """What a trial's score is: the objective's name, or e.g. `val_loss - val_accuracy`."""
        return objective_label(self.objective)

    def run_id_of(self, trial_id: str, execution: int = 0) -> str:
        suffix = f"-{execution + 1}" if self.tuning.executions_per_trial > 1 else ""
        return f"{self.name}-trial-{trial_id}{suffix}"


def search_name(cfg: schema.Config) -> str:
    if cfg.tuning.name:
        return cfg.tuning.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.name}-tune")


def search_directory(cfg: schema.Config) -> Path:
    """tuning.directory, or <train.runs_dir>/tuning/<search name>."""
    return Path(cfg.tuning.directory or Path(cfg.train.runs_dir) / "tuning" / search_name(cfg))


def build_objective(tuning: schema.TuningConfig) -> keras_tuner.Objective:
    """One Objective, or KerasTuner's MultiObjective for several: it scores a trial with the
    sum of the objectives to minimise minus the sum of those to maximise (unweighted), and
    minimises that score."""
    objectives = [keras_tuner.Objective(o.name, o.direction) for o in tuning.objectives()]
    if len(objectives) == 1:
        return objectives[0]
    return keras_tuner_objective.MultiObjective(objectives)


def objective_label(objective: keras_tuner.Objective) -> str:
    if not isinstance(objective, keras_tuner_objective.MultiObjective):
        return objective.name
    terms = [(o.direction == "min", o.name) for o in objective.objectives]
    text = "".join(f" {'+' if plus else '-'} {name}" for plus, name in terms)
    return text[3:] if text.startswith(" + ") else "-" + text[3:]


def objective_names(objective: keras_tuner.Objective) -> list[str]:
    if isinstance(objective, keras_tuner_objective.MultiObjective):
        return [o.name for o in objective.objectives]
    return [objective.name]


def prepare(cfg: schema.Config, dataset_version: str | None = None) -> Search:
    """Checks the space and builds the trial base; nothing is written."""
    tuning = cfg.tuning
    for key, place in (
        ("train.runs_dir", cfg.train.runs_dir),
        ("tuning.directory", tuning.directory),
    ):
        if place is not None and locations.is_url(place):
            # The search reads every trial's run folder and keeps KerasTuner's state as files.
            raise loader.ConfigError(
                f"{key} {place} is a bucket; a search needs a local folder (a shared volume "
                "for distributed tuning). Tune locally, then train best.yaml with "
                "train.runs_dir in the bucket"
            )
    name = search_name(cfg)
    directory = search_directory(cfg)
    base = loader.to_dict(cfg)
    del base["tuning"]
    objective = build_objective(tuning)
    if tuning.early_stopping_patience is not None:
        # One metric can be watched: the first objective.
        first = tuning.objectives()[0]
        base["train"]["early_stopping"].update(
            enabled=True,
            monitor=first.name,
            direction=first.direction,
            patience=tuning.early_stopping_patience,
        )
    params = space.check(cfg, base)  # before the dataset: a config error comes first
    if dataset_version is None:
        version_dir = dataset_store.resolve_version_dir(
            cfg.data.output_dir, cfg.data.version, cfg.data
        )
        dataset_version = os.path.basename(version_dir)
    # Every trial trains on one dataset version, and best.yaml names it: ingesting during a
    # search does not change what the trials are compared on.
    base["data"]["version"] = dataset_version
    return Search(
        name=name,
        directory=directory,
        tuning=tuning,
        objective=objective,
        params=params,
        base=base,
        runs_dir=Path(cfg.train.runs_dir),
        run_id=cfg.train.run_id,
    )


def trial_config(search: Search, values: dict, run_id: str, execution: int = 0) -> dict:
    """The raw config of one trial run: the base with the trial's values at their key paths."""
    raw = copy.deepcopy(search.base)
    for key, value in space.config_values(search.params, values).items():
        space.set_path(raw, key, value)
    raw["train"]["run_id"] = run_id
    raw["seed"] = raw["seed"] + execution
    if "tuner/epochs" in values:  # Hyperband's budget for this trial
        raw["train"]["epochs"] = int(values["tuner/epochs"])
    return raw


# --- the tuner: KerasTuner's BaseTuner with a trial = one training run per execution ---

# A trial whose process is killed (SIGKILL: the host's out-of-memory killer) is retried by every
# resume, since it never ended; after this many starts without an end it is recorded failed.
MAX_UNFINISHED_STARTS = 3


@dataclass
class Progress:
    started: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    ran: int = 0


class ConfigTuner(base_tuner.BaseTuner):
    """Runs each trial as `trainer.task.run` on the trial's config; reports the objective."""

    def __init__(self, oracle, search: Search):
        self.search_spec = search
        self.progress = Progress()
        # Never KerasTuner's overwrite: a worker would delete the chief's shared state.
        super().__init__(
            oracle,
            directory=str(search.directory.parent),
            project_name=search.directory.name,
            overwrite=False,
        )

    def run_trial(self, trial, *args, **kwargs):
        search = self.search_spec
        values = trial.hyperparameters.values
        outcomes = []
        for execution in range(search.tuning.executions_per_trial):
            run_id = search.run_id_of(trial.trial_id, execution)
            raw = trial_config(search, values, run_id, execution)
            tag = trial_tag(search, trial.trial_id, execution, values)
            outcomes.append(self.run_execution(raw, search.runs_dir / run_id, tag, values))
        metrics = {
            name: float(sum(o[name] for o in outcomes) / len(outcomes))
            for name in outcomes[0]
            if all(name in o for o in outcomes)
        }
        return metrics

    def run_execution(self, raw: dict, run_dir: Path, tag: dict, values: dict) -> dict:
        """Trains one run (or reuses it when it already completed with this exact config) and
        returns the history metrics of its best epoch; a failure is a FailedTrialError."""
        search = self.search_spec
        try:
            cfg = loader.validate(raw)
        except loader.ConfigError as error:
            raise self.fail(run_dir, raw, error, tag) from None
        record = records.read(run_dir)
        done = (
            record is not None
            and record.get("status") == records.COMPLETED
            and record.get("config") == loader.to_dict(cfg)
        )
        if "tuner/trial_id" in values:
            tag["continued_from"] = continue_from(search, values, run_dir, tag["execution"])
        if unfinished_starts(record) >= MAX_UNFINISHED_STARTS:
            error = task.TrainingError(
                f"stopped {record['attempts']} times without finishing (killed, e.g. out of "
                "host memory?); lower data.batch_size or the model size, or free memory"
            )
            records.fail(run_dir, error)  # before self.fail, which would count another start
            raise self.fail(run_dir, raw, error, tag)
        if not done:
            keras.backend.clear_session()  # trials in one process must not share Keras state
            try:
                # No SavedModel per trial: best.yaml trains and exports the chosen config.
                task.run(cfg, score_test=True)
            except Exception as error:  # NaN, out of memory, a bad combination: the trial fails
                raise self.fail(run_dir, raw, error, tag) from error
        epochs = records.read_epochs(run_dir)
        best = best_epoch(epochs, search.objective)
        if best is None:
            error = task.TrainingError(
                f"no finite {' and '.join(objective_names(search.objective))} in "
                f"{run_dir / run_layout.HISTORY}: the objective needs a validation split "
                "(data.split.val > 0) for val_ metrics"
            )
            raise self.fail(run_dir, raw, error, tag)
        score = search.objective.get_value(best)
        tag.update(objective_value=score, best_epoch=int(best["epoch"]))
        records.update(run_dir, trial=tag)
        # Every metric of the best epoch, and the score under KerasTuner's name for it.
        metrics = {k: float(v) for k, v in best.items() if k != "epoch" and records.is_number(v)}
        return {**metrics, search.objective.name: score}

    def fail(self, run_dir: Path, raw: dict, error: BaseException, tag: dict):
        """Records the run as failed (also when it stopped before its folder existed) and
        returns the FailedTrialError that tells KerasTuner to go on with other trials."""
        reason = f"{type(error).__name__}: {str(error).strip()}".strip().rstrip(":")
        record = records.read(run_dir)
        if record is None or record.get("status") != records.FAILED:
            run_dir.mkdir(parents=True, exist_ok=True)
            records.start(run_dir, raw, raw["data"]["version"], None, {})
            records.fail(run_dir, error)
        records.update(run_dir, trial=tag)
        self.progress.reasons[tag["trial_id"]] = reason
        return keras_tuner.errors.FailedTrialError(reason)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self.progress.started[trial.trial_id] = time.time()
        chosen = space.config_values(self.search_spec.params, trial.hyperparameters.values)
        epochs = trial.hyperparameters.values.get("tuner/epochs")
        shown = [f"{k}={format_value(v)}" for k, v in chosen.items()]
        if epochs is not None:
            shown.append(f"train.epochs={epochs}")
        print(f"tune: trial {trial.trial_id} started: {', '.join(shown)}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the oracle scores and saves it
        self.progress.ran += 1
        seconds = time.time() - self.progress.started.pop(trial.trial_id, time.time())
        objective = self.search_spec.label
        ended = self.oracle.get_trial(trial.trial_id)
        best = self.oracle.get_best_trials(1)
        best_text = (
            f" (best {best[0].score:.4f}, trial {best[0].trial_id})"
            if best and best[0].score is not None
            else ""
        )
        if ended.status == keras_tuner.engine.trial.TrialStatus.COMPLETED:
            print(
                f"tune: trial {trial.trial_id} completed in {seconds:.0f}s: "
                f"{objective} {ended.score:.4f}{best_text}",
                flush=True,
            )
        else:
            reason = self.progress.reasons.get(trial.trial_id) or last_line(ended.message)
            print(
                f"tune: trial {trial.trial_id} {str(ended.status).lower()} in {seconds:.0f}s: "
                f"{reason}{best_text}",
                flush=True,
            )


def unfinished_starts(record: dict | None) -> int:
    """How often a run was started, when it is still marked running: its process was killed
    (a failure or Ctrl-C records the run as failed)."""
    if record is None or record.get("status") != records.RUNNING:
        return 0
    return int(record.get("attempts", 0))


def trial_tag(search: Search, trial_id: str, execution: int, values: dict) -> dict:
    """What run.json's `trial` says about the search the run belongs to."""
    return {
        "search": search.name,
        "trial_id": trial_id,
        "execution": execution,
        "algorithm": search.tuning.algorithm,
        "objective": search.label,
        "direction": search.direction,
        "hyperparameters": space.config_values(search.params, values),
        "tuning_dir": str(search.directory),
        # KerasTuner's own worker id (tuner0 when not distributed): who ran the trial.
        "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "tuner0"),
    }


def continue_from(search: Search, values: dict, run_dir: Path, execution: int) -> str | None:
    """Hyperband's next round trains an earlier trial on: its checkpoints and history are copied
    into the new run, which then resumes from them up to its own train.epochs."""
    past = search.runs_dir / search.run_id_of(values["tuner/trial_id"], execution)
    if run_dir.exists() or not (past / run_layout.CHECKPOINTS).is_dir():
        return past.name if run_dir.exists() else None  # a retried continuation keeps its own
    run_dir.mkdir(parents=True)
    shutil.copytree(past / run_layout.CHECKPOINTS, run_dir / run_layout.CHECKPOINTS)
    if (past / run_layout.HISTORY).is_file():
        shutil.copy2(past / run_layout.HISTORY, run_dir / run_layout.HISTORY)
    return past.name


def best_epoch(epochs: list[dict], objective: keras_tuner.Objective) -> dict | None:
    """The history row with the best score (the first of equals) among those where every
    objective is finite, or None."""
    names = objective_names(objective)
    rows = [row for row in epochs if all(records.is_number(row.get(n)) for n in names)]
    if not rows:
        return None
    pick = max if objective.direction == "max" else min
    return pick(rows, key=objective.get_value)


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def last_line(message: str | None) -> str:
    """The last line of a traceback, without KerasTuner's own exception name."""
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    if not lines:
        return "no reason recorded"
    return re.sub(r"^keras_tuner[\w.]*\.FailedTrialError: ", "", lines[-1])
