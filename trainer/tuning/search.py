"""`imgclf tune`: start, resume or overwrite a search, as one process or a chief or worker.

KerasTuner's own oracles (random, grid, Bayesian, Hyperband) propose the values and its
BaseTuner runs the trials (trials.py), so its chief/worker distribution (KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP/PORT) and its saved state (resume after a crash) apply unchanged.
"""

import datetime
import json
import os
import shutil
from pathlib import Path

from keras_tuner.src import config as keras_tuner_config

from configs import loader, schema
from core import atomic_write, errors
from trainer.tuning import oracles, results, space, trials

SEARCH_FILE = "search.json"  # what the search was started with; a resume must match it
RESUME_MODES = ("auto", "resume", "overwrite")


class TuningError(errors.UserError):
    """The search cannot start or go on; the message says why and what to change."""


def role() -> str:
    """single, chief or worker, by KerasTuner's environment: KERASTUNER_ORACLE_IP set means a
    distributed search, and the tuner whose KERASTUNER_TUNER_ID contains 'chief' serves the
    oracle (KerasTuner's own rule)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    missing = [
        name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if name not in os.environ
    ]
    if missing:
        raise TuningError(
            f"KERASTUNER_ORACLE_IP is set (a distributed search) but {' and '.join(missing)} "
            "is not: set KERASTUNER_TUNER_ID (chief, tuner0, tuner1, ...) and "
            "KERASTUNER_ORACLE_PORT"
        )
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def run(cfg: schema.Config, mode: str = "auto") -> "results.Results | None":
    """Runs (or resumes) the search of `cfg.tuning`; returns its results (None on a worker,
    whose trials the chief reports).

    mode: `auto` resumes a search found in the tuning directory and otherwise starts one,
    `resume` requires one, `overwrite` deletes it and its trial runs first.
    """
    if mode not in RESUME_MODES:
        raise ValueError(f"mode must be one of {RESUME_MODES} (received {mode!r})")
    who = role()
    directory = trials.search_directory(cfg)
    started = None if mode == "overwrite" else read_search_file(directory)
    if mode == "resume" and started is None:
        raise TuningError(
            f"--resume: no search to resume in {directory} (no {SEARCH_FILE}); "
            "run without --resume to start it"
        )
    # The space is checked before anything is deleted or written.
    search = trials.prepare(cfg, dataset_version=started["dataset_version"] if started else None)
    if mode == "overwrite" and who != "worker":
        remove_search(search.directory, search.runs_dir, search.name)
    if started is not None:
        check_unchanged(search, started)
    elif who != "worker":
        write_search_file(search)
    hyperparameters = space.build_hyperparameters(search.params)
    oracle_seed = cfg.tuning.seed if cfg.tuning.seed is not None else cfg.seed
    oracle = oracles.build_oracle(
        cfg.tuning, search.objective, hyperparameters, oracle_seed, cfg.train.epochs
    )
    oracle.announce = who == "chief"
    tuner = trials.ConfigTuner(oracle, search)
    done = len(getattr(tuner.oracle, "trials", {}) or {})
    print(
        f"tune: {'resuming' if done else 'starting'} search {search.name} "
        f"({cfg.tuning.algorithm}, {search.direction} {search.label}, "
        f"{len(search.params)} key(s), at most {cfg.tuning.max_trials} trial(s)"
        f"{f', {done} trial(s) so far' if done else ''}; {who}) in {search.directory}",
        flush=True,
    )
    # KerasTuner prints the traceback of every failed trial (its DEBUG is on by default); the
    # tuner prints one line instead, and the traceback stays in trial_<id>/trial.json.
    keras_tuner_config.DEBUG = False
    stopped = None
    try:
        tuner.search(verbose=0)
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        stopped = TuningError(
            f"the search stopped after {cfg.tuning.max_consecutive_failed_trials} failed "
            f"trials in a row (last: {trials.last_line(str(error))}); fix what makes them fail "
            f"(the reasons are in {results.RESULTS_JSON}) or raise "
            "tuning.max_consecutive_failed_trials"
        )
    if who == "worker":
        print(f"tune: worker {tuner.tuner_id} ran {tuner.progress.ran} trial(s); the chief reports")
        return None
    summary = results.write(search, tuner.oracle)
    if stopped is not None:
        raise stopped
    return summary


def read_search_file(directory: Path) -> dict | None:
    path = directory / SEARCH_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_search_file(search: trials.Search) -> None:
    search.directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": search.name,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "algorithm": search.tuning.algorithm,
        "objective": search.tuning.model_dump(mode="json")["objective"],
        "direction": search.direction,
        "space": loader.to_dict(schema.Config(tuning=search.tuning))["tuning"]["space"],
        "dataset_version": search.base["data"]["version"],
        "base": search.base,
    }
    atomic_write.write_json(search.directory / SEARCH_FILE, payload)


def check_unchanged(search: trials.Search, started: dict) -> None:
    """A resumed search must search the same space from the same base config."""
    now = {
        "algorithm": search.tuning.algorithm,
        "objective": search.tuning.model_dump(mode="json")["objective"],
        "direction": search.direction,
        "space": loader.to_dict(schema.Config(tuning=search.tuning))["tuning"]["space"],
    }
    changed = [f"tuning.{key}" for key, value in now.items() if started.get(key) != value]
    changed += [f"{key}" for key in differing_keys(started.get("base", {}), search.base)]
    if changed:
        raise TuningError(
            f"search {search.name} in {search.directory} was started with another config "
            f"({', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''} changed): pass "
            "--overwrite to start it again, or set another tuning.name"
        )


def differing_keys(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        found = []
        for key in keys:
            found += differing_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [prefix.rstrip(".")]


def remove_search(directory: Path, runs_dir: Path, name: str) -> None:
    """--overwrite: the search state and the run folders of its trials go."""
    removed = sorted(runs_dir.glob(f"{name}-trial-*")) if runs_dir.is_dir() else []
    for run_dir in removed:
        shutil.rmtree(run_dir)
    existed = directory.exists()
    if existed:
        shutil.rmtree(directory)
    if removed or existed:
        print(f"tune: --overwrite removed {directory} and {len(removed)} trial run(s)")
