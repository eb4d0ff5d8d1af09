"""A quiet console: TensorFlow's native (C++/absl) log lines stay off the terminal unless asked for.

Every entry point calls `setup(argv)` before anything imports TensorFlow. Unless the user asked
for verbose output (`--verbose`, or IMGCLF_VERBOSE=1), it

- sets TF_CPP_MIN_LOG_LEVEL=3 where the user has not set it. TensorFlow applies that level to
  what it logs once loaded: the cuInit failure every CPU-only machine reports as an E0000 line,
  cpu_feature_guard's instruction notice, the XLA service and "Compiled cluster" lines,
  tf.data's notes, and the ERROR-level oneDNN fallback notes logged while training. Child
  processes (the demo's model server, Beam's workers) inherit it.
- filters `import tensorflow`'s own stderr by that same level. TensorFlow's shared libraries log
  while they load, before reading TF_CPP_MIN_LOG_LEVEL: "All log messages before
  absl::InitializeLog()", the oneDNN notice and "Could not find cuda drivers", each twice (two
  libraries). Native lines below the level are dropped; everything else on stderr meanwhile (a
  Python warning, a FATAL line) comes back as written, and all of it comes back if the import
  fails.

Worker processes that import TensorFlow on their own (Beam's DirectRunner workers, started by
Beam itself) inherit the level; `workers_stderr_filtered()` drops their load-time lines.

Python-level logging and warnings are left alone: those of imgclf and its libraries still show.
A GPU or CUDA problem that the quiet level hides is reported in words by `imgclf doctor`.
Imports only the standard library.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import threading

VERBOSE_ENV = "IMGCLF_VERBOSE"
VERBOSE_FLAG = "--verbose"
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "3"  # hides INFO (0), WARNING (1) and ERROR (2): only FATAL lines remain
SEVERITIES = {"I": 0, "W": 1, "E": 2, "F": 3}

# absl's prefix ("E0000 00:00:1796633470.933135    5575 cuda_platform.cc:52] ...": before
# absl::InitializeLog() the time is seconds since the epoch) and the older TensorFlow one
# ("2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...").
NATIVE_LOG_LINE = re.compile(
    r"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<tf>[IWEF]) \S+:\d+\])"
)
# absl's own warning that TensorFlow logs before calling absl::InitializeLog().
ABSL_PREINIT_LINE = "WARNING: All log messages before absl::InitializeLog() is called are written"
WORKERS_DRAIN_S = 5  # how long the end of a filtered block waits for workers' last lines


def verbose_requested(argv: list[str]) -> bool:
    """Whether the user asked for TensorFlow's own log lines: --verbose or IMGCLF_VERBOSE=1."""
    return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


def setup(argv: list[str]) -> list[str]:
    """Quiets TensorFlow's native logs for this process and its children unless verbose output
    was asked for; returns `argv` without --verbose (accepted anywhere on the command line).

    Call it before TensorFlow is imported; where it already is (a test calling an entry point's
    main), it is too late to change this process and the environment is left as it is."""
    verbose = verbose_requested(argv)
    rest = [arg for arg in argv if arg != VERBOSE_FLAG]
    if "tensorflow" in sys.modules:
        return rest
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # child processes log as verbosely as their parent
        return rest
    os.environ.setdefault(LOG_LEVEL_ENV, QUIET_LOG_LEVEL)
    level = min_log_level()
    if level > 0 and not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport(level))
    return rest


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow parses it (0 where unset or not a number)."""
    try:
        return int(os.environ.get(LOG_LEVEL_ENV, "0"))
    except ValueError:
        return 0


def native_severity(line: str) -> int | None:
    """The severity (0 INFO ... 3 FATAL) of one of TensorFlow's native log lines; None for any
    other line."""
    if line.startswith(ABSL_PREINIT_LINE):
        return SEVERITIES["W"]
    match = NATIVE_LOG_LINE.match(line)
    if match is None:
        return None
    return SEVERITIES[match.group("absl") or match.group("tf")]


def below_level(text: str, level: int) -> str:
    """`text` without the native log lines whose severity is below `level`."""
    kept = []
    for line in text.splitlines(keepends=True):
        severity = native_severity(line)
        if severity is None or severity >= level:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def stderr_filtered(level: int):
    """Holds what is written to file descriptor 2 meanwhile (native code and Python alike) and
    writes it back without native log lines below `level`; all of it if the block raises."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter (closed by a daemon manager)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = decode(held.read())
            if not failed:
                text = below_level(text, level)
            write_all(2, encode(text))


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` like the finders after it, with a loader that runs the package's
    import inside `stderr_filtered`; leaves sys.meta_path after that one import."""

    def __init__(self, level: int):
        self.level = level

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = FilteredLoader(spec.loader, self.level)
        return spec


class FilteredLoader(importlib.abc.Loader):
    """`loader`, executing its module inside `stderr_filtered`; the module keeps `loader`."""

    def __init__(self, loader, level: int):
        self.loader = loader
        self.level = level

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        with stderr_filtered(self.level):
            self.loader.exec_module(module)


@contextlib.contextmanager
def workers_stderr_filtered():
    """Filters, as it is written, the stderr of worker processes started meanwhile, and this
    process's own: native log lines below TF_CPP_MIN_LOG_LEVEL are dropped, everything else is
    passed on at once. Does nothing in verbose mode or at level 0."""
    level = min_log_level()
    if level == 0 or verbose_requested([]):
        yield
        return
    sys.stderr.flush()
    try:
        terminal = os.dup(2)
    except OSError:
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)  # workers inherit descriptor 2
    os.close(write_end)
    forwarder = threading.Thread(target=forward, args=(read_end, terminal, level), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        # The pipe ends when the last worker holding it exits; one that outlives the block is
        # still forwarded, by the daemon thread, meanwhile.
        forwarder.join(timeout=WORKERS_DRAIN_S)


def forward(read_end: int, terminal: int, level: int) -> None:
    """Copies `read_end` to `terminal` until end of file without the native log lines below
    `level`. A partial line is held only while it could become such a line, so progress bars
    (carriage returns, no newline) still show as they are drawn."""
    pending = b""
    try:
        while chunk := os.read(read_end, 65536):
            complete, newline, pending = (pending + chunk).rpartition(b"\n")
            kept = encode(below_level(decode(complete + newline), level))
            if pending and not could_be_native(pending):
                kept, pending = kept + pending, b""
            write_all(terminal, kept)
        write_all(terminal, pending)
    finally:
        os.close(read_end)
        os.close(terminal)


def write_all(descriptor: int, data: bytes) -> None:
    while data:
        data = data[os.write(descriptor, data) :]


def decode(raw: bytes) -> str:
    return raw.decode(errors="surrogateescape")  # bytes that are not UTF-8 pass through as they are


def encode(text: str) -> bytes:
    return text.encode(errors="surrogateescape")


def could_be_native(start: bytes) -> bool:
    """Whether a partial line may still turn out to be a native log line."""
    return start[:1] in (b"I", b"W", b"E", b"F") or start[:1].isdigit()
