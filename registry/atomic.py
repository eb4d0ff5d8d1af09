"""Crash-safe file primitives of the model store: flock(2) locks and atomic replace-in-place."""

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from core import atomic_write, errors

DEFAULT_LOCK_TIMEOUT_S = 60.0


class LockTimeout(errors.UserError):
    """Another process held the store's lock for longer than this one would wait."""


@contextlib.contextmanager
def locked(
    path: Path, exclusive: bool = True, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[None]:
    """Holds flock(2) on `path` (created if missing), exclusive or shared, for the block.

    flock rather than fcntl/lockf record locks: a flock belongs to one open file description, so
    two threads of one process exclude each other too, and closing some other descriptor of the
    same file does not silently drop it. The kernel releases it when the holder dies, SIGKILL
    included, so a crashed command never leaves the store locked.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        if exclusive:
            raise
        # A reader without write access to the store can still take a shared lock.
        fd = os.open(path, os.O_RDONLY)
    try:
        wait_for_lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, path, timeout_s)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def wait_for_lock(fd: int, operation: int, path: Path, timeout_s: float) -> None:
    # Polled rather than blocking so that a stuck holder ends in a clear error, not a hang.
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"{path} stayed locked by another registry command for {timeout_s:g} s; "
                    "wait for it to finish and retry"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def try_lock(fd: int) -> bool:
    """Takes an exclusive flock on `fd` without waiting; False when someone else holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_temp_files(folder: Path) -> None:
    """Deletes temp files a killed writer left in `folder`; call only under the exclusive lock."""
    for temp in folder.glob(f".*{atomic_write.TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)


def fsync_tree(root: Path) -> None:
    """fsyncs every file and folder under `root`, so a later rename publishes complete data."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        atomic_write.fsync_dir(Path(folder))
