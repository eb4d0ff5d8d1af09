"""configs.loader: defaults -> YAML -> ${ENV} -> --set, strict validation and key-path errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from configs import loader, schema
from trainer import cnn
from transforms import augment

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((REPO / "configs").glob("*.yaml"))
DIGITS_YAML = REPO / "configs" / "digits.yaml"


def load_error(*overrides: str, path: Path | None = None) -> str:
    with pytest.raises(loader.ConfigError) as raised:
        loader.load(path, list(overrides))
    return str(raised.value)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- defaults and files ---


def test_defaults_load_without_file():
    cfg = loader.load()
    assert cfg == schema.Config()
    assert cfg.data.batch_size == 64
    assert cfg.model.backbone == "cnn"
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.8, 0.1, 0.1)


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert loader.load(write_yaml(tmp_path, "# nothing set\n")) == schema.Config()


def test_yaml_values_override_defaults(tmp_path):
    cfg = loader.load(write_yaml(tmp_path, "train:\n  epochs: 3\ndata: {channels: 1}\n"))
    assert cfg.train.epochs == 3
    assert cfg.data.channels == 1
    assert cfg.train.runs_dir == schema.TrainConfig().runs_dir


def test_missing_config_file_is_config_error(tmp_path):
    message = load_error(path=tmp_path / "nope.yaml")
    assert "config file not found" in message and "nope.yaml" in message


def test_invalid_yaml_is_one_line_naming_the_line_and_column(tmp_path):
    path = write_yaml(tmp_path, "train: [epochs\n")
    message = load_error(path=path)
    assert message.startswith(f"{path}:2:1 is not valid YAML: expected ',' or ']'")
    assert "\n" not in message


def test_a_tab_in_yaml_says_to_indent_with_spaces(tmp_path):
    path = write_yaml(tmp_path, "data:\n\tsource: images\n")
    message = load_error(path=path)
    assert message.startswith(f"{path}:2:1 is not valid YAML: found character '\\t'")
    assert message.endswith("indent with spaces, YAML does not allow tabs there")


def test_yaml_top_level_must_be_mapping(tmp_path):
    message = load_error(path=write_yaml(tmp_path, "- train\n- data\n"))
    assert "must hold a mapping at the top (received list)" in message


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_bundled_yaml_validates(path):
    assert isinstance(loader.load(path), schema.Config)


def test_digits_yaml_resolves_defaults_of_its_env_references(monkeypatch):
    for name in ("DIGITS_DIR", "DATA_OUT", "RUNS_DIR"):
        monkeypatch.delenv(name, raising=False)
    cfg = loader.load(DIGITS_YAML)
    assert cfg.data.source == "data/digits"
    assert cfg.data.output_dir == "data/tfrecords/digits"
    assert cfg.train.runs_dir == "runs"
    assert cfg.data.channels == 1
    assert cfg.optimizer.warmup_epochs == 1.0


# --- unknown keys ---


@pytest.mark.parametrize(
    ("override", "key_path", "suggestion"),
    [
        ("train.epocs=3", "train.epocs", "train.epochs"),
        ("data.split.tran=0.8", "data.split.tran", "data.split.train"),
        ("data.batchsize=8", "data.batchsize", "data.batch_size"),
        ("trian.epochs=3", "trian", "train"),
        ("model.head.pool=avg", "model.head.pool", "model.head.pooling"),
    ],
)
def test_unknown_key_names_path_and_closest_key(override, key_path, suggestion):
    message = load_error(override)
    assert f"{key_path}: unknown key (did you mean {suggestion}?)" in message


def test_unknown_key_without_close_match_lists_valid_keys():
    message = load_error("serving.zzzzzz=1")
    assert "serving.zzzzzz: unknown key; valid keys here: model_name, host, port" in message


def test_unknown_key_in_yaml_file_is_rejected(tmp_path):
    message = load_error(path=write_yaml(tmp_path, "train:\n  epocs: 3\n"))
    assert "train.epocs: unknown key (did you mean train.epochs?)" in message


# --- wrong types and out-of-range values ---


@pytest.mark.parametrize(
    ("override", "key_path", "accepted", "received"),
    [
        ("data.batch_size=-4", "data.batch_size", "greater than 0", "-4"),
        ("data.channels=2", "data.channels", "1 or 3", "2"),
        ("model.backbone=resnet", "model.backbone", "'mobilenet_v2'", "'resnet'"),
        ("train.epochs=many", "train.epochs", "valid integer", "'many'"),
        ("train.epochs=0", "train.epochs", "greater than 0", "0"),
        ("serving.port=70000", "serving.port", "less than or equal to 65535", "70000"),
        (
            "optimizer.schedule=linear",
            "optimizer.schedule",
            "'exponential' or 'plateau'",
            "'linear'",
        ),
        ("model.head.dropout=1.0", "model.head.dropout", "less than 1", "1.0"),
        ("serving.model_name=my model", "serving.model_name", "pattern", "'my model'"),
    ],
)
def test_bad_value_names_path_accepted_and_received(override, key_path, accepted, received):
    message = load_error(override)
    line = next(
        line
        for line in message.splitlines()
        if line.strip().removeprefix("invalid config: ").startswith(key_path + ":")
    )
    assert accepted in line
    assert line.endswith(f"(received {received})")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "data.output_dir=hdfs://cluster/tfrecords",
            "data.output_dir: hdfs:// cannot hold dataset versions (received "
            "hdfs://cluster/tfrecords); use a local (or mounted) folder or a bucket: s3://, gs://",
        ),
        (
            "registry.store=s3://bucket/store",
            "registry.store: needs a local (or mounted) path, not a URL (received "
            "s3://bucket/store)",
        ),
        (
            "pipeline.metadata=gs://bucket/metadata.sqlite",
            "pipeline.metadata: needs a local (or mounted) path, not a URL",
        ),
        (
            "pipeline={tune: true}",
            "pipeline.tune needs a local train.runs_dir (received s3://bucket/runs)",
        ),
    ],
)
def test_a_bucket_where_a_local_folder_is_needed_is_a_config_error(override, expected):
    assert expected in load_error(override, "train.runs_dir=s3://bucket/runs")


def test_buckets_are_accepted_where_they_work():
    cfg = loader.load(
        None,
        [
            "data.output_dir=s3://bucket/tfrecords",
            "train.runs_dir=s3://bucket/runs",
            "serving.monitoring.dir=s3://bucket/stats",
            "registry.store=file:///srv/store",
        ],
    )
    assert (cfg.data.output_dir, cfg.train.runs_dir) == (
        "s3://bucket/tfrecords",
        "s3://bucket/runs",
    )
    # gs:// suits ingest's workers on a cluster too.
    cluster = loader.load(None, ["data.output_dir=gs://b/tfr", "data.beam_runner=FlinkRunner"])
    assert cluster.data.output_dir == "gs://b/tfr"
    # file:// is a local path: used as given it would become a folder named `file:`.
    assert cfg.registry.store == "/srv/store"


def test_every_backbone_named_when_backbone_is_unknown():
    message = load_error("model.backbone=resnet")
    for name in ("cnn", *schema.BACKBONE_NAMES):
        assert repr(name) in message


def test_non_positive_image_size_names_value():
    message = load_error("data.image_size=[0, 32]")
    assert "data.image_size: both sides must be > 0 (received [0, 32])" in message


def test_all_problems_reported_at_once():
    message = load_error("data.batch_size=-4", "train.epocs=3")
    assert message.startswith("invalid config (2 problems):")
    assert "data.batch_size" in message and "train.epocs" in message


def test_split_fractions_must_sum_to_one():
    message = load_error("data.split.train=0.7")
    assert "data.split: train + val + test must sum to 1" in message
    assert "(received 0.7 + 0.1 + 0.1 = 0.9)" in message


def test_split_fractions_summing_to_one_are_accepted():
    cfg = loader.load(None, ["data.split={train: 0.6, val: 0.2, test: 0.2}"])
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.6, 0.2, 0.2)


def test_pretrained_backbone_needs_three_channels():
    message = load_error("model.backbone=mobilenet_v2", "data.channels=1")
    assert "needs data.channels: 3 (received 1)" in message


# --- layer lists ---


def test_cnn_layer_defaults_are_filled_in():
    cfg = loader.load(None, ["model.cnn=[{conv: {filters: 8}}, {max_pool: {}}]"])
    assert cfg.model.cnn == [
        {
            "conv": {
                "filters": 8,
                "kernel_size": 3,
                "strides": 1,
                "activation": "relu",
                "padding": "same",
            }
        },
        {"max_pool": {"pool_size": 2}},
    ]


def test_cnn_rejects_unknown_layer_listing_accepted_ones():
    message = load_error("model.cnn=[{conv: {filters: 8}}, {conv2d: {filters: 8}}]")
    assert "model.cnn: item 1: unknown layer 'conv2d'" in message
    assert "accepted: " + ", ".join(schema.CNN_LAYER_SPECS) in message


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        ("{conv: {filters: -1}}", "[0].conv.filters: Input should be greater than 0 (received -1)"),
        ("{conv: {filter: 8}}", "[0].conv.filter: Extra inputs are not permitted"),
        ("{conv: {}}", "[0].conv.filters: Field required"),
        ("{conv: {filters: 8, padding: full}}", "[0].conv.padding:"),
        ("{dropout: {rate: 1.5}}", "[0].dropout.rate: Input should be less than 1 (received 1.5)"),
    ],
)
def test_cnn_rejects_bad_layer_kwargs(layer, expected):
    message = load_error(f"model.cnn=[{layer}]")
    assert "model.cnn:" in message
    assert expected in message


def test_layer_item_must_have_exactly_one_name():
    message = load_error("model.cnn=[{conv: {filters: 8}, max_pool: {}}]")
    assert "item 0 must be a mapping with exactly one layer name" in message


def test_augment_rejects_unknown_layer_listing_accepted_ones():
    message = load_error("augment.layers=[{random_rotaton: {factor: 0.1}}]")
    assert "augment.layers: item 0: unknown layer 'random_rotaton'" in message
    assert "(did you mean 'random_rotation'?)" in message
    assert "accepted: " + ", ".join(schema.AUGMENT_LAYER_CLASSES) in message


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        # Unknown keyword: named with the closest one and every one the Keras layer takes.
        (
            "{random_zoom: {height_factor: 0.1, depth: 2}}",
            "[0].random_zoom.depth: not a keyword argument of keras.layers.RandomZoom; it takes "
            "height_factor, width_factor, fill_mode, interpolation, fill_value",
        ),
        ("{random_rotation: {factr: 0.1}}", "(did you mean 'factor'?)"),
        # Bad values: Keras' own check, quoted.
        ("{random_flip: {mode: diagonal}}", "[0].random_flip.mode: must be one of horizontal,"),
        (
            "{random_rotation: {factor: 0.1, fill_mode: bogus}}",
            "keras.layers.RandomRotation refused {'factor': 0.1, 'fill_mode': 'bogus'}",
        ),
        (
            "{random_contrast: {factor: -0.5}}",
            "keras.layers.RandomContrast refused {'factor': -0.5}: The `factor` argument should",
        ),
        ("{random_flip: {seed: 3}}", "[0].random_flip.seed: set by imgclf"),
        ("{random_flip: [horizontal]}", "[0].random_flip: takes a mapping of keyword arguments"),
    ],
)
def test_augment_rejects_bad_layer_kwargs(layer, expected):
    message = load_error(f"augment.layers=[{layer}]")
    assert "augment.layers:" in message
    assert expected in message
    assert "\n" not in message


def test_a_colour_layer_on_grayscale_data_is_a_config_error():
    message = load_error("data.channels=1", "augment.layers=[{random_hue: {factor: 0.2}}]")
    assert message.endswith(
        "augment.layers[0].random_hue: keras.layers.RandomHue cannot augment 1-channel images "
        "(data.channels): input must have 3 channels but input only has 1 channels."
    )
    loader.load(None, ["data.channels=3", "augment.layers=[{random_hue: {factor: 0.2}}]"])


def test_augment_layers_take_any_keras_kwarg_and_keras_defaults():
    cfg = loader.load(
        None,
        [
            "augment.layers=[{random_flip: {}}, {random_rotation: {factor: 0.2, fill_mode: "
            "constant, fill_value: 0.5}}, {random_brightness: {factor: 0.1}}]"
        ],
    )
    assert cfg.augment.layers == [
        {"random_flip": {}},
        {"random_rotation": {"factor": 0.2, "fill_mode": "constant", "fill_value": 0.5}},
        # Images are float in [0, 1], not Keras' default 0-255.
        {"random_brightness": {"factor": 0.1, "value_range": [0.0, 1.0]}},
    ]


# --- registries stay in step ---


def test_augment_layer_classes_match_augment_registry():
    assert set(schema.AUGMENT_LAYER_CLASSES) == set(augment.AUGMENT_LAYERS)
    for name, layer_class in augment.AUGMENT_LAYERS.items():
        assert layer_class.__name__ == schema.AUGMENT_LAYER_CLASSES[name]


def test_cnn_layer_specs_match_trainer_registry():
    assert set(schema.CNN_LAYER_SPECS) == set(cnn.CNN_LAYERS)


# --- ${ENV} substitution ---


def test_env_variable_is_substituted(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_TEST_NAME", "from-env")
    assert loader.load(write_yaml(tmp_path, "name: ${IMGCLF_TEST_NAME}\n")).name == "from-env"


def test_env_default_used_when_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGCLF_TEST_RUNS", raising=False)
    cfg = loader.load(write_yaml(tmp_path, "train: {runs_dir: '${IMGCLF_TEST_RUNS:-my/runs}'}\n"))
    assert cfg.train.runs_dir == "my/runs"


def test_env_value_beats_default(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_TEST_RUNS", "/scratch/runs")
    cfg = loader.load(write_yaml(tmp_path, "train: {runs_dir: '${IMGCLF_TEST_RUNS:-my/runs}'}\n"))
    assert cfg.train.runs_dir == "/scratch/runs"


def test_env_reference_inside_string_is_substituted(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_TEST_ROOT", "/data")
    monkeypatch.delenv("IMGCLF_TEST_SET", raising=False)
    text = "data: {source: '${IMGCLF_TEST_ROOT}/images/${IMGCLF_TEST_SET:-v1}'}\n"
    assert loader.load(write_yaml(tmp_path, text)).data.source == "/data/images/v1"


def test_whole_value_env_default_takes_yaml_type(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGCLF_TEST_EPOCHS", raising=False)
    path = write_yaml(tmp_path, "train: {epochs: '${IMGCLF_TEST_EPOCHS:-7}'}\n")
    assert loader.interpolate_env(loader.read_yaml(path)) == {"train": {"epochs": 7}}
    assert loader.load(path).train.epochs == 7


def test_whole_value_env_variable_takes_yaml_type(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_TEST_SIZE", "[28, 24]")
    monkeypatch.setenv("IMGCLF_TEST_ES", "false")
    text = (
        "data:\n  image_size: ${IMGCLF_TEST_SIZE}\n"
        "train:\n  early_stopping:\n    enabled: ${IMGCLF_TEST_ES}\n"
    )
    cfg = loader.load(write_yaml(tmp_path, text))
    assert cfg.data.image_size == (28, 24)
    assert cfg.train.early_stopping.enabled is False


def test_env_inside_string_stays_a_string(monkeypatch):
    monkeypatch.setenv("IMGCLF_TEST_N", "2")
    assert loader.interpolate_env({"name": "run-${IMGCLF_TEST_N}"}) == {"name": "run-2"}


def test_missing_env_variable_names_variable_and_key_path(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGCLF_TEST_MISSING", raising=False)
    message = load_error(path=write_yaml(tmp_path, "train: {runs_dir: '${IMGCLF_TEST_MISSING}'}\n"))
    assert message.startswith("train.runs_dir: environment variable IMGCLF_TEST_MISSING is not set")
    assert "${IMGCLF_TEST_MISSING:-default}" in message


def test_missing_env_variable_in_list_names_index(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGCLF_TEST_MISSING", raising=False)
    text = "data: {beam_options: ['--direct_num_workers=2', '${IMGCLF_TEST_MISSING}']}\n"
    assert load_error(path=write_yaml(tmp_path, text)).startswith("data.beam_options[1]:")


# --- --set overrides ---


@pytest.mark.parametrize(
    ("override", "get", "expected"),
    [
        ("train.epochs=5", lambda c: c.train.epochs, 5),
        ("optimizer.learning_rate=1e-4", lambda c: c.optimizer.learning_rate, 1e-4),
        ("data.image_size=[28, 24]", lambda c: c.data.image_size, (28, 24)),
        ("model.weights=null", lambda c: c.model.weights, None),
        ("model.weights=/tmp/w.weights.h5", lambda c: c.model.weights, "/tmp/w.weights.h5"),
        ("train.early_stopping.enabled=false", lambda c: c.train.early_stopping.enabled, False),
        (
            "data.beam_options=[--direct_num_workers=2]",
            lambda c: c.data.beam_options,
            ["--direct_num_workers=2"],
        ),
        ("name=my experiment", lambda c: c.name, "my experiment"),
    ],
)
def test_set_parses_value_as_yaml(override, get, expected):
    assert get(loader.load(None, [override])) == expected


def test_set_keeps_sibling_yaml_values(tmp_path):
    path = write_yaml(tmp_path, "train: {epochs: 3, runs_dir: elsewhere}\n")
    cfg = loader.load(path, ["train.epochs=4"])
    assert (cfg.train.epochs, cfg.train.runs_dir) == (4, "elsewhere")


def test_set_wins_over_yaml_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_TEST_EPOCHS", "3")
    path = write_yaml(tmp_path, "train: {epochs: '${IMGCLF_TEST_EPOCHS:-7}'}\n")
    assert loader.load(path).train.epochs == 3
    assert loader.load(path, ["train.epochs=9"]).train.epochs == 9


def test_last_set_wins():
    assert loader.load(None, ["train.epochs=2", "train.epochs=6"]).train.epochs == 6


@pytest.mark.parametrize("override", ["train.epochs", "=5", " =5"])
def test_set_without_key_and_value_is_rejected(override):
    assert "--set expects key.path=value" in load_error(override)


def test_set_below_a_yaml_value_is_rejected(tmp_path):
    path = write_yaml(tmp_path, "train: {epochs: 3}\n")
    message = load_error("train.epochs.max=5", path=path)
    assert "--set train.epochs.max: train.epochs is a value, not a section" in message


# --- round trip and CLI ---


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_saved_config_loads_back_identical(path, tmp_path):
    cfg = loader.load(path, ["train.epochs=3"])
    loader.save(cfg, tmp_path / "resolved.yaml")
    assert loader.load(tmp_path / "resolved.yaml") == cfg


def test_cli_config_show_round_trips(monkeypatch):
    monkeypatch.delenv("DIGITS_DIR", raising=False)
    expected = loader.load(DIGITS_YAML, ["train.epochs=3", "data.image_size=[28, 28]"])
    result = run_cli(
        "config",
        "show",
        "--config",
        str(DIGITS_YAML),
        "--set",
        "train.epochs=3",
        "--set",
        "data.image_size=[28, 28]",
    )
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["train"]["epochs"] == 3
    assert loader.validate(shown) == expected


def test_default_cnn_has_layer_defaults_filled_in():
    assert (
        loader.load().model.cnn
        == loader.load(None, ["model.cnn=" + str(schema.DEFAULT_CNN)]).model.cnn
    )


def test_cli_config_show_without_file_prints_defaults():
    result = run_cli("config", "show")
    assert result.returncode == 0, result.stderr
    assert loader.validate(yaml.safe_load(result.stdout)) == schema.Config()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--set", "data.batch_size=-4"],
            "data.batch_size: Input should be greater than 0 (received -4)",
        ),
        (["--set", "train.epocs=3"], "did you mean train.epochs?"),
        (["--config", "does/not/exist.yaml"], "config file not found"),
    ],
)
def test_cli_bad_config_exits_2_with_one_error_line(args, expected):
    result = run_cli("config", "show", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
