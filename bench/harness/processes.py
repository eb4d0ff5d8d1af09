"""Benchmarked programs in processes of their own: a command whose output goes to a log, and a
server that says when it is ready and stops when its stdin closes."""

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

READY = "READY "  # a server's first line of output: READY {json}


class CommandFailed(RuntimeError):
    """A benchmarked command could not run to the end; the message ends with its log's tail."""


def tail(log: Path, lines: int = 3) -> str:
    """The last non-empty lines of `log`, joined on one line."""
    kept = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def run_logged(command: Sequence[str], log: Path, env: dict | None = None) -> float:
    """Seconds `command` took, its output (stdout and stderr) in `log`; CommandFailed when it
    exits with an error."""
    started = time.perf_counter()
    with log.open("w") as output:
        done = subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise CommandFailed(
            f"`{' '.join(map(str, command[:2]))}` exited {done.returncode} ({log}): {tail(log)}"
        )
    return seconds


@contextlib.contextmanager
def ready_server(
    command: Sequence[str], log: Path, env: dict | None = None, stop_seconds: float = 60
) -> Iterator[tuple[dict, int]]:
    """(what the server announced, its pid) of `command`, a server that prints `READY {json}`
    once it serves (see `announce_ready`) and stops when its stdin closes; stopped on exit,
    terminated when it takes over `stop_seconds`. Its stderr goes to `log`."""
    with log.open("w") as errors:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            text=True,
        )
        try:
            line = process.stdout.readline()
            if not line.startswith(READY):
                raise CommandFailed(
                    f"`{' '.join(map(str, command[:2]))}` did not start ({log}): {tail(log)}"
                )
            yield json.loads(line[len(READY) :]), process.pid
        finally:
            process.stdin.close()
            try:
                process.wait(stop_seconds)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait(10)


def announce_ready(details: dict) -> None:
    """Says, as the server process, that it serves: `ready_server` yields `details`."""
    print(READY + json.dumps(details), flush=True)


def wait_for_stop() -> None:
    """Blocks, as the server process, until `ready_server` closes its stdin."""
    sys.stdin.read()
