"""Checkpoint writes on a full disk: no corrupt latest checkpoint, one clear line, clean folder."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import checkpoints

REPO = Path(__file__).resolve().parents[2]
GOOD_FILES = ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
# Dense 64 -> 256 with Adam: ~200 KB of data per checkpoint, index and state file under 1 KB.
FILE_SIZE_LIMIT = 64 * 1024


def build() -> tuple[keras.Model, keras.optimizers.Optimizer]:
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256)])
    optimizer = keras.optimizers.Adam(learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, seed: int) -> None:
    """One Adam step, so that checkpoints hold non-trivial weights and optimizer slots."""
    images = np.random.default_rng(seed).random((8, 64), dtype=np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images)))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))


def state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in [*model.weights, *optimizer.variables]]


def manager_for(directory, model, optimizer) -> tf.train.CheckpointManager:
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    return tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=3)


# Run in a subprocess: the file size limit (RLIMIT_FSIZE, EFBIG on writes past it, as a full disk
# gives ENOSPC) and the small tmpfs must not touch the test process.
FULL_DISK_SCRIPT = """
import json, os, resource, signal, sys
from pathlib import Path
import numpy as np
from tests.trainer import test_checkpoints as t
from trainer import checkpoints

mode, directory, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
model, optimizer = t.build()
manager = t.manager_for(directory, model, optimizer)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
report = {}

def failed_save(number):
    try:
        checkpoints.save(manager, number)
    except checkpoints.CheckpointWriteError as error:
        cause = error.__cause__
        return {"message": str(error), "cause": type(cause).__name__, "cause_text": str(cause)}
    raise AssertionError(f"checkpoint {number} was written")

if mode == "rlimit":
    resource.setrlimit(resource.RLIMIT_FSIZE, (t.FILE_SIZE_LIMIT, hard))
    report["first"] = failed_save(1)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

t.train_step(model, optimizer, seed=1)
report["saved"] = checkpoints.save(manager, 1)
np.savez(out / "first.npz", *t.state(model, optimizer))
t.train_step(model, optimizer, seed=2)
model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)

if mode == "rlimit":
    resource.setrlimit(resource.RLIMIT_FSIZE, (t.FILE_SIZE_LIMIT, hard))
