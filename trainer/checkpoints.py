"""Checkpoint writes that fail cleanly: a full disk leaves only good checkpoints and one clear line.

What TensorFlow 2.21 does when `CheckpointManager.save` runs out of space (found by experiment on
a full tmpfs and under RLIMIT_FSIZE; tests/trainer/test_checkpoints.py repeats both):

* The error is a `tf.errors.OpError`: `ResourceExhaustedError` for ENOSPC ("No space left on
  device"), `OutOfRangeError` for EFBIG ("File too large"), raised by the SaveV2 or the
  MergeV2Checkpoints op.
* SaveV2 writes `ckpt-N_temp/part-*` through `*.tempstate*` files and removes the failed
  tempstate file, but leaves the `ckpt-N_temp/` folder behind (empty, or holding the parts that
  were finished).
* MergeV2Checkpoints renames the data into place as `ckpt-N.data-*` and then writes
  `ckpt-N.index` in place, so a disk that fills up there leaves a complete data file next to an
  empty (corrupt) index.
* The `checkpoint` state file is only rewritten after the merge succeeded, and atomically (temp
  file + rename), so `tf.train.latest_checkpoint` keeps naming the previous checkpoint, which
  restores to exactly its saved values.

`save` removes what a failed save left behind and reports the last good checkpoint.
"""

import fnmatch
import glob
import logging
import os
import re

import tensorflow as tf

from core import errors

logger = logging.getLogger(__name__)

# TF's "<prefix>_temp" folder of sharded parts (tensorflow/python/checkpoint/functional_saver.py).
TEMP_SUFFIX = "_temp"
STATE_FILE = "checkpoint"


class CheckpointWriteError(errors.UserError):
    """A checkpoint could not be written (usually a full disk); earlier checkpoints are intact."""


def save(manager: tf.train.CheckpointManager, checkpoint_number: int) -> str:
    """`manager.save(checkpoint_number=...)`, turning a failed write into a CheckpointWriteError.

    Returns the new checkpoint's path. On failure, the files of the failed checkpoint are removed
    (earlier checkpoints are left alone) and the error names the folder and the last good
    checkpoint, read back from the folder's state file: that is what a re-run resumes from.
    """
    try:
        return manager.save(checkpoint_number=checkpoint_number)
    except (OSError, tf.errors.OpError) as error:
        directory = manager.directory
        # The path manager.save used; CheckpointManager keeps its prefix ("<dir>/ckpt") private.
        prefix = f"{manager._prefix}-{checkpoint_number}"
        last_good = tf.train.latest_checkpoint(directory)
        remove_failed(prefix, keep_complete=last_good == prefix)
        if last_good:
            resume = f"the last good checkpoint is {last_good}, and a re-run with the same "
            resume += "train.run_id resumes from it"
        else:
            resume = "there is no good checkpoint yet, so a re-run starts from the beginning"
        raise CheckpointWriteError(
            f"could not write checkpoint {checkpoint_number} to {directory} ({reason(error)}): "
            f"free disk space or point train.runs_dir elsewhere; {resume}"
        ) from error


def remove_failed(prefix: str, keep_complete: bool = False) -> list[str]:
    """Deletes what a failed save of `prefix` ("<dir>/ckpt-N") left behind; returns the paths.

    `keep_complete` keeps `prefix.index`/`prefix.data-*`: the state file already names them, so
    only the bookkeeping after the write failed (TF records the state file before sweeping old
    checkpoints). Cleanup is best effort: a file that cannot be removed is logged, not raised.
    """
    directory, name = os.path.split(prefix)
    name = glob.escape(name)
    patterns = [f"{name}{TEMP_SUFFIX}", f"{name}.*tempstate*"]
    if not keep_complete:
        patterns += [f"{name}.index", f"{name}.data-*"]
    # A failed write of the state file leaves its temp copy (file_io.atomic_write_string_to_file).
    patterns.append(f"{STATE_FILE}.tmp*")
    removed = []
    for entry in tf.io.gfile.listdir(directory):
        entry = entry.rstrip("/")
        if not any(fnmatch.fnmatchcase(entry, pattern) for pattern in patterns):
            continue
        path = os.path.join(directory, entry)
        try:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
        except (OSError, tf.errors.OpError) as error:
            logger.warning("could not remove %s after a failed checkpoint: %s", path, error)
            continue
        removed.append(path)
    return removed


def reason(error: BaseException) -> str:
    """The short cause of a failed write: "No space left on device", "File too large", ...

    TF messages look like "{{function_node ...}} <path>.tempstate123; File too large [Op:SaveV2]".
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = getattr(error, "message", None) or str(error)
    lines = text.strip().splitlines() or [type(error).__name__]
    line = re.sub(r"^\{\{.*?\}\}\s*", "", lines[0])
    line = re.sub(r"\s*\[Op:\w+\]$", "", line)
    return line.rsplit("; ", 1)[-1].strip() or type(error).__name__
