"""The ONNX runtime a served version may use instead of the SavedModel for its image signatures.

`imgclf export --format onnx` puts a parity-checked `model.onnx` (and its `.parity.json`) in the
SavedModel's `assets.extra/`, where TF Serving ignores it and the registry copies it along. A
server with `serving.runtime` `auto` or `onnx` then runs the model part of `serving_default` and
`predict_images` with onnxruntime: the image bytes still go through the SavedModel's own
`preprocess_images` signature, so both runtimes see exactly the same pixels.
"""

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core import signatures

ONNX_FILE = "model.onnx"
RUNTIMES = ("auto", "savedmodel", "onnx")
SAVEDMODEL, ONNX = "savedmodel", "onnx"
# The runtimes must agree on the warm-up images before ONNX may serve (parity allows 1e-5).
AGREEMENT = 1e-4
TIMING_CALLS = 15


def onnx_file(version_dir: Path) -> Path:
    return version_dir / signatures.METADATA_DIR / ONNX_FILE


def usable_onnx(version_dir: Path, signature_names: set[str]) -> tuple[Path | None, str]:
    """(the ONNX model to serve, "") or (None, why not)."""
    path = onnx_file(version_dir)
    if not path.is_file():
        return None, f"no {signatures.METADATA_DIR}/{ONNX_FILE} (run `imgclf export --format onnx`)"
    parity_path = path.with_name(ONNX_FILE + signatures.PARITY_SUFFIX)
    try:
        parity = json.loads(parity_path.read_text())
    except (OSError, ValueError):
        return None, f"{ONNX_FILE} has no readable {parity_path.name}"
    if parity.get("passed") is not True:
        return None, f"{ONNX_FILE} failed its parity check ({parity_path.name})"
    if signatures.PREPROCESS not in signature_names:
        return None, f"the export has no {signatures.PREPROCESS!r} signature (re-export it)"
    return path, ""


class OnnxModel:
    """The tf2onnx conversion of `predict_images`: float images in, scores out."""

    def __init__(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Idle intra-op threads sleep instead of spinning: a spinning pool holds the cores that
        # the server's own Python (HTTP, JSON, preprocessing) needs between model calls. Measured
        # on 2 cores (bench_serving, MobileNetV2): server CPU per image -20 to -25%, images/s at
        # 32 clients +21%, one-client p50 within noise.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Default thread count: pinning onnxruntime to fewer threads was slower on 2 cores.
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        inputs = [node.name for node in self.session.get_inputs()]
        if inputs != [signatures.IMAGES]:
            raise ValueError(f"{path} must take one input {signatures.IMAGES!r}, takes {inputs}")

    def scores(self, images: np.ndarray) -> np.ndarray:
        (scores,) = self.session.run([signatures.SCORES], {signatures.IMAGES: images})
        return scores


def median_ms(call: Callable[[], object], calls: int = TIMING_CALLS) -> float:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)
