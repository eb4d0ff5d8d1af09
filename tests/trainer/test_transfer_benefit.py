"""Transfer learning pays: a backbone we pretrain on one dataset and save to a weights file,
fine-tuned on another dataset, beats the same model trained from scratch with the same budget."""

import shutil

import pytest

from configs import loader
from core import run_layout
from trainer import task
from transforms.beam import ingest

pytestmark = [pytest.mark.slow, pytest.mark.beam]

DIGITS_CONFIG = "configs/digits.yaml"
PRETRAIN_CLASSES = ["0", "1", "2", "3", "4"]
TARGET_CLASSES = ["5", "6", "7", "8", "9"]
TARGET_IMAGES_PER_CLASS = 50  # few: 10 per class to train on, 30 to test on
BUDGET_EPOCHS = 6
# digits.yaml's CNN with a BatchNorm last, so the features a new head starts from are scaled
# alike (a head on unnormalised ReLU features needs many more steps to converge).
CNN = (
    "model.cnn=[{conv: {filters: 32}}, {batch_norm: {momentum: 0.9}}, {conv: {filters: 32}}, "
    "{max_pool: {}}, {conv: {filters: 64}}, {batch_norm: {momentum: 0.9}}, "
    "{conv: {filters: 64}}, {batch_norm: {momentum: 0.9}}, {max_pool: {}}]"
)


def subset(digits_dir, out, classes, per_class=None):
    for name in classes:
        files = sorted((digits_dir / name).iterdir())[:per_class]
        (out / name).mkdir(parents=True)
        for file in files:
            shutil.copy(file, out / name / file.name)
    return out


def overrides(root, source, name, *extra):
    return [
        f"data.source={source}",
        f"data.output_dir={root / name / 'data'}",
        "data.image_size=[16, 16]",
        "data.batch_size=8",
        "optimizer.warmup_epochs=0",
        "optimizer.schedule=constant",
        "optimizer.learning_rate=0.01",
        "augment.layers=[]",
        CNN,
        f"train.runs_dir={root / name / 'runs'}",
        f"train.run_id={name}",
        "train.early_stopping.enabled=false",
        *extra,
    ]


def train(root, source, name, *extra):
    cfg = loader.load(DIGITS_CONFIG, overrides(root, source, name, *extra))
    ingest.run(cfg.data)
    return task.run(cfg, score_test=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory, digits_dir):
    root = tmp_path_factory.mktemp("transfer")
    pretrain_source = subset(digits_dir, root / "pretrain_images", PRETRAIN_CLASSES)
    target_source = subset(
        digits_dir, root / "target_images", TARGET_CLASSES, TARGET_IMAGES_PER_CLASS
    )
    pretrained = train(root, pretrain_source, "pretrain", "train.epochs=5")
    weights = pretrained.run_dir / run_layout.BACKBONE_WEIGHTS
    split = "data.split={train: 0.2, val: 0.2, test: 0.6}"
    budget = f"train.epochs={BUDGET_EPOCHS}"
    fine_tuned = train(
        root,
        target_source,
        "fine_tuned",
        split,
        budget,
        f"model.weights={weights}",
        "train.fine_tune.head_epochs=3",
        "train.fine_tune.learning_rate_factor=0.1",
    )
    scratch = train(root, target_source, "scratch", split, budget)
    return pretrained, fine_tuned, scratch


def test_the_pretraining_run_learned_its_own_classes(results):
    pretrained, _, _ = results
    assert pretrained.metrics["accuracy"] > 0.9
    assert (pretrained.run_dir / run_layout.BACKBONE_WEIGHTS).is_file()


def test_fine_tuning_a_pretrained_backbone_beats_training_from_scratch(results):
    _, fine_tuned, scratch = results
    assert fine_tuned.metrics["num_examples"] == scratch.metrics["num_examples"] >= 140
    assert fine_tuned.training["epochs_run"] == scratch.training["epochs_run"] == BUDGET_EPOCHS
    # Measured: 0.54 fine-tuned vs 0.26 from scratch (chance is 0.2), which overfits its 50
    # training images within two epochs.
    assert fine_tuned.metrics["accuracy"] >= scratch.metrics["accuracy"] + 0.15, (
        fine_tuned.metrics["accuracy"],
        scratch.metrics["accuracy"],
    )
    assert fine_tuned.metrics["accuracy"] > 0.45
