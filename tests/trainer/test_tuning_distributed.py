"""Distributed imgclf tune: a chief serving KerasTuner's oracle and two workers on 127.0.0.1."""

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.trainer import test_tuning
from tracking import records
from trainer.tuning import results

pytestmark = [pytest.mark.slow, pytest.mark.distributed, pytest.mark.beam]

REPO = Path(__file__).resolve().parents[2]
NAME = "dist"
MAX_TRIALS = 4
WORKERS = ("tuner0", "tuner1")
# Three processes importing TensorFlow on 2 cores, 4 trials of about 5 s on two workers, and up
# to 20 s for the chief to notice that the workers are done (KerasTuner polls): about 60 s.
SEARCH_TIMEOUT_S = 240
TAIL_CHARS = 3000
CHIEF_STARTED = re.compile(r"^tune: trial (\d+) started on (\S+)$", re.MULTILINE)
WORKER_STARTED = re.compile(r"^tune: trial (\d+) started: ", re.MULTILINE)
WORKER_RAN = re.compile(r"^tune: worker (\S+) ran (\d+) trial\(s\)", re.MULTILINE)


@dataclass
class Process:
    tuner_id: str
    pid: int
    returncode: int | None
    output: str


@dataclass
class Search:
    root: Path
    chief: Process
    workers: dict[str, Process]
    seconds: float

    def tails(self) -> str:
        """The end of every process's output, for assertion messages."""
        return "\n".join(
            f"--- {p.tuner_id} (pid {p.pid}, exit {p.returncode}) ---\n{p.output[-TAIL_CHARS:]}"
            for p in (self.chief, *self.workers.values())
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_search(tmp_path_factory, ingested_digits, digits_dir) -> Search:
    root = tmp_path_factory.mktemp("distributed_search")
    config = test_tuning.write_config(
        root,
        ingested_digits,
        digits_dir,
        {
            "name": NAME,
            "algorithm": "random",
            "max_trials": MAX_TRIALS,
            "seed": 5,
            "space": {"optimizer.learning_rate": {"log_uniform": [1e-3, 1e-1]}},
        },
    )
    command = [sys.executable, "-u", "-m", "cli", "tune", "--config", str(config)]
    shared = {
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",  # fewer TensorFlow notes in the output tails
    }
    started = time.time()
    running = {}
    try:
        # The chief first; workers that come earlier wait for its oracle (gRPC wait_for_ready).
        for tuner_id in ("chief", *WORKERS):
            log = (root / f"{tuner_id}.log").open("w")
            env = os.environ | shared | {"KERASTUNER_TUNER_ID": tuner_id}
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()  # the child holds its own copy
            running[tuner_id] = process
        deadline = time.time() + SEARCH_TIMEOUT_S
        while time.time() < deadline:
            codes = [process.poll() for process in running.values()]
            # A failed process can leave the others waiting for ever (the chief for a worker's
            # trial, a worker for the chief): stop at the first failure.
            if all(code == 0 for code in codes) or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.5)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
            process.wait()
    found = {
        tuner_id: Process(
            tuner_id,
            process.pid,
            process.returncode,
            (root / f"{tuner_id}.log").read_text(errors="replace"),
        )
        for tuner_id, process in running.items()
    }
    chief = found.pop("chief")
    return Search(root, chief, found, time.time() - started)


def chief_assignments(search: Search) -> list[tuple[str, str]]:
    """(trial id, tuner id) for every trial the chief's oracle handed out, in order."""
    return CHIEF_STARTED.findall(search.chief.output)


def test_chief_and_workers_exit_0_and_the_chief_writes_the_results(distributed_search):
    search = distributed_search
    codes = {p.tuner_id: p.returncode for p in (search.chief, *search.workers.values())}
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, search.tails()
    folder = search.root / "runs" / "tuning" / NAME
    summary = test_tuning.results_json(search.root, NAME)
    assert [t["status"] for t in summary["trials"]] == ["completed"] * MAX_TRIALS, search.tails()
    assert summary["best_config"] == str(folder / results.BEST_CONFIG)
    assert (folder / results.BEST_CONFIG).is_file() and (folder / results.CHART).is_file()
    assert f"tune: {MAX_TRIALS} trial(s) ({MAX_TRIALS} completed, 0 failed)" in (
        search.chief.output
    ), search.tails()
    # The chief serves the oracle and trains nothing.
    assert not WORKER_STARTED.search(search.chief.output), search.tails()
    print(f"distributed search of {MAX_TRIALS} trials on 2 workers: {search.seconds:.0f}s")


def test_every_trial_ran_exactly_once_as_one_completed_run(distributed_search):
    search = distributed_search
    trial_ids = [f"{i}" for i in range(MAX_TRIALS)]
    # Workers' own lines: every trial started once, on one worker.
    started = [t for w in search.workers.values() for t in WORKER_STARTED.findall(w.output)]
    assert sorted(started) == trial_ids, search.tails()
    # The chief's lines: the oracle handed out every trial once.
    assert sorted(t for t, _ in chief_assignments(search)) == trial_ids, search.tails()
    ran = dict(WORKER_RAN.findall("\n".join(w.output for w in search.workers.values())))
    assert {k: int(v) for k, v in ran.items()} == {
        w: len(WORKER_STARTED.findall(search.workers[w].output)) for w in WORKERS
    }, search.tails()
    # One run folder per trial, trained once (a trial started twice would count 2 attempts).
    runs_dir = search.root / "runs"
    folders = sorted(p.name for p in runs_dir.glob(f"{NAME}-trial-*"))
    assert folders == [f"{NAME}-trial-{t}" for t in trial_ids], search.tails()
    for trial_id in trial_ids:
        run = records.read(runs_dir / f"{NAME}-trial-{trial_id}")
        assert run["status"] == records.COMPLETED, search.tails()
        assert run["attempts"] == 1, f"trial {trial_id} trained {run['attempts']} times"
        assert run["trial"]["trial_id"] == trial_id and run["trial"]["search"] == NAME


def test_trials_are_split_across_both_workers(distributed_search):
    """The chief's 'started on tunerK' lines say who ran what; each run's recorded tuner id and
    pid, and each worker's own lines, must agree with them."""
    search = distributed_search
    assigned = dict(chief_assignments(search))
    assert set(assigned.values()) == set(WORKERS), search.tails()  # each worker ran >= 1
    pids = {w.pid: w.tuner_id for w in search.workers.values()}
    for trial_id, tuner_id in assigned.items():
        assert trial_id in WORKER_STARTED.findall(search.workers[tuner_id].output), search.tails()
        run = records.read(search.root / "runs" / f"{NAME}-trial-{trial_id}")
        assert pids.get(run["pid"]) == tuner_id, f"trial {trial_id}: pid {run['pid']} {pids}"
        assert run["trial"]["tuner_id"] == tuner_id
