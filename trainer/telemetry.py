"""Live training telemetry: throughput, input wait against compute, host and GPU memory.

The training loop times each call of its train step (several steps per call) and the step
itself sums, in the graph, how long each `next(iterator)` blocked (see TrainingLoop's
`_distributed_step`): input wait is measured where it happens, at no extra host round trip.
Compute is the rest of the call. GPU figures appear only when TensorFlow sees a GPU;
utilisation needs the optional `pynvml` (nvidia-ml-py) module.
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import psutil
import tensorflow as tf

logger = logging.getLogger(__name__)

PREFIX = "telemetry/"
MIB = 1024 * 1024
# What speeds up a slow input pipeline, in the config's own keys.
INPUT_KNOBS = (
    "a smaller data.store.max_side (re-ingest: smaller stored images decode faster), "
    "a smaller data.image_size, fewer augment.layers, or data.output_dir on a local disk"
)


@dataclass
class EpochTotals:
    images: int = 0
    seconds: float = 0.0
    waited: float = 0.0
    wait_measured: bool = True  # False under train.deterministic (no timestamps in the graph)

    @property
    def wait_fraction(self) -> float:
        return min(self.waited / self.seconds, 1.0) if self.seconds > 0 else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class Telemetry:
    """Per-call scalars under `log_dir` (a run's tensorboard/train/; None writes nothing) and a
    per-epoch line, with an input-bound warning when input wait exceeds `warn_fraction`."""

    def __init__(self, log_dir: Path | None, images_per_step: int, warn_fraction: float):
        self.images_per_step = images_per_step
        self.warn_fraction = warn_fraction
        self.writer = tf.summary.create_file_writer(str(log_dir)) if log_dir else None
        self.process = psutil.Process()
        self.gpu = "GPU:0" if tf.config.list_logical_devices("GPU") else None
        self.gpu_utilization = gpu_utilization_reader() if self.gpu else None
        self.epoch = EpochTotals()

    def start_epoch(self) -> None:
        self.epoch = EpochTotals()

    def record(self, step: int, steps: int, seconds: float, waited: float) -> dict[str, float]:
        """Adds one call of `steps` steps that took `seconds`, `waited` of them blocked on input;
        writes its scalars at global `step` and returns them (tags without the prefix)."""
        images = steps * self.images_per_step
        self.epoch.images += images
        self.epoch.seconds += seconds
        scalars = {
            "images_per_second": images / seconds if seconds > 0 else 0.0,
            "step_time_ms": 1000 * seconds / steps,
        }
        if math.isnan(waited):  # not measured: the wait tags are left out, not written as 0
            self.epoch.wait_measured = False
        else:
            waited = min(max(waited, 0.0), seconds)
            self.epoch.waited += waited
            scalars.update(
                input_wait_ms=1000 * waited / steps,
                compute_ms=1000 * (seconds - waited) / steps,
                input_wait_fraction=waited / seconds if seconds > 0 else 0.0,
            )
        scalars.update(self.memory())
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for tag, value in scalars.items():
                    tf.summary.scalar(PREFIX + tag, value)
        return scalars

    def memory(self) -> dict[str, float]:
        """Host RSS and, with a GPU, TF's current and peak allocation and the utilisation."""
        figures = {"host_memory_mib": self.process.memory_info().rss / MIB}
        if self.gpu is not None:
            info = tf.config.experimental.get_memory_info(self.gpu)
            figures["gpu_memory_mib"] = info["current"] / MIB
            figures["gpu_peak_memory_mib"] = info["peak"] / MIB
        if self.gpu_utilization is not None:
            figures["gpu_utilization_percent"] = self.gpu_utilization()
        return figures

    def end_epoch(self, epoch: int) -> list[str]:
        """The epoch's telemetry line, then the input-bound warning when it applies."""
        totals = self.epoch
        memory = self.memory()
        wait = (
            f"input wait {totals.wait_fraction:.0%} of step time"
            if totals.wait_measured
            else "input wait not measured (train.deterministic)"
        )
        line = (
            f"telemetry: {totals.images_per_second:.0f} images/s, {wait}, "
            f"host memory {memory['host_memory_mib']:.0f} MiB"
        )
        if "gpu_peak_memory_mib" in memory:
            line += f", GPU peak memory {memory['gpu_peak_memory_mib']:.0f} MiB"
        lines = [line]
        if totals.wait_measured and totals.wait_fraction > self.warn_fraction:
            lines.append(
                f"train: input-bound: epoch {epoch + 1} waited for input "
                f"{totals.wait_fraction:.0%} of step time (over train.input_bound_warning = "
                f"{self.warn_fraction:.0%}); try {INPUT_KNOBS}"
            )
        if self.writer is not None:
            self.writer.flush()
        return lines

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def gpu_utilization_reader():
    """A function returning the first GPU's utilisation in percent, or None when pynvml is not
    installed or finds no driver. NVML's device 0 is TF's GPU:0 unless CUDA_VISIBLE_DEVICES
    reorders devices."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except pynvml.NVMLError as error:
        logger.info("GPU utilisation unavailable: %s", error)
        return None
    return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
