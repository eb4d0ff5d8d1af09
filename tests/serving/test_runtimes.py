"""onnxruntime behind the server's image signatures: same pixels, same scores, and the rules for
when a version may use it."""

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf

from artifacts import convert, export, formats, models, parity, runtimes
from core import signatures
from serving import client
from tests.artifacts.test_convert import CLASS_NAMES, IMAGE_SIZE, tiny_cnn
from tests.artifacts.test_export_kinds import KINDS

pytestmark = pytest.mark.serving


def export_with_onnx(base: Path, seed: int = 0) -> Path:
    """A tiny CNN exported as base/1/, converted to ONNX, parity-checked and attached."""
    saved_model = export.export_saved_model(tiny_cnn(seed), base, 1, IMAGE_SIZE, 3, CLASS_NAMES, {})
    onnx_path = convert.to_onnx(saved_model, base / "formats" / runtimes.ONNX_FILE)
    images = parity.build_parity_images(saved_model, count=8)
    parity.write_parity(parity.check_parity(saved_model, onnx_path, images), onnx_path)
    formats.attach_onnx(saved_model, onnx_path)
    return saved_model


@pytest.fixture(scope="module")
def with_onnx(tmp_path_factory) -> Path:
    return export_with_onnx(tmp_path_factory.mktemp("runtimes") / "model")


@pytest.fixture(scope="module")
def decodable() -> dict[str, bytes]:
    """Every kind of image the in-graph preprocessing decodes (WebP is not among them)."""
    return {name: data for name, data in KINDS.items() if not name.endswith(".webp")}


def copy_version(saved_model: Path, to: Path) -> Path:
    shutil.copytree(saved_model, to / "1")
    return to / "1"


def test_attached_onnx_and_its_verdict_travel_in_assets_extra(with_onnx):
    attached = with_onnx / signatures.METADATA_DIR / runtimes.ONNX_FILE
    assert attached.read_bytes() == (with_onnx.parent / "formats" / runtimes.ONNX_FILE).read_bytes()
    parity = json.loads(
        attached.with_name(runtimes.ONNX_FILE + signatures.PARITY_SUFFIX).read_text()
    )
    assert parity["passed"] is True
    assert runtimes.usable_onnx(with_onnx, {signatures.PREPROCESS}) == (attached, "")


def test_the_onnx_path_preprocesses_to_the_in_graph_tensor(with_onnx, decodable):
    loaded = tf.saved_model.load(str(with_onnx))
    session = runtimes.OnnxModel(with_onnx / signatures.METADATA_DIR / runtimes.ONNX_FILE)
    for name, data in decodable.items():
        image_bytes = tf.constant([data])
        pixels = loaded.signatures[signatures.PREPROCESS](image_bytes=image_bytes)
        pixels = pixels[signatures.IMAGES]
        assert pixels.shape == (1, *IMAGE_SIZE, 3), name
        in_graph = loaded.signatures[signatures.SERVING_DEFAULT](image_bytes=image_bytes)
        from_pixels = loaded.signatures[signatures.PREDICT_IMAGES](images=pixels)
        # The same tensor reaches the model: bit-identical scores through the SavedModel.
        np.testing.assert_array_equal(
            from_pixels[signatures.SCORES].numpy(), in_graph[signatures.SCORES].numpy(), name
        )
        np.testing.assert_allclose(
            session.scores(pixels.numpy()), in_graph[signatures.SCORES].numpy(), atol=1e-5
        )


