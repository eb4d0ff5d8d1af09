"""A config flattened into the hyperparameters TensorBoard's HParams table and MLflow record."""

import json

from configs import loader
from tests.trainer.test_summaries import CONFIG
from tracking import hparams


def test_flatten_hparams_gives_dotted_keys_and_plugin_values():
    assert hparams.flatten_hparams(CONFIG) == {
        "name": "digits",
        "model.backbone": "cnn",
        "model.weights": "null",
        "model.head.dropout": 0.2,
        "optimizer.learning_rate": 0.001,
        "optimizer.nesterov": False,
        "data.image_size": "[32, 32]",
        "data.storage_options": "{}",
        "train.epochs": 3,
    }


def test_flatten_hparams_caps_long_layer_lists_and_keeps_them_apart():
    layers = [{"conv": {"filters": 32, "kernel_size": 3}}] * 20
    short = hparams.flatten_hparams({"model": {"cnn": layers[:2]}})["model.cnn"]
    assert json.loads(short) == layers[:2]
    assert " " not in short  # compact: more of the list fits in a table cell
    long = hparams.flatten_hparams({"model": {"cnn": layers}})["model.cnn"]
    other = hparams.flatten_hparams({"model": {"cnn": [*layers[:-1], {"max_pool": {}}]}})
    assert len(long) == hparams.MAX_VALUE_CHARS
    assert long.startswith(short[:-1])
    assert other["model.cnn"] != long  # differ only past the cut, still told apart


def test_flatten_hparams_covers_the_whole_default_config():
    flat = hparams.flatten_hparams(loader.to_dict(loader.load(None)))
    assert flat["optimizer.learning_rate"] == 0.001 and flat["model.backbone"] == "cnn"
    for key, value in flat.items():
        assert isinstance(value, bool | int | float | str), key
        assert not isinstance(value, str) or len(value) <= hparams.MAX_VALUE_CHARS, key
