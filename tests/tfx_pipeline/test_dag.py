"""The DAG's declarations: which config keys enter each component's cache key, and which
components a config turns on."""

import pytest

from configs import loader
from tfx_pipeline import dag


def test_training_keys_do_not_change_example_gen_config_but_change_the_trainer():
    by_name = {c.name: c for c in dag.build_components()}
    base = loader.load(None, [])
    changed = loader.load(None, ["train.epochs=3", "data.batch_size=8", "data.image_size=[9, 9]"])
    example_gen, trainer = by_name["ExampleGen"], by_name["Trainer"]
    assert example_gen.config_subset(base) == example_gen.config_subset(changed)
    assert trainer.config_subset(base) != trainer.config_subset(changed)
    assert "source" not in trainer.config_subset(base)["data"]
    assert by_name["ExampleGen"].config_subset(loader.load(None, ["data.source=x"])) != (
        example_gen.config_subset(base)
    )


@pytest.mark.parametrize("override", ["data.resize=stretch", "data.crop_fraction=0.875"])
def test_resize_settings_retrain_without_reingesting(override):
    """They change the pixels training and the export see, not what ingest stores."""
    by_name = {c.name: c for c in dag.build_components()}
    base, changed = loader.load(None, []), loader.load(None, [override])
    assert by_name["ExampleGen"].config_subset(base) == by_name["ExampleGen"].config_subset(changed)
    assert by_name["Trainer"].config_subset(base) != by_name["Trainer"].config_subset(changed)


def test_the_bulk_inferrer_is_off_without_a_source(tmp_path):
    [component] = [c for c in dag.build_components() if c.name == "BulkInferrer"]
    assert not component.enabled(loader.load(None, []))
    assert component.enabled(loader.load(None, [f"pipeline.bulk_inference.source={tmp_path}"]))
