"""The quiet console: TensorFlow's native log lines are off the terminal by default, in imgclf's
processes and in the worker processes they start, and back with --verbose or IMGCLF_VERBOSE=1."""

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from core import console

REPO = Path(__file__).resolve().parents[2]

# Lines TensorFlow 2.21 printed on this project's CPU machine (`make demo` before the quiet
# console), plus the older TensorFlow format and a FATAL line.
ONEDNN = (
    "I0000 00:00:1796633467.463567    5575 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.\n"
)
PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
CUINIT = (
    "E0000 00:00:1796633470.933135    5575 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
XLA = (
    "I0000 00:00:1796633470.997927    5575 device_compiler.h:208] Compiled cluster using XLA!  "
    "This line is logged at most once for the lifetime of the process.\n"
)
OLD_FORMAT = (
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not "
    "find cuda drivers on your machine, GPU will not be used.\n"
)
FATAL = "F0000 00:00:1796633471.000001    5575 check.cc:10] Check failed: shape.ok()\n"
OURS = [
    "evaluate: no baseline yet (registry:digits@production: push a model into it first)\n",
    "/x/trainer/loop.py:12: UserWarning: the val split is empty\n",
    "INFO:     Started server process [8893]\n",
    "Epoch 1/15\n",
]


def test_native_lines_are_told_from_python_output_by_severity():
    severities = {
        line: console.native_severity(line)
        for line in [ONEDNN, PREINIT, CUINIT, XLA, OLD_FORMAT, FATAL, *OURS]
    }
    assert severities == {
        ONEDNN: 0,
        PREINIT: 1,
        CUINIT: 2,
        XLA: 0,
        OLD_FORMAT: 0,
        FATAL: 3,
        **dict.fromkeys(OURS, None),
    }


def test_below_level_drops_only_native_lines_under_the_level():
    text = "".join([PREINIT, ONEDNN, OURS[0], CUINIT, OURS[1], FATAL, OLD_FORMAT])
    assert console.below_level(text, 3) == OURS[0] + OURS[1] + FATAL
    assert console.below_level(text, 2) == OURS[0] + CUINIT + OURS[1] + FATAL
    assert console.below_level(text, 0) == text


def test_stderr_filtered_holds_native_writes_and_gives_the_rest_back(capfd):
    with console.stderr_filtered(3):
        os.write(2, (PREINIT + ONEDNN + OURS[1] + CUINIT + FATAL).encode())
    assert capfd.readouterr().err == OURS[1] + FATAL


def test_stderr_filtered_gives_everything_back_when_the_block_fails(capfd):
    with pytest.raises(ImportError), console.stderr_filtered(3):
        os.write(2, (ONEDNN + CUINIT).encode())
        raise ImportError("libtensorflow_framework.so.2: cannot open shared object file")
    assert capfd.readouterr().err == ONEDNN + CUINIT


def test_forward_passes_partial_progress_at_once_and_drops_native_lines():
    read_end, write_end = os.pipe()
    progress = "\r 40% |####      |"  # a progress bar has no newline: passed on as drawn
    with tempfile.TemporaryFile() as terminal:
        os.write(write_end, ONEDNN[:30].encode())  # a native line in two writes: dropped whole
        os.write(write_end, (ONEDNN[30:] + OURS[0] + progress).encode())
        os.write(write_end, b"\r100%\ncaf\xe9")  # not UTF-8, no newline: passed on byte for byte
        os.close(write_end)
        console.forward(read_end, os.dup(terminal.fileno()), 3)
        terminal.seek(0)
        assert terminal.read() == (OURS[0] + progress + "\r100%\n").encode() + b"caf\xe9"


def test_worker_processes_started_in_the_block_are_filtered():
    """Children inherit the filtered descriptor 2 (as Beam's DirectRunner workers do)."""
    script = f"""
        import subprocess, sys
        from core import console
        child = "import os, sys; os.write(2, sys.argv[1].encode())"
        with console.workers_stderr_filtered():
            subprocess.run([sys.executable, "-c", child, {PREINIT + ONEDNN + OURS[1] + CUINIT!r}])
            print("parent: after the worker", file=sys.stderr)
        print("parent: after the block", file=sys.stderr)
    """
    done = python(script, TF_CPP_MIN_LOG_LEVEL="3")
    assert done.stderr == OURS[1] + "parent: after the worker\nparent: after the block\n"
    verbose = python(script, TF_CPP_MIN_LOG_LEVEL="3", IMGCLF_VERBOSE="1")
    assert verbose.stderr.startswith(PREINIT + ONEDNN + OURS[1] + CUINIT)


@pytest.mark.parametrize(
    ("argv", "env", "level", "verbose"),
    [
        (["doctor"], {}, "3", None),
        (["doctor"], {"TF_CPP_MIN_LOG_LEVEL": "1"}, "1", None),  # the user's own level stays
        (["doctor", "--verbose"], {}, None, "1"),  # children inherit verbose output
        (["doctor"], {"IMGCLF_VERBOSE": "1"}, None, "1"),
        (["doctor"], {"IMGCLF_VERBOSE": "0"}, "3", "0"),
    ],
)
def test_setup_sets_the_environment_children_inherit(argv, env, level, verbose):
    script = f"""
        import os
        from core import console
        print(console.setup({argv!r}))
        print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"), os.environ.get("IMGCLF_VERBOSE"))
    """
    done = python(script, **env)
    assert done.stdout.splitlines() == ["['doctor']", f"{level} {verbose}"]


def python(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment with neither switch set, unless `env` sets it."""
    switches = (console.LOG_LEVEL_ENV, console.VERBOSE_ENV)
    return {k: v for k, v in os.environ.items() if k not in switches} | env


def native_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if console.native_severity(line) is not None]


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """A real entry point in a fresh process."""
    done = subprocess.run(
        command, cwd=REPO, env=environment(env), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    return done


IMGCLF = [sys.executable, "-m", "cli"]
TASK_HELP = [sys.executable, "-m", "trainer.task", "--help"]


@pytest.mark.slow
def test_imgclf_doctor_is_quiet_and_says_why_there_is_no_gpu():
    done = run([*IMGCLF, "doctor"])
    assert native_lines(done.stderr) == [], done.stderr
    assert "oneDNN" not in done.stderr and "cuInit" not in done.stderr
    assert "doctor: TensorFlow " in done.stdout
    if "  GPU: none" in done.stdout:  # every CPU-only machine: the reason in words instead
        assert re.search(r"^  GPU: none: .+; training runs on the CPU$", done.stdout, re.M)


@pytest.mark.slow
def test_imgclf_verbose_flag_brings_the_native_lines_back():
    done = run([*IMGCLF, "doctor", "--verbose"])  # accepted after the command too
    assert any("Compiled cluster using XLA" in line for line in native_lines(done.stderr))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "shown"),
    [({}, False), ({"IMGCLF_VERBOSE": "1"}, True), ({"TF_CPP_MIN_LOG_LEVEL": "0"}, True)],
)
def test_trainer_task_is_quiet_unless_asked(env, shown):
    done = run(TASK_HELP, **env)
    assert "usage: python -m trainer.task" in done.stdout
    assert bool(native_lines(done.stderr)) is shown, done.stderr
