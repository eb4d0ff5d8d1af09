"""Post-training quantisation of a small model trained on real digits: each mode's file, report
and accuracy beside the float SavedModel."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import cli
from artifacts import convert, export, formats, parity
from configs import loader
from core import errors, signatures
from transforms import dataset, digits
from transforms.beam import ingest

CLASSES = ["0", "1", "2", "3"]
# A quantised model may lose this much test accuracy against the float one, and must agree with
# its top-1 on this share of test images. Measured on this model: no mode flips any of the 142
# test images (int8 moves probabilities by 7e-3 at most); the bounds allow a few flips, not more.
ACCURACY_DROP_BOUND = 0.03
AGREEMENT_BOUND = 0.95
CALIBRATION_IMAGES = 64


def tiny_digits_cnn() -> keras.Model:
    """Conv -> Dense(32) -> softmax on 8x8 grey digits: 8k weights, 97 %+ after a few epochs."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `imgclf train` leaves it: digits 0-3 at 8x8 ingested, a model trained on
    the train split and exported with the metadata that points at the dataset version."""
    root = tmp_path_factory.mktemp("quantize")
    digits.write_digits(root / "digits", size=8)
    for folder in (root / "digits").iterdir():
        if folder.name not in CLASSES:  # four classes keep ingest and training to seconds
            shutil.rmtree(folder)
    cfg = loader.load(
        None,
        [
            f"data.source={root / 'digits'}",
            f"data.output_dir={root / 'data'}",
            "data.beam_direct_mode=in_memory",
            "data.beam_workers=1",
            "data.split={train: 0.6, val: 0.2, test: 0.2}",
            "data.image_size=[8, 8]",
            "data.channels=1",
        ],
    )
    result = ingest.run(cfg.data)
    train = dataset.build_dataset(result.path, "train", cfg.data, training=False).unbatch()
    images, labels = (np.stack(column) for column in zip(*train.as_numpy_iterator(), strict=True))
    model = tiny_digits_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, labels, batch_size=32, epochs=8, verbose=0)
    metadata = {"dataset_version": result.version, "config": loader.to_dict(cfg)}
    export.export_saved_model(model, root / "run" / "export", 1, (8, 8), 1, CLASSES, metadata)
    return root / "run"


@pytest.fixture(scope="module")
def exported(run_dir: Path) -> tuple[dict[str, dict], str]:
    """({mode: report}, printed output) of `imgclf export` writing every TFLite mode."""
    printed, errors_printed = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors_printed):
        status = cli.main(
            [
                "export",
                "--run",
                str(run_dir),
                "--format",
                "tflite",
                "--quantize",
                ",".join(convert.QUANTIZE_MODES),
                "--representative-images",
                str(CALIBRATION_IMAGES),
            ]
        )
    assert status == 0, errors_printed.getvalue()
    out = run_dir / formats.FORMATS_DIR / "1"
    reports = [json.loads(path.read_text()) for path in out.glob("*.tflite.parity.json")]
    return {report["quantize"]: report for report in reports}, printed.getvalue()


@pytest.mark.slow
@pytest.mark.beam
def test_every_mode_is_written_recognised_and_reported(run_dir, exported):
    reports = exported[0]
    out = run_dir / formats.FORMATS_DIR / "1"
    assert sorted(reports) == sorted(convert.QUANTIZE_MODES)
    float_size = reports["none"]["size_bytes"]
    for mode, result in reports.items():
        path = out / formats.tflite_name(mode)
        assert result["converted"] == path.name and parity.tflite_quantize(path) == mode
        assert result["passed"] and result["images"].startswith("test split"), result
        assert result["size_ratio_to_saved_model"] == pytest.approx(
            result["size_bytes"] / parity.saved_model_size(run_dir / "export" / "1")
        )
        assert result["size_ratio_to_float_tflite"] == pytest.approx(
            result["size_bytes"] / float_size
        )
        accuracy = result["accuracy"]
        assert accuracy["num_images"] > 100  # the whole test split; parity takes the first 64
        assert accuracy["reference_accuracy"] > 0.9, "the float model must have learnt digits"
        assert accuracy["accuracy_delta"] == pytest.approx(
            accuracy["accuracy"] - accuracy["reference_accuracy"]
        )
        if mode == "none":
            assert accuracy["accuracy_delta"] == 0 and accuracy["top1_agreement"] == 1
        else:
            assert result["size_bytes"] < float_size, result
            assert accuracy["accuracy_delta"] >= -ACCURACY_DROP_BOUND, result
            assert accuracy["top1_agreement"] >= AGREEMENT_BOUND, result
    assert reports["int8"]["size_bytes"] < 0.5 * float_size
    assert reports["dynamic_range"]["size_bytes"] < 0.5 * float_size
    # Weights halve; the graph and the class names around them do not.
    assert reports["float16"]["size_bytes"] < 0.75 * float_size


@pytest.mark.slow
@pytest.mark.beam
def test_int8_keeps_the_float_signature_and_computes_in_int8(run_dir, exported):
    path = run_dir / formats.FORMATS_DIR / "1" / formats.tflite_name("int8")
    interpreter = parity.tflite_interpreter(path)
    runner = interpreter.get_signature_runner("predict_images")
    assert runner.get_input_details()["images"]["dtype"] == np.float32
    outputs = runner.get_output_details()
    assert outputs["scores"]["dtype"] == np.float32 and outputs["classes"]["dtype"] == np.bytes_
    int8 = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
    # Weights and activations: every conv/dense output between the quantize and dequantize ops.
    assert len(int8) >= 8 and all(t["quantization_parameters"]["scales"].size for t in int8)
    assert not [t for t in interpreter.get_tensor_details() if t["dtype"] == np.float16]

    images = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    scores = runner(images=images)["scores"]
    assert scores.shape == (3, len(CLASSES))
    np.testing.assert_allclose(scores.sum(axis=1), 1, atol=0.02)  # int8 softmax: 1/256 steps


@pytest.mark.slow
@pytest.mark.beam
def test_float16_stores_half_precision_weights(run_dir, exported):
    path = run_dir / formats.FORMATS_DIR / "1" / formats.tflite_name("float16")
    details = parity.tflite_interpreter(path).get_tensor_details()
    assert {t["dtype"] for t in details} >= {np.float16, np.float32}
    assert not [t for t in details if t["dtype"] == np.int8]


@pytest.mark.slow
@pytest.mark.beam
def test_the_export_command_prints_a_table_of_every_file(exported):
    reports, printed = exported
    lines = printed.splitlines()
    header = next(index for index, line in enumerate(lines) if "accuracy" in line)
    rows = {line.split()[0]: line for line in lines[header + 1 : header + 5]}
    assert sorted(rows) == sorted(formats.tflite_name(mode) for mode in convert.QUANTIZE_MODES)
    for mode, report in reports.items():
        row = rows[formats.tflite_name(mode)].split()
        assert row[1] == f"{report['size_bytes']:,d}" and row[-1] == "pass", row
        assert row[2] == f"{report['size_ratio_to_float_tflite']:.2f}", row
        assert row[4] == f"{report['accuracy']['accuracy']:.2%}", row
    assert "4 file(s) match the SavedModel" in lines[-1]


def test_bad_quantisation_options_are_one_line_errors(export_base, tmp_path, capsys):
    assert issubclass(formats.ExportError, errors.UserError)
    with pytest.raises(formats.ExportError, match=r"--quantize: unknown int4; choose from none,"):
        formats.parse_quantize("int8,int4")
    with pytest.raises(formats.ExportError, match=r"--representative-images must be > 0 \(rec"):
        formats.export_run(tmp_path, ["tflite"], ["int8"], representative_images=0)
    saved_model = export_base / "1"  # conftest's 32x32 grey dense model
    with pytest.raises(convert.ConversionError, match=r"int8 needs representative images"):
        convert.to_tflite(saved_model, tmp_path / "x.tflite", "int8")
    with pytest.raises(convert.ConversionError, match=r"int8 calibration: images must be float"):
        convert.to_tflite(saved_model, tmp_path / "x.tflite", "int8", np.zeros((4, 8, 8, 1)))

    assert cli.main(["export", "--run", str(tmp_path), "--quantize", "fp16"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("--quantize: unknown fp16; choose from none,dynamic_range,float16,int8")
    assert "\n" not in error and not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.beam
def test_int8_without_its_training_data_says_what_is_missing(run_dir, tmp_path):
    # The same export, but its dataset version is gone from disk.
    source = run_dir / "export" / "1"
    moved = tmp_path / "run" / "export" / "1"
    shutil.copytree(source, moved)
    metadata = export.read_metadata(source)
    metadata["dataset_version"] = "0123456789abcdef"
    (moved / signatures.METADATA_DIR / signatures.METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(formats.ExportError) as raised:
        formats.export_run(tmp_path / "run", ["tflite"], ["int8"])
    message = str(raised.value)
    assert message.startswith("tflite int8 calibrates on the training split of the model's ")
    assert "0123456789abcdef" in message and "drop int8 from --quantize" in message
    assert "\n" not in message
