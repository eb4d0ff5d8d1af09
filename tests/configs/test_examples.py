"""configs/examples: one loadable, buildable transfer-learning config per backbone family.
(configs/digits_tune.yaml, the tuning example, is checked in tests/trainer/test_tuning_space.py.)"""

from pathlib import Path

import keras
import pytest

from configs import loader, schema
from trainer import models, transfer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "configs" / "examples"

# Every example file a user can copy, and the backbones its family may use.
FAMILIES = {
    "mobilenet.yaml": {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"},
    "efficientnet.yaml": {f"efficientnet_b{n}" for n in range(8)},
    "efficientnet_v2.yaml": {f"efficientnet_v2_{size}" for size in ("b0", "b1", "b2", "b3", "s")},
    "resnet.yaml": {"resnet50", "resnet101", "resnet152"},
    "resnet_v2.yaml": {"resnet50_v2", "resnet101_v2", "resnet152_v2"},
    "vgg.yaml": {"vgg16", "vgg19"},
    "densenet.yaml": {"densenet121"},
    "xception.yaml": {"xception"},
    "convnext.yaml": {"convnext_tiny"},
    "cnn.yaml": {"cnn"},
    "imbalanced.yaml": {"cnn"},  # focal loss and class-balanced weights
    "digits_fast.yaml": {"cnn"},  # the digits to 0.98 fast (bench/bench_training.py)
    "photos.yaml": {"cnn"},  # the real-photo benchmark's contenders (bench/bench_photos.py)
    "photos_mobilenet.yaml": {"mobilenet_v2"},
}
# Where each example expects its images by default: the bundled digits for digits_fast.yaml.
DEFAULT_SOURCES = {
    "digits_fast.yaml": "data/digits",
    "photos.yaml": "data/photos",
    "photos_mobilenet.yaml": "data/photos",
}
# Expected names as well as what is on disk: a missing file fails its own case, an extra one too.
EXAMPLE_NAMES = sorted(set(FAMILIES) | {path.name for path in EXAMPLES_DIR.glob("*.yaml")})
ENV_VARS = ("DATA_DIR", "DATA_OUT", "RUNS_DIR")


@pytest.fixture(autouse=True)
def unset_example_env(monkeypatch):
    """Examples resolve with their own defaults, whatever the developer's shell exports."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def load_example(name: str, *overrides: str) -> schema.Config:
    return loader.load(EXAMPLES_DIR / name, list(overrides))


def test_every_backbone_family_has_an_example():
    assert sorted(path.name for path in EXAMPLES_DIR.glob("*.yaml")) == sorted(FAMILIES)


def test_families_name_only_known_backbones():
    known = {"cnn", *schema.BACKBONE_NAMES}
    assert set().union(*FAMILIES.values()) <= known


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_loads_with_a_backbone_of_its_family(name):
    assert name in FAMILIES, f"{name}: add its backbone family to FAMILIES"
    cfg = load_example(name)
    assert cfg.model.backbone in FAMILIES[name]
    assert cfg.data.source == DEFAULT_SOURCES.get(name, "data/images")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_data_source_follows_data_dir(name, monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "my_images"))
    assert load_example(name).data.source == str(tmp_path / "my_images")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_pretrained_examples_use_imagenet_and_the_cnn_starts_from_scratch(name):
    cfg = load_example(name)
    if cfg.model.backbone == "cnn":
        assert cfg.model.weights is None
        assert not cfg.train.fine_tune.enabled
    else:
        assert cfg.model.weights == "imagenet"
        assert cfg.train.fine_tune.head_epochs > 0


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_model_builds_and_its_fine_tune_point_exists(name):
    backbone = load_example(name).model.backbone
    side = schema.BACKBONES[backbone].min_side if backbone in schema.BACKBONES else 32
    # Random init: the ImageNet files are not in a test machine's Keras cache.
    cfg = load_example(name, "model.weights=null", f"data.image_size=[{side},{side}]")
    keras.backend.clear_session()
    model = models.build_model(cfg.model, (side, side, cfg.data.channels), 5)
    assert model.output_shape == (None, 5)

    fine_tune = cfg.train.fine_tune
    phases = transfer.plan(cfg.train)
    if not fine_tune.enabled:
        assert [phase.name for phase in phases] == ["full"]
        return
    if fine_tune.head_epochs > 0:
        assert phases[0].name == "head"
    assert phases[-1].name == "fine_tune"

    extractor = model.get_layer(models.BACKBONE)
    first = transfer.first_unfrozen_layer(extractor, fine_tune)
    if fine_tune.unfreeze_from_layer:
        assert extractor.layers[first].name == fine_tune.unfreeze_from_layer
    # Phase 2 trains part of the backbone: some weights train and some stay frozen.
    transfer.trainable_setter(model, phases[-1], fine_tune)()
    assert 0 < len(extractor.trainable_weights) < len(extractor.weights)
