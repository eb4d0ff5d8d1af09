"""trainer.task: a damaged dataset stops training with an error that says what to do."""

import pytest

from configs import loader
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
    cfg = loader.load(
        None,
        [
            f"data.source={source}",
            f"data.output_dir={tmp_path / 'data'}",
            "data.beam_direct_mode=in_memory",
            "data.split={train: 0.5, val: 0.25, test: 0.25}",
            "data.image_size=[8, 8]",
            "data.batch_size=2",
            "model.cnn=[{conv: {filters: 2}}]",
            "train.epochs=1",
            f"train.runs_dir={tmp_path / 'runs'}",
        ],
    )
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
