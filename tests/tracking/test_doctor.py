"""`imgclf doctor`: versions, devices, precision, XLA and tf.data threading, exit status 0."""

import shutil
import subprocess

import pytest

import cli
from tests.conftest import DIGITS_CONFIG
from tracking import doctor

AVX512_HOST = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


def test_doctor_prints_versions_devices_and_a_summary(capsys):
    assert cli.main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("Python", "TensorFlow", "Keras", "KerasTuner", "Beam", "onnxruntime", "tf2onnx"):
        assert any(line.startswith(f"  {name}: ") for line in lines), name
    assert any(line.startswith("  CPU: ") and "core" in line for line in lines)
    assert any(line.startswith("XLA: ok") for line in lines)
    assert any("tf.data private_threadpool_size" in line for line in lines)
    assert not any("input pipeline" in line for line in lines)
    assert lines[-1].startswith("doctor: TensorFlow ")


def test_doctor_with_a_config_shows_its_input_pipeline(capsys):
    assert cli.main(["doctor", "--config", str(DIGITS_CONFIG), "--set", "data.batch_size=8"]) == 0
    output = capsys.readouterr().out
    assert "input pipeline (config):" in output
    assert "  data.batch_size: 8\n" in output
    assert "augment.layers: random_rotation, random_translation" in output


@pytest.mark.parametrize(
    ("gpus", "cpuinfo", "policy"),
    [
        ([{"name": "NVIDIA H100", "compute_capability": (9, 0)}], "", "mixed_float16"),
        ([{"name": "Tesla K80", "compute_capability": (3, 7)}], AVX512_HOST, None),
        ([], AVX512_HOST, "mixed_bfloat16"),
        ([], "flags\t: fpu sse avx2\n", None),
    ],
)
def test_mixed_precision_follows_gpu_capability_then_cpu_flags(gpus, cpuinfo, policy):
    flags = doctor.cpu_bf16_flags(cpuinfo)
    assert doctor.mixed_precision({"cpus": 2, "gpus": gpus}, flags)[0] == policy


def test_bf16_flags_are_read_from_cpuinfo():
    assert doctor.cpu_bf16_flags(AVX512_HOST) == ["avx512_bf16", "amx_bf16"]
    assert doctor.mixed_precision({"cpus": 2, "gpus": []}, None)[0] is None


CUDA_BUILD = {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}
# A stand-in for the NVIDIA driver's libcuda.so.1 (none runs on the CPU machines tests run on):
# cuInit returns INIT, the driver counts COUNT GPUs.
FAKE_DRIVER = """
int cuInit(unsigned flags) { return INIT; }
int cuDeviceGetCount(int *count) { *count = COUNT; return 0; }
int cuGetErrorName(int status, const char **name) {
    *name = status == 100 ? "CUDA_ERROR_NO_DEVICE" : 0;
    return *name ? 0 : 1;
}
int cuGetErrorString(int status, const char **text) {
    *text = status == 100 ? "no CUDA-capable device is detected" : 0;
    return *text ? 0 : 1;
}
"""


def fake_driver(tmp_path, init: int, count: int) -> str:
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build a stand-in NVIDIA driver")
    source, library = tmp_path / "cuda.c", tmp_path / f"libcuda-{init}-{count}.so"
    source.write_text(FAKE_DRIVER)
    command = [compiler, "-shared", "-fPIC", f"-DINIT={init}", f"-DCOUNT={count}"]
    subprocess.run([*command, "-o", str(library), str(source)], check=True)
    return str(library)


@pytest.fixture
def every_gpu_visible(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_no_gpu_reason_names_a_build_without_cuda_and_hidden_devices(monkeypatch):
    assert doctor.no_gpu_reason({"is_cuda_build": False}) == (
        "this TensorFlow build has no CUDA support"
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert doctor.no_gpu_reason(CUDA_BUILD) == "CUDA_VISIBLE_DEVICES='-1' hides every GPU"


def test_no_gpu_reason_tells_a_missing_driver_from_a_broken_one(tmp_path, every_gpu_visible):
    absent = "libcuda-absent.so.1"
    kernel = tmp_path / "nvidia-version"
    assert doctor.no_gpu_reason(CUDA_BUILD, absent, kernel) == (
        f"no NVIDIA driver on this machine ({absent} not found, no kernel module loaded)"
    )
    kernel.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14\n")
    assert doctor.no_gpu_reason(CUDA_BUILD, absent, kernel).startswith(
        f"the NVIDIA kernel driver is loaded, but its library failed to load ({absent}: "
    )


@pytest.mark.parametrize(
    ("init", "count", "reason"),
    [
        (
            100,
            0,
            "the NVIDIA driver failed to start "
            "(cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected)",
        ),
        (999, 0, "the NVIDIA driver failed to start (cuInit: CUDA error 999)"),
        (0, 0, "the NVIDIA driver reports no GPU"),
        (
            0,
            2,
            "the NVIDIA driver reports 2 GPU(s), but TensorFlow opened none; most often its CUDA "
            "libraries are missing: this TensorFlow needs CUDA 12.5.1 and cuDNN 9 (pip install "
            "'tensorflow[and-cuda]'); IMGCLF_VERBOSE=1 imgclf doctor shows TensorFlow's own "
            "messages",
        ),
    ],
)
def test_no_gpu_reason_reads_the_driver(tmp_path, every_gpu_visible, init, count, reason):
    driver = fake_driver(tmp_path, init, count)
    assert doctor.no_gpu_reason(CUDA_BUILD, driver, tmp_path / "nvidia-version") == reason
