"""trainer.task: a damaged dataset stops training with an error that says what to do."""

import pytest

from configs import loader
from tests.conftest import tiny_run_overrides
from trainer import task
from transforms.beam import ingest

pytestmark = pytest.mark.beam


@pytest.mark.slow
def test_a_corrupt_train_shard_is_a_training_error(tmp_path, make_image, make_tree):
    spec = {
        name: {f"{i}.png": make_image(10 * c + i, size=(32, 32)) for i in range(4)}
        for c, name in enumerate(["cat", "dog"])
    }
    source = make_tree(tmp_path / "tree", spec)
    cfg = loader.load(None, tiny_run_overrides(source, tmp_path))
    result = ingest.run(cfg.data)
    [shard] = (result.path / name for name in result.dataset["splits"]["train"]["shards"])
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 32] = bytes(b ^ 0xFF for b in data[middle : middle + 32])
    shard.write_bytes(bytes(data))

    with pytest.raises(task.TrainingError) as raised:
        task.run(cfg)

    message = str(raised.value)
    assert str(result.path) in message
    assert "re-run `imgclf ingest`" in message


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, make_image, make_tree):
    """3 cat and 9 dog images, ingested: an imbalanced split for class weights."""
    root = tmp_path_factory.mktemp("small")
    spec = {
        "cat": {f"{i}.png": make_image(100 + i, size=(16, 16)) for i in range(3)},
        "dog": {f"{i}.png": make_image(200 + i, size=(16, 16)) for i in range(9)},
    }
    overrides = tiny_run_overrides(make_tree(root / "tree", spec), root)
    ingest.run(loader.load(None, overrides).data)
    return root, overrides


def test_dry_run_builds_the_model_and_writes_nothing(small_dataset, capsys):
    root, overrides = small_dataset
    assert task.run(loader.load(None, overrides), dry_run=True) is None
    output = capsys.readouterr().out
    assert "train: dry run OK" in output and "Total params" in output
    assert "model:\n  backbone: cnn" in output  # the resolved config is printed
    assert not (root / "runs").exists()


def test_dry_run_still_validates_the_batch_split(small_dataset):
    _, overrides = small_dataset
    cfg = loader.load(None, [*overrides, "train.gradient_accumulation_steps=4"])
    with pytest.raises(task.TrainingError, match=r"data.batch_size \(2\) must be divisible"):
        task.run(cfg, dry_run=True)


def test_auto_class_weights_balance_the_training_counts():
    weights = task.class_weights("auto", ["cat", "dog"], {"cat": 2, "dog": 6})
    assert weights == pytest.approx([2.0, 2 / 3])
    assert weights[0] * 2 + weights[1] * 6 == pytest.approx(8)  # the mean weight stays 1


def test_explicit_class_weights_default_to_one_and_reject_unknown_classes():
    assert task.class_weights({"dog": 0.5}, ["cat", "dog"], {}) == [1.0, 0.5]
    assert task.class_weights(None, ["cat", "dog"], {}) is None
    with pytest.raises(task.TrainingError, match="does not have: bird"):
        task.class_weights({"bird": 2.0}, ["cat", "dog"], {})
