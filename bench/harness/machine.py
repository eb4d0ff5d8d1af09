"""Where the figures were measured: the machine every results file records, and its load, which
skews figures on a shared machine."""

import os
import platform
from pathlib import Path


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """The machine and software of a results file (TensorFlow is imported here, when a
    benchmark writes its results, not when a module of the harness is imported)."""
    import keras
    import tensorflow as tf

    return {
        "cpu": cpu_model(),
        "cpu_count": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def summary() -> str:
    """The machine in one line, as benchmark details record it."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def announce(sharing: str = "") -> tuple[float, float, float]:
    """Prints the CPUs and the load average before a run (`sharing`: who shares the CPUs);
    returns the load averages."""
    load = load_average()
    print(
        f"bench: {usable_cpus()} CPUs{sharing}; load average {load[0]:.2f} before the run "
        "(other work on this machine skews figures)",
        flush=True,
    )
    return load
