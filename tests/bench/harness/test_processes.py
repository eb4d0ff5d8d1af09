"""bench/harness/processes.py: real processes on this machine. A logged command's failure names
its exit status and last lines; a server is waited for until it says READY and stops when its
stdin closes."""

import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"

SERVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    from harness import processes

    print("starting up", file=sys.stderr)
    processes.announce_ready({"rest_url": "http://127.0.0.1:1", "pid_file": sys.argv[2]})
    processes.wait_for_stop()
    Path(sys.argv[2]).write_text("stopped")
    """
)


@pytest.fixture(scope="module")
def processes(bench_import):
    return bench_import("harness.processes")


def test_a_logged_command_takes_seconds_and_its_failure_names_its_log_tail(processes, tmp_path):
    log = tmp_path / "ok.log"
    seconds = processes.run_logged([sys.executable, "-c", "print('hello')"], log)
    assert 0 < seconds < 60 and log.read_text() == "hello\n"

    lines = "print('zero'); print('one'); print(); print('two'); print('three')"
    failing = f"import sys; {lines}; sys.exit(3)"
    with pytest.raises(processes.CommandFailed) as failed:
        processes.run_logged([sys.executable, "-c", failing], tmp_path / "bad.log")
    message = str(failed.value)
    assert message.startswith(f"`{sys.executable} -c` exited 3 ({tmp_path / 'bad.log'})")
    assert message.endswith(": one | two | three") and "zero" not in message
    assert isinstance(failed.value, RuntimeError)


def test_a_server_is_ready_when_it_says_so_and_stops_when_stdin_closes(processes, tmp_path):
    stopped = tmp_path / "stopped"
    command = [sys.executable, "-c", SERVER, str(BENCH), str(stopped)]
    with processes.ready_server(command, tmp_path / "server.log") as (announced, pid):
        assert announced == {"rest_url": "http://127.0.0.1:1", "pid_file": str(stopped)}
        assert pid > 0 and not stopped.exists()
    assert stopped.read_text() == "stopped"
    assert (tmp_path / "server.log").read_text() == "starting up\n"


def test_a_server_that_never_gets_ready_fails_with_its_errors(processes, tmp_path):
    command = [sys.executable, "-c", "import sys; sys.exit('no model in /nowhere')"]
    with pytest.raises(processes.CommandFailed, match="did not start .*: no model in /nowhere"):
        with processes.ready_server(command, tmp_path / "server.log"):
            pass
