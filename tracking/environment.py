"""Where a run ran: versions, devices and source revision, recorded with runs and reports."""

import os
import platform
import subprocess
import sys
from pathlib import Path


def environment() -> dict:
    """Python, TensorFlow and Keras versions, the machine and its TF devices."""
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": _cpu_count(),
        "devices": [
            {"name": device.name, "type": device.device_type}
            for device in tf.config.list_physical_devices()
        ],
        "argv": sys.argv,
    }


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def git_commit(folder: str | Path = ".") -> dict | None:
    """{"commit", "dirty"} of the git checkout holding `folder`, or None outside one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
