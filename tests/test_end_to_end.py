"""The demo path end to end: digits -> ingest -> train -> evaluate -> export -> REST predictions."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import cli
from artifacts import export
from configs import loader, schema
from core import run_layout, signatures
from tests.conftest import DIGITS_CONFIG
from tfx_pipeline import demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cfg = loader.load(
        DIGITS_CONFIG,
        [
            f"data.source={root / 'digits'}",
            f"data.output_dir={root / 'tfrecords'}",
            f"train.runs_dir={root / 'runs'}",
            f"registry.store={root / 'store'}",
            f"pipeline.metadata={root / 'pipeline' / 'metadata.sqlite'}",
            "train.epochs=6",
        ],
    )
    return demo.run(cfg)


def test_demo_reaches_accuracy_on_the_test_split(demo_result):
    metrics = json.loads((demo_result.run.run_dir / run_layout.METRICS).read_text())
    assert metrics["accuracy"] > 0.9
    assert metrics["num_examples"] == sum(sum(row) for row in metrics["confusion_matrix"])
    assert sorted(metrics["per_class"]) == [str(d) for d in range(10)]
    assert len(metrics["dataset_version"]) == 16


def test_run_dir_has_every_artifact(demo_result):
    run_dir = demo_result.run.run_dir
    names = (
        run_layout.CONFIG,
        run_layout.HISTORY,
        run_layout.METRICS,
        run_layout.KERAS_MODEL,
        "run.json",
    )
    names += ("report.html", "blessing.json", "confusion_matrix.png", "predictions.jsonl")
    for name in names:
        assert (run_dir / name).is_file(), name
    assert list((run_dir / run_layout.CHECKPOINTS).glob("ckpt-*.index"))
    assert list((run_dir / run_layout.TENSORBOARD).rglob("events.out.tfevents.*"))
    assert (demo_result.run.export_dir / "saved_model.pb").is_file()
    saved = loader.load(run_dir / run_layout.CONFIG)
    assert saved.train.epochs == 6 and saved.serving.model_name == "digits"


def test_history_and_tensorboard_record_every_epoch(demo_result):
    run_dir = demo_result.run.run_dir
    with open(run_dir / run_layout.HISTORY) as history_file:
        history = list(csv.DictReader(history_file))
    epochs_run = json.loads((run_dir / run_layout.METRICS).read_text())["epochs_run"]
    assert len(history) == epochs_run
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir / run_layout.TENSORBOARD / "train"),
        size_guidance={event_accumulator.TENSORS: 0},
    )
    accumulator.Reload()
    losses = accumulator.Tensors("epoch_loss")
    assert [event.step for event in losses] == list(range(epochs_run))
    logged = [float(tf.make_ndarray(event.tensor_proto)) for event in losses]
    np.testing.assert_allclose(logged, [float(row["loss"]) for row in history], rtol=1e-5)
    assert "epoch_learning_rate" in accumulator.Tags()["tensors"]


def test_tensorboard_holds_the_run_hparams_and_augmented_images(demo_result):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = demo_result.run.run_dir
    # The hparams sit at the run's log root, so TensorBoard finds train/ and validation/ below.
    hparams = event_accumulator.EventAccumulator(str(run_dir / run_layout.TENSORBOARD))
    hparams.Reload()
    content = hparams.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert session.hparams["model.backbone"].string_value == "cnn"
    assert session.hparams["train.epochs"].number_value == 6
    assert session.hparams["optimizer.learning_rate"].number_value == pytest.approx(0.003)
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir / run_layout.TENSORBOARD / "train"),
        size_guidance={event_accumulator.TENSORS: 0},
    )
    accumulator.Reload()
    [grid] = accumulator.Tensors("augmented_training_images")
    width, height, png = tf.make_ndarray(grid.tensor_proto)
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (int(height), int(width), 3)
    assert 0 < image.mean() < 255  # pixels, not a blank tile


def test_run_saves_its_backbone_for_reuse_as_model_weights(demo_result, tmp_path):
    from trainer import models

    path = demo_result.run.run_dir / run_layout.BACKBONE_WEIGHTS
    cfg = loader.load(DIGITS_CONFIG, [f"model.weights={path}"])
    reused = models.build_model(cfg.model, (32, 32, 1), 3).get_layer(models.BACKBONE)
    trained = keras.saving.load_model(demo_result.run.run_dir / run_layout.KERAS_MODEL)
    for a, b in zip(
        reused.get_weights(), trained.get_layer(models.BACKBONE).get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_export_writes_every_format_matching_the_saved_model(demo_result, capsys):
    from artifacts import formats

    run_dir = demo_result.run.run_dir
    assert cli.main(["export", "--run", str(run_dir)]) == 0
    out = run_dir / formats.FORMATS_DIR / demo_result.run.export_dir.name
    parities = {
        name: json.loads((out / f"{name}.parity.json").read_text())
        for name in ("model.keras", "model.onnx", "model.tflite", "model.dynamic_range.tflite")
    }
    for name, parity in parities.items():
        assert parity["passed"] and parity["num_images"] == 64, (name, parity)
        assert parity["images"].startswith("test split")
        assert parity["top1_agreement"] == 1.0 or "dynamic_range" in name
    for name in ("model.keras", "model.onnx", "model.tflite"):
        assert parities[name]["max_abs_diff"] <= 1e-5
    quantised = parities["model.dynamic_range.tflite"]["size_bytes"]
    assert quantised < 0.5 * parities["model.tflite"]["size_bytes"]
    metadata = json.loads((out / signatures.METADATA_FILE).read_text())
    assert metadata == export.read_metadata(demo_result.run.export_dir)
    assert metadata["class_names"] == [str(d) for d in range(10)]
    run_metrics = json.loads((run_dir / run_layout.METRICS).read_text())
    assert metadata["run_id"] == run_dir.name
    assert metadata["dataset_version"] == run_metrics["dataset_version"]
    # The test figures are the evaluator's, of this export, in the run's metrics.json only.
    assert "metrics" not in metadata
    # The resolved config travels with the model: it loads back to the run's own config.
    resolved = loader.load(run_dir / run_layout.CONFIG)
    assert loader.to_dict(schema.Config.model_validate(metadata["config"])) == loader.to_dict(
        resolved
    )
    assert "4 file(s) match the SavedModel" in capsys.readouterr().out


def test_export_of_an_unknown_format_is_a_one_line_error(demo_result, capsys):
    run_dir = demo_result.run.run_dir
    assert cli.main(["export", "--run", str(run_dir), "--format", "onnx,caffe"]) == 2
    assert "unknown caffe; choose from savedmodel,keras,onnx,tflite" in capsys.readouterr().err


def test_rest_predictions_match_the_saved_model(demo_result):
    assert len(demo_result.predictions) == demo.SAMPLE_IMAGES
    signature = tf.saved_model.load(str(demo_result.run.export_dir)).signatures[
        signatures.SERVING_DEFAULT
    ]
    paths = [p["path"] for p in demo_result.predictions]
    image_bytes = tf.constant([open(p, "rb").read() for p in paths])
    local = signature(**{signatures.IMAGE_BYTES: image_bytes})
    scores = local[signatures.SCORES].numpy()
    class_names = [c.decode() for c in local[signatures.CLASSES].numpy()[0]]
    for row, prediction in zip(scores, demo_result.predictions, strict=True):
        ((name, probability),) = prediction["top"]
        assert name == class_names[int(np.argmax(row))]
        assert probability == pytest.approx(float(row.max()), abs=1e-6)
    correct = sum(p["top"][0][0] == p["true"] for p in demo_result.predictions)
    assert correct >= 4


def test_demo_runs_the_pipeline_and_serves_the_pushed_version(demo_result):
    from registry import store
    from tfx_pipeline import metadata

    pushed = demo_result.pushed
    [version] = store.list_versions(pushed.parent.parent, "digits")
    assert (version.path, version.labels) == (pushed, ("production",))
    assert version.run_id == demo_result.run.run_dir.name
    # The version records the evaluation of what was pushed, from the run's metrics.json.
    run_metrics = json.loads((demo_result.run.run_dir / run_layout.METRICS).read_text())
    assert version.metrics == {
        key: run_metrics[key] for key in ("accuracy", "macro_f1", "num_examples")
    }
    database = pushed.parent.parent.parent / "pipeline" / "metadata.sqlite"
    with metadata.Store(database) as recorded:
        run = recorded.run(demo_result.pipeline_run_id)
    assert run["status"] == "completed"
    assert len(demo_result.predictions) == demo.SAMPLE_IMAGES
