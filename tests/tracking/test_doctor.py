"""`imgclf doctor`: versions, devices, precision, XLA and tf.data threading, exit status 0."""

import pytest

from tests.conftest import DIGITS_CONFIG
from tfx_pipeline import cli
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
