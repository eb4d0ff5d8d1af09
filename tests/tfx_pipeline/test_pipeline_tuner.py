"""The pipeline's optional Tuner: a search on the ingested version, its best config trained."""

import pytest
import yaml

from tests.tfx_pipeline.test_pipeline import ALL, run, statuses, tiny_overrides
from tfx_pipeline import metadata
from tracking import records

LEARNING_RATES = [0.01, 0.1]


@pytest.mark.slow
@pytest.mark.beam
@pytest.mark.serving
def test_the_trainer_trains_the_tuners_best_config_and_a_rerun_is_cached(tmp_path, make_tree):
    overrides = [
        *tiny_overrides(tmp_path, make_tree),
        "pipeline.tune=true",
        "tuning.name=pipe",
        "tuning.algorithm=random",
        "tuning.max_trials=2",
        "tuning.seed=3",
        f"tuning.space={{optimizer.learning_rate: {{choice: {LEARNING_RATES}}}}}",
    ]
    first = run(overrides)
    assert statuses(first) == dict.fromkeys([*ALL, "Tuner"], metadata.COMPLETED) | {
        "BulkInferrer": metadata.SKIPPED
    }
    hyperparameters = first.outputs["Tuner.hyperparameters"]
    examples = first.outputs["ExampleGen.examples"]
    props = hyperparameters.properties
    assert hyperparameters.type == "HyperParameters"
    assert props["dataset_version"] == examples.properties["version"]
    assert props["search_directory"] == str(tmp_path / "runs" / "tuning" / "pipe")
    assert props["objective"] == "val_accuracy" and props["objective_value"] is not None
    best_rate = props["values"]["optimizer.learning_rate"]
    assert best_rate in LEARNING_RATES

    # The search trained on exactly the pipeline's dataset version.
    search_best = yaml.safe_load((tmp_path / "runs" / "tuning" / "pipe" / "best.yaml").read_text())
    assert search_best["data"]["version"] == examples.properties["version"]
    assert yaml.safe_load(open(hyperparameters.uri).read()) == search_best
    trials = sorted((tmp_path / "runs").glob("pipe-trial-*"))
    assert len(trials) == 2
    assert all(records.read(t)["dataset_version"] == examples.properties["version"] for t in trials)

    # The Trainer's run trained the best trial's value, in the pipeline's own runs_dir.
    model = first.outputs["Trainer.model"]
    trained = records.read(model.properties["run_dir"])["config"]
    assert trained["optimizer"]["learning_rate"] == best_rate
    assert trained["train"]["runs_dir"] == str(tmp_path / "runs")
    assert trained["pipeline"]["tune"] is True
    assert model.properties["dataset_version"] == examples.properties["version"]

    again = run(overrides)
    assert statuses(again) == dict.fromkeys([*ALL, "Tuner"], metadata.CACHED) | {
        "BulkInferrer": metadata.SKIPPED
    }
    assert again.outputs["Tuner.hyperparameters"].id == hyperparameters.id
