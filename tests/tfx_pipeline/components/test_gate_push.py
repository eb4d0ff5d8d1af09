"""The Evaluator and Pusher components on real SavedModels under the default gate: a
chance-level model is refused and never reaches the registry; a good one is pushed."""

import json
from pathlib import Path

import pytest

from configs import loader
from registry import store as registry_store
from tests.evaluator import tiny_models
from tfx_pipeline import artifact_types, component, metadata
from tfx_pipeline.components import evaluator, pusher
from tracking import records

pytestmark = pytest.mark.slow  # exports and loads real SavedModels


def make_run(root: Path, threshold: float) -> Path:
    """runs/<id>/ with export/1 (a tiny_models SavedModel), config.yaml and run.json."""
    run_dir = root / "runs" / f"run-{threshold}"
    tiny_models.export_threshold_model(
        run_dir / "export", threshold, metadata={"run_id": run_dir.name}
    )
    (run_dir / "config.yaml").write_text("name: greys\n")
    records.start(run_dir, {}, "v-greys", None, {})
    return run_dir


def context(cfg, inputs: dict, root: Path) -> component.Context:
    return component.Context(cfg, inputs, None, root / "artifacts", 1)


@pytest.mark.parametrize(
    "threshold, pushed",
    [(tiny_models.ALWAYS_DARK, False), (tiny_models.PERFECT, True)],
    ids=["chance-level", "perfect"],
)
def test_only_a_model_that_beats_the_majority_class_is_pushed(tmp_path, threshold, pushed):
    cfg = loader.load(
        None,
        [
            f"registry.store={tmp_path / 'store'}",
            "serving.model_name=greys",
            "pipeline.infra_validation.enabled=false",
        ],
    )
    run_dir = make_run(tmp_path, threshold)
    model = metadata.Artifact(
        artifact_types.MODEL,
        str(run_dir / "export" / "1"),
        {"run_id": run_dir.name, "run_dir": str(run_dir), "dataset_version": "v-greys"},
    )
    greys = tiny_models.write_greys(tmp_path / "greys")
    examples = metadata.Artifact(artifact_types.EXAMPLES, str(greys))
    inputs = {"model": model, "examples": examples}
    baseline = evaluator.resolve_baseline(cfg, None, inputs)
    assert baseline == {"baseline": None}  # auto, and nothing in production yet

    evaluated = evaluator.run(context(cfg, {**inputs, **baseline}, tmp_path))
    blessing = evaluated["blessing"]
    assert blessing.properties["blessed"] is pushed
    assert json.loads((run_dir / "blessing.json").read_text())["blessed"] is pushed
    outcome = pusher.run(
        context(cfg, {"model": model, "blessing": blessing, "infra_blessing": None}, tmp_path)
    )["pushed_model"]

    assert outcome.properties["pushed"] is pushed
    if pushed:
        [version] = registry_store.list_versions(tmp_path / "store", "greys")
        assert version.labels == (registry_store.PRODUCTION,) and version.blessed
        return
    reason = outcome.properties["reason"]
    assert reason.startswith("not blessed (accuracy 0.5000 does not beat always answering 'dark'")
    assert outcome.uri is None and not (tmp_path / "store").exists()
