"""Private folders where pushes copy, and removing those that pushes killed midway left behind."""

import logging
import os
import shutil
import uuid
from pathlib import Path

from registry import atomic

logger = logging.getLogger(__name__)


class Staging:
    """A push's folder `<root>/<token>/`, with a flock on `<root>/<token>.lock` while it lives.

    The flock says whether the folder's owner is alive: the kernel drops it when the push dies,
    even by SIGKILL, and the next push deletes what the dead one left. A killed copy is never
    visible as a version: only a complete copy is renamed into the model's folder.
    """

    def __init__(self, path: Path, lock_path: Path, fd: int):
        self.path, self.lock_path, self.fd = path, lock_path, fd

    @classmethod
    def open(cls, root: Path, store_lock: Path, prefix: str, lock_timeout_s: float) -> "Staging":
        # Made under the store lock, which cleaning also holds, so no cleaner ever sees a
        # folder whose owner has not locked it yet.
        with atomic.locked(store_lock, timeout_s=lock_timeout_s):
            remove_abandoned(root)
            root.mkdir(exist_ok=True)
            token = f"{prefix}-{uuid.uuid4().hex[:12]}"
            lock_path = root / f"{token}.lock"
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            atomic.try_lock(fd)  # a new file: nobody else holds it
            (root / token).mkdir()
        return cls(root / token, lock_path, fd)

    def close(self) -> None:
        """Removes what is left of the folder (nothing once renamed into place) and its lock."""
        # Folder first, then lock file: a folder without its lock file means a dead owner.
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        os.close(self.fd)


def remove_abandoned(root: Path) -> None:
    """Deletes the folders of pushes that died; call under the store's exclusive lock."""
    if not root.is_dir():
        return
    for lock_path in root.glob("*.lock"):
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            if atomic.try_lock(fd):
                logger.info("removing %s, left by a push that did not finish", lock_path.stem)
                shutil.rmtree(root / lock_path.stem, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for folder in root.iterdir():
        if folder.is_dir() and not (root / f"{folder.name}.lock").exists():
            shutil.rmtree(folder, ignore_errors=True)
