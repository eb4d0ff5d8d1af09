"""Run folders in a bucket (`train.runs_dir: s3://...` or `gs://...`): a local staging copy that
the run writes, synced with the bucket through fsspec.

TensorFlow 2.21's file system has no s3:// (tensorflow-io provided it), and the run folder is
written by more than TensorFlow (history.csv, run.json, Keras files through plain `open`), so a
run trains into a local staging folder and mirrors it:

* `pull` before training replaces the staging folder with the bucket's copy of the run, so a run
  started again with the same train.run_id, on any machine, resumes from the bucket's checkpoint.
* `push` after each epoch's checkpoint and at the end uploads new and changed files, uploads the
  checkpoint state file (`checkpoints/checkpoint`) last, then deletes what the run no longer holds
  (checkpoints CheckpointManager dropped). An interrupted push therefore leaves the bucket naming
  a checkpoint whose files are all there: the previous epoch's, or the new one's.

The bucket trails the run by at most one epoch (mid-epoch checkpoints of
train.checkpoint_every_steps reach it with the epoch's end). Only one process may push a run.
Credentials and endpoints come from the environment as for any fsspec client (AWS_*,
AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, ...).
"""

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import fsspec

from core import errors

logger = logging.getLogger(__name__)

STATE_FILE = "checkpoints/checkpoint"  # tf.train.CheckpointManager's pointer to the newest


class MirrorError(errors.UserError):
    """The bucket of a remote train.runs_dir could not be read or written."""


class RunMirror:
    """Mirrors `runs_url`/<run_id>/ with `staging`/<run_id>/, which stands in for runs_dir."""

    def __init__(self, runs_url: str, storage_options: dict | None = None):
        self.runs_url = runs_url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.runs_url, **(storage_options or {}))
        self.staging: Path | None = None
        self.run_id: str | None = None
        # relative path -> (size, mtime) of each file as last uploaded or downloaded.
        self.synced: dict[str, tuple[int, int]] = {}

    @property
    def url(self) -> str:
        """The run folder in the bucket."""
        return f"{self.runs_url}/{self.run_id}"

    @property
    def local(self) -> Path:
        return self.staging / self.run_id

    def pull(self, run_id: str) -> Path:
        """Fresh staging copy of the run's folder in the bucket (empty for a new run); returns
        the staging folder that replaces runs_dir."""
        self.staging = Path(tempfile.mkdtemp(prefix="imgclf-runs-"))
        self.run_id = run_id
        remote = f"{self.root}/{run_id}"
        with self._reaching_the_bucket("read"):
            self.fs.invalidate_cache()
            files = self.fs.find(remote) if self.fs.exists(remote) else []
            for path in files:
                target = self.local / path[len(remote) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(path, str(target))
        self.synced = self._local_files()
        if files:
            print(f"train: pulled {len(files)} files of {self.url} into {self.local}")
        return self.staging

    def attach(self, run_dir: Path) -> "RunMirror":
        """This mirror for a run folder an earlier step staged (the pipeline's Trainer, before
        its Evaluator): nothing is known synced, so the next push uploads every file."""
        self.staging, self.run_id = Path(run_dir).parent, Path(run_dir).name
        self.synced = {}
        return self

    def push(self) -> int:
        """Uploads what changed since the last sync and deletes what is gone; returns the count."""
        current = self._local_files()
        changed = [path for path, stamp in current.items() if self.synced.get(path) != stamp]
        # False sorts first: the state file goes after the checkpoint files it names.
        changed.sort(key=lambda path: path == STATE_FILE)
        gone = [path for path in self.synced if path not in current]
        with self._reaching_the_bucket("write"):
            for path in changed:
                self.fs.put_file(str(self.local / path), f"{self.root}/{self.run_id}/{path}")
            if gone:
                self.fs.rm([f"{self.root}/{self.run_id}/{path}" for path in gone])
        self.synced = current
        logger.info("pushed %d and deleted %d files of %s", len(changed), len(gone), self.url)
        return len(changed) + len(gone)

    @contextlib.contextmanager
    def _reaching_the_bucket(self, action: str):
        """Any failure of the bucket (credentials, endpoint, permissions, a missing bucket) as
        one line that names the folder, not a traceback from the storage client."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - botocore, gcsfs and OSError alike
            raise MirrorError(
                f"could not {action} {self.url} ({type(error).__name__}: {error}); check "
                "train.runs_dir and the credentials and endpoint in the environment (AWS_*, "
                "AWS_ENDPOINT_URL for s3://; GOOGLE_APPLICATION_CREDENTIALS for gs://)"
            ) from None

    def _local_files(self) -> dict[str, tuple[int, int]]:
        found = {}
        for folder, _, names in os.walk(self.local):
            for name in names:
                path = Path(folder, name)
                stat = path.stat()
                found[path.relative_to(self.local).as_posix()] = (stat.st_size, stat.st_mtime_ns)
        return found