def test_a_version_served_with_onnx_answers_as_the_saved_model(with_onnx, decodable):
    on_onnx = models.ServedModel("m", 1, with_onnx, runtimes.ONNX)
    on_savedmodel = models.ServedModel("m", 1, with_onnx, runtimes.SAVEDMODEL)
    assert (on_onnx.runtime, on_savedmodel.runtime) == (runtimes.ONNX, runtimes.SAVEDMODEL)
    images = list(decodable.values())
    got, expected = on_onnx.predict(images), on_savedmodel.predict(images)
    np.testing.assert_allclose(got[signatures.SCORES], expected[signatures.SCORES], atol=1e-5)
    assert got[signatures.CLASSES].tolist() == expected[signatures.CLASSES].tolist()
    assert got[signatures.CLASSES].dtype == expected[signatures.CLASSES].dtype

    pixels = {signatures.IMAGES: np.random.default_rng(0).random((3, *IMAGE_SIZE, 3), np.float32)}
    np.testing.assert_allclose(
        on_onnx.run(signatures.PREDICT_IMAGES, pixels)[signatures.SCORES],
        on_savedmodel.run(signatures.PREDICT_IMAGES, pixels)[signatures.SCORES],
        atol=1e-5,
    )
    with pytest.raises(models.InvalidInputError, match="could not decode the images"):
        on_onnx.predict([b"not an image"])


def test_auto_picks_the_faster_runtime_and_says_why(with_onnx):
    served = models.ServedModel("m", 1, with_onnx, "auto")
    assert served.runtime in (runtimes.ONNX, runtimes.SAVEDMODEL)
    assert "onnxruntime" in served.runtime_reason and "SavedModel" in served.runtime_reason
    assert (served.onnx is not None) == (served.runtime == runtimes.ONNX)


def test_without_a_usable_onnx_model_auto_keeps_the_saved_model_and_onnx_is_an_error(
    with_onnx, tmp_path
):
    bare = copy_version(with_onnx, tmp_path / "bare")
    (bare / signatures.METADATA_DIR / runtimes.ONNX_FILE).unlink()
    served = models.ServedModel("m", 1, bare, "auto")
    assert served.runtime == runtimes.SAVEDMODEL and "imgclf export --format onnx" in (
        served.runtime_reason
    )
    with pytest.raises(models.ModelLoadError, match="serving.runtime is onnx but .* no assets"):
        models.ServedModel("m", 1, bare, runtimes.ONNX)

    failed = copy_version(with_onnx, tmp_path / "failed")
    verdict = failed / signatures.METADATA_DIR / (runtimes.ONNX_FILE + signatures.PARITY_SUFFIX)
    verdict.write_text(json.dumps(json.loads(verdict.read_text()) | {"passed": False}))
    assert models.ServedModel("m", 1, failed, "auto").runtime == runtimes.SAVEDMODEL
    with pytest.raises(models.ModelLoadError, match="failed its parity check"):
        models.ServedModel("m", 1, failed, runtimes.ONNX)

    with pytest.raises(models.ModelLoadError, match="serving.runtime must be one of"):
        models.ServedModel("m", 1, with_onnx, "tensorrt")


def test_an_onnx_model_of_other_weights_is_never_served(with_onnx, tmp_path):
    """A stranger's model.onnx with a forged 'passed' verdict: the load-time check catches it."""
    stranger = export_with_onnx(tmp_path / "stranger", seed=1)
    mixed = copy_version(with_onnx, tmp_path / "mixed")
    shutil.copyfile(
        stranger / signatures.METADATA_DIR / runtimes.ONNX_FILE,
        mixed / signatures.METADATA_DIR / runtimes.ONNX_FILE,
    )
    served = models.ServedModel("m", 1, mixed, "auto")
    assert served.runtime == runtimes.SAVEDMODEL and "differs by" in served.runtime_reason
    with pytest.raises(models.ModelLoadError, match="differs from the SavedModel"):
        models.ServedModel("m", 1, mixed, runtimes.ONNX)


def test_the_server_answers_rest_and_grpc_from_onnxruntime(start_server, with_onnx, decodable):
    on_onnx = start_server(model_path=with_onnx.parent, name="m", runtime=runtimes.ONNX)
    reference = models.ServedModel("m", 1, with_onnx, runtimes.SAVEDMODEL)
    images = list(decodable.values())
    expected = reference.predict(images)[signatures.SCORES]
    for answer in (
        client.RestClient(on_onnx.rest_url, "m").predict(images),
        client.GrpcClient(on_onnx.grpc_target, "m").predict(images),
    ):
        np.testing.assert_allclose(answer.scores, expected, atol=1e-5)
    status = httpx.get(f"{on_onnx.rest_url}/v1/models/m").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