else:
    # Fill the disk so that checkpoint 2's data and part index fit but its merged index does not:
    # the last step of a save, after TF has moved ckpt-2.data-* into place.
    data = (directory / "ckpt-1.data-00000-of-00001").stat().st_size
    disk = os.statvfs(directory)
    room = (-(-data // disk.f_bsize) + 1) * disk.f_bsize
    (directory.parent / "filler").write_bytes(bytes(disk.f_bavail * disk.f_frsize - room))
report["second"] = failed_save(2)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
report["in_memory_latest"] = manager.latest_checkpoint
if mode == "tmpfs":
    # The tmpfs lives only as long as this mount namespace; the test reads a copy.
    import shutil
    shutil.copytree(directory, out / "checkpoints")
print(json.dumps(report))
"""


def run_full_disk(command: list[str]) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_only_checkpoint_1(directory: Path, out: Path) -> None:
    """The folder holds checkpoint 1 alone, names it latest, and it restores exactly."""
    assert sorted(os.listdir(directory)) == GOOD_FILES
    latest = tf.train.latest_checkpoint(str(directory))
    assert latest == str(directory / "ckpt-1")
    model, optimizer = build()
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(latest).assert_consumed()
    saved = np.load(out / "first.npz")
    expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    restored = state(model, optimizer)
    assert len(restored) == len(expected)
    for got, want in zip(restored, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_file_size_limit_keeps_the_last_good_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    report = run_full_disk(
        [sys.executable, "-c", FULL_DISK_SCRIPT, "rlimit", str(directory), str(tmp_path)]
    )

    # With nothing saved yet, the message says a re-run starts over.
    first = report["first"]
    assert first["cause"] == "OutOfRangeError" and "File too large" in first["cause_text"]
    assert first["message"] == (
        f"could not write checkpoint 1 to {directory} (File too large): free disk space or point "
        "train.runs_dir elsewhere; there is no good checkpoint yet, so a re-run starts from the "
        "beginning"
    )

    # A retry after the failed save works: the manager is still usable.
    assert report["saved"] == str(directory / "ckpt-1")

    second = report["second"]
    assert second["cause"] == "OutOfRangeError" and "File too large" in second["cause_text"]
    assert second["message"] == (
        f"could not write checkpoint 2 to {directory} (File too large): free disk space or point "
        f"train.runs_dir elsewhere; the last good checkpoint is {directory / 'ckpt-1'}, and a "
        "re-run with the same train.run_id resumes from it"
    )
    assert "\n" not in second["message"]
    assert report["in_memory_latest"] == str(directory / "ckpt-1")
    # No ckpt-2.* nor ckpt-2_temp/ (which TF leaves behind) remains.
    assert_only_checkpoint_1(directory, tmp_path)


def can_mount_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs unshare and a user mount namespace")
def test_full_tmpfs_while_merging_keeps_the_last_good_checkpoint(tmp_path):
    # A real ENOSPC, at the step that leaves a complete ckpt-2.data-* next to an empty ckpt-2.index.
    mount = tmp_path / "disk"
    mount.mkdir()
    directory = mount / "checkpoints"
    script = 'mount -t tmpfs -o size=4m tmpfs "$1" && exec "$2" -c "$3" tmpfs "$1/checkpoints" "$4"'
    command = ["unshare", "-rm", "sh", "-c", script, "sh", str(mount), sys.executable]
    report = run_full_disk([*command, FULL_DISK_SCRIPT, str(tmp_path)])

    second = report["second"]
    assert second["cause"] == "ResourceExhaustedError"
    assert "MergeV2Checkpoints" in second["cause_text"]
    assert second["message"] == (
        f"could not write checkpoint 2 to {directory} (No space left on device): free disk space "
        f"or point train.runs_dir elsewhere; the last good checkpoint is {directory / 'ckpt-1'}, "
        "and a re-run with the same train.run_id resumes from it"
    )
    assert_only_checkpoint_1(tmp_path / "checkpoints", tmp_path)


def test_successful_save_behaves_like_manager_save(tmp_path):
    model, optimizer = build()
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=1)

    assert checkpoints.save(manager, 5) == str(tmp_path / "ckpt-5")
    assert checkpoints.save(manager, 7) == str(tmp_path / "ckpt-7")

    assert manager.latest_checkpoint == tf.train.latest_checkpoint(str(tmp_path))
    assert manager.checkpoints == [str(tmp_path / "ckpt-7")]
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint",
        "ckpt-7.data-00000-of-00001",
        "ckpt-7.index",
    ]


def test_remove_failed_leaves_other_checkpoints_alone(tmp_path):
    names = [
        "checkpoint",
        "checkpoint.tmp0123abcd",
        "ckpt-2.index",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index.tempstate42",
        "ckpt-20.index",
        "ckpt-20.data-00000-of-00001",
        "ckpt-1.index",
        "ckpt-1.data-00000-of-00001",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "ckpt-2_temp").mkdir()
    (tmp_path / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (tmp_path / "ckpt-1_temp").mkdir()

    removed = checkpoints.remove_failed(str(tmp_path / "ckpt-2"))

    assert sorted(Path(path).name for path in removed) == [
        "checkpoint.tmp0123abcd",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
        "ckpt-2.index.tempstate42",
        "ckpt-2_temp",
    ]
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
        "ckpt-1_temp",
        "ckpt-20.data-00000-of-00001",
        "ckpt-20.index",
    ]


def test_remove_failed_keeps_a_complete_recorded_checkpoint(tmp_path):
    for name in ["ckpt-2.index", "ckpt-2.data-00000-of-00001"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "ckpt-2_temp").mkdir()

    checkpoints.remove_failed(str(tmp_path / "ckpt-2"), keep_complete=True)

    assert sorted(os.listdir(tmp_path)) == ["ckpt-2.data-00000-of-00001", "ckpt-2.index"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            tf.errors.ResourceExhaustedError(
                None,
                None,
                "{{function_node __wrapped__SaveV2_dtypes_10_device_/job:localhost/replica:0/"
                "task:0/device:CPU:0}} /r/ckpt-2_temp/part-00000-of-00001.data-00000-of-00001"
                ".tempstate1; No space left on device [Op:SaveV2]",
            ),
            "No space left on device",
        ),
        (
            tf.errors.OutOfRangeError(None, None, "/r/ckpt-2.index; File too large\nmore"),
            "File too large",
        ),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/r/x"), "No space left on device"),
        (tf.errors.UnknownError(None, None, ""), "UnknownError"),
    ],
)
def test_reason_is_the_short_cause(error, expected):
    assert checkpoints.reason(error) == expected
