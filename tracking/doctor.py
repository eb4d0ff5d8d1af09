"""`imgclf doctor`: what this machine can train with: versions, devices, precision, XLA, tf.data;
where TensorFlow sees no GPU, why, in words."""

import ctypes
import importlib.metadata
import os
import platform
import time
from pathlib import Path

from configs import schema
from core import console

# (shown name, distribution name) of the libraries a run depends on.
PACKAGES = [
    ("TensorFlow", "tensorflow"),
    ("Keras", "keras"),
    ("KerasTuner", "keras-tuner"),
    ("Beam", "apache-beam"),
    ("onnxruntime", "onnxruntime"),
    ("tf2onnx", "tf2onnx"),
]
CPUINFO = Path("/proc/cpuinfo")
# CPU flags with native bfloat16 arithmetic; without them mixed_bfloat16 is emulated and slower
# than float32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_FLOAT16_CAPABILITY = (7, 0)  # Volta: the first GPUs with float16 tensor cores
CUDA_DRIVER = "libcuda.so.1"  # the NVIDIA driver's library, which TensorFlow opens at start-up
NVIDIA_KERNEL_DRIVER = Path(
    "/proc/driver/nvidia/version"
)  # there while the kernel module is loaded


def versions() -> dict[str, str]:
    """Python and each of PACKAGES: its installed version, or "not installed"."""
    found = {"Python": platform.python_version()}
    for name, distribution in PACKAGES:
        try:
            found[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def devices() -> dict:
    """{"cpus": schedulable cores, "gpus": [{"name", "compute_capability"}]}."""
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(
            {
                "name": details.get("device_name", gpu.name),
                "compute_capability": details.get("compute_capability"),
            }
        )
    return {"cpus": cpu_count(), "gpus": gpus}


def build_info() -> dict:
    """TensorFlow's build: is_cuda_build, cuda_version, cudnn_version, cuda_compute_capabilities."""
    import tensorflow as tf

    return dict(tf.sysconfig.get_build_info())


def no_gpu_reason(build: dict, driver: str = CUDA_DRIVER, kernel: Path = NVIDIA_KERNEL_DRIVER):
    """Why TensorFlow sees no GPU, in words: told where TensorFlow itself only logs a line (such
    as `failed call to cuInit`) that the quiet console hides. `build` is build_info()."""
    if not build.get("is_cuda_build"):
        return "this TensorFlow build has no CUDA support"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    try:
        cuda = ctypes.CDLL(driver)
    except OSError as error:
        if kernel.exists():
            return f"the NVIDIA kernel driver is loaded, but its library failed to load ({error})"
        return f"no NVIDIA driver on this machine ({driver} not found, no kernel module loaded)"
    status = cuda.cuInit(0)
    if status != 0:
        return f"the NVIDIA driver failed to start (cuInit: {cuda_error(cuda, status)})"
    count = ctypes.c_int(0)
    status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        return f"the NVIDIA driver failed to count GPUs ({cuda_error(cuda, status)})"
    if count.value == 0:
        return "the NVIDIA driver reports no GPU"
    return (
        f"the NVIDIA driver reports {count.value} GPU(s), but TensorFlow opened none; most often "
        f"its CUDA libraries are missing: this TensorFlow needs CUDA {build.get('cuda_version')} "
        f"and cuDNN {build.get('cudnn_version')} (pip install 'tensorflow[and-cuda]'); "
        f"{console.VERBOSE_ENV}=1 imgclf doctor shows TensorFlow's own messages"
    )


def cuda_error(cuda: ctypes.CDLL, status: int) -> str:
    """The driver's name and description of a CUDA status, e.g. "CUDA_ERROR_NO_DEVICE: no
    CUDA-capable device is detected"."""
    name, text = ctypes.c_char_p(), ctypes.c_char_p()
    cuda.cuGetErrorName(status, ctypes.byref(name))
    cuda.cuGetErrorString(status, ctypes.byref(text))
    if name.value is None:
        return f"CUDA error {status}"
    return f"{name.value.decode()}: {(text.value or b'').decode()}"


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str] | None:
    """The BF16_FLAGS this CPU has, from /proc/cpuinfo text; None where there is none to read."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [flag for flag in BF16_FLAGS if flag in flags]


def mixed_precision(found_devices: dict, bf16_flags: list[str] | None) -> tuple[str | None, str]:
    """The mixed precision policy worth using here, or None, and why."""
    capable = [
        gpu
        for gpu in found_devices["gpus"]
        if gpu["compute_capability"] and tuple(gpu["compute_capability"]) >= MIN_FLOAT16_CAPABILITY
    ]
    if capable:
        major, minor = capable[0]["compute_capability"]
        return "mixed_float16", f"{capable[0]['name']} has compute capability {major}.{minor}"
    if found_devices["gpus"]:
        return None, "no GPU has compute capability >= 7.0 (float16 tensor cores)"
    if bf16_flags:
        # Usable, not a default: on such a CPU bf16 sped a small CNN up 1.8x but slowed
        # MobileNetV2 at 96x96 to 0.87x, so train.precision stays a per-model choice.
        return "mixed_bfloat16", (
            f"CPU has {', '.join(f.upper() for f in bf16_flags)}; opt-in per model "
            "(train.precision), measure it: it can be slower than float32"
        )
    if bf16_flags is None:
        return None, "CPU flags unknown (no /proc/cpuinfo); keep float32"
    return None, "CPU lacks AVX512_BF16/AMX: bfloat16 would be emulated; keep float32"


def xla() -> tuple[bool, str]:
    """Whether XLA compiles and runs a tiny jit_compile function, and how long it took."""
    import tensorflow as tf

    started = time.perf_counter()
    try:
        value = tf.function(lambda x: tf.reduce_sum(x * 2.0 + 1.0), jit_compile=True)(
            tf.range(4, dtype=tf.float32)
        )
        ok = float(value) == 16.0
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        return False, f"failed: {str(error).strip().splitlines()[0]}"
    seconds = time.perf_counter() - started
    return ok, f"compiled in {seconds:.2f}s" if ok else "compiled, but returned a wrong value"


def threading() -> dict[str, str]:
    """tf.data's default options that size its threads and buffers, and TF's op thread pools
    (0 and None mean TensorFlow decides, shown with what it decides where that is known)."""
    import tensorflow as tf

    options = tf.data.Options()
    cpus = cpu_count()
    return {
        "tf.data private_threadpool_size": _default(
            options.threading.private_threadpool_size, "shared pool"
        ),
        "tf.data max_intra_op_parallelism": _default(
            options.threading.max_intra_op_parallelism, "unset: TensorFlow decides"
        ),
        "tf.data autotune": str(options.autotune.enabled is not False),
        "tf.data autotune cpu_budget": _default(options.autotune.cpu_budget, f"{cpus} CPUs"),
        "tf.data autotune ram_budget": _default(
            options.autotune.ram_budget, "half the host memory"
        ),
        "TF inter_op threads": _default(
            tf.config.threading.get_inter_op_parallelism_threads() or None, f"{cpus} CPUs"
        ),
        "TF intra_op threads": _default(
            tf.config.threading.get_intra_op_parallelism_threads() or None, f"{cpus} CPUs"
        ),
    }


def cpu_count() -> int:
    """Cores this process may run on (fewer than os.cpu_count() in a container or under taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _default(value, meaning: str) -> str:
    return f"default ({meaning})" if value is None else str(value)


def input_settings(cfg: schema.Config) -> dict[str, str]:
    """The config's settings that shape the input pipeline's cost."""
    output_dir = cfg.data.output_dir
    where = "bucket: read from a local cached copy" if "://" in output_dir else "local"
    return {
        "data.output_dir": f"{output_dir} ({where})",
        "data.batch_size": str(cfg.data.batch_size),
        "data.image_size": "x".join(map(str, cfg.data.image_size)),
        "data.channels": str(cfg.data.channels),
        "data.shuffle_buffer": str(cfg.data.shuffle_buffer),
        "data.store.max_side": str(cfg.data.store.max_side),
        "augment.layers": ", ".join(next(iter(layer)) for layer in cfg.augment.layers) or "none",
        "train.gradient_accumulation_steps": str(cfg.train.gradient_accumulation_steps),
        "train.precision": cfg.train.precision,
    }


def report(cfg: schema.Config | None = None) -> list[str]:
    """The doctor's lines, ending with a one-line summary."""
    found_versions = versions()
    found_devices = devices()
    policy, why = mixed_precision(found_devices, cpu_bf16_flags())
    xla_ok, xla_note = xla()
    lines = ["versions:"]
    lines += [f"  {name}: {version}" for name, version in found_versions.items()]
    lines.append("devices:")
    lines.append(f"  CPU: {found_devices['cpus']} schedulable core(s) ({platform.machine()})")
    for index, gpu in enumerate(found_devices["gpus"]):
        capability = ".".join(map(str, gpu["compute_capability"] or ())) or "unknown"
        lines.append(f"  GPU:{index}: {gpu['name']} (compute capability {capability})")
    if not found_devices["gpus"]:
        lines.append(f"  GPU: none: {no_gpu_reason(build_info())}; training runs on the CPU")
    lines.append(f"mixed precision: {policy or 'float32 only'} ({why})")
    lines.append(f"XLA: {'ok' if xla_ok else 'unavailable'} ({xla_note})")
    lines.append("threading:")
    lines += [f"  {key}: {value}" for key, value in threading().items()]
    if cfg is not None:
        lines.append("input pipeline (config):")
        lines += [f"  {key}: {value}" for key, value in input_settings(cfg).items()]
    gpus = found_devices["gpus"]
    lines.append(
        f"doctor: TensorFlow {found_versions['TensorFlow']}, {found_devices['cpus']} CPU(s), "
        f"{len(gpus)} GPU(s){' (' + gpus[0]['name'] + ')' if gpus else ''}, "
        f"mixed precision {policy or 'no'}, XLA {'ok' if xla_ok else 'unavailable'}"
    )
    return lines
