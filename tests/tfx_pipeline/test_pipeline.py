"""The component pipeline: records, caching, re-runs from a changed key, failures, the gate."""

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cli
from configs import loader
from registry import store as registry_store
from tests.conftest import encode, tiny_class_tree, tiny_run_overrides
from tfx_pipeline import component, metadata, pipeline, runner

ALL = ["ExampleGen", "StatisticsGen", "ExampleValidator", "Trainer", "Evaluator"]
ALL += ["InfraValidator", "Pusher"]
AFTER_TRAINING = ["Trainer", "Evaluator", "InfraValidator", "Pusher"]
# No pipeline.tune nor pipeline.bulk_inference.source here: Tuner and BulkInferrer are disabled.
OFF = {"Tuner": metadata.SKIPPED, "BulkInferrer": metadata.SKIPPED}


def learnable_tree(root: Path, make_tree) -> Path:
    """root/tree/{cat,dog}/ with 24 16x16 PNGs each: dark cats and light dogs under noise."""
    spec = {}
    for name, level in (("cat", 50), ("dog", 205)):
        rng = np.random.default_rng(level)
        pixels = np.clip(level + rng.integers(-40, 41, (24, 16, 16, 3)), 0, 255).astype(np.uint8)
        spec[name] = {f"{i}.png": encode(Image.fromarray(p), "PNG") for i, p in enumerate(pixels)}
    return make_tree(root / "tree", spec)


def tiny_overrides(root, make_tree) -> list[str]:
    """A 2-class dataset of 8x8 images, a 3-epoch run and every output under `root`.

    The gate refuses a chance-level model, so the data and the model are ones it learns (all 12
    test images right, p = 0.0002, with each of seeds 0-9; one epoch got 9 of 12 with seed 0,
    p = 0.07): the Pusher gets a model to push. A linear conv and no dropout, since 2 ReLU
    filters die and dropout slows 12 steps an epoch too much."""
    return [
        *tiny_run_overrides(learnable_tree(root, make_tree), root),
        "train.epochs=3",
        "model.cnn=[{conv: {filters: 2, activation: linear}}]",
        "model.head.dropout=0",
        "optimizer.schedule=constant",
        "optimizer.learning_rate=0.05",
        *pipeline_overrides(root),
    ]


def chance_overrides(root, make_image, make_tree) -> list[str]:
    """Noise images with 2 test images: whatever it learns, no model can be shown to beat
    always answering one class (p >= 0.25), so the default gate refuses every one."""
    tree = tiny_class_tree(root, make_image, make_tree)
    return [*tiny_run_overrides(tree, root), *pipeline_overrides(root)]


def pipeline_overrides(root) -> list[str]:
    return [
        f"registry.store={root / 'store'}",
        "serving.model_name=tiny",
        f"pipeline.metadata={root / 'pipeline' / 'metadata.sqlite'}",
    ]


def run(overrides: list[str], no_cache: bool = False) -> runner.Summary:
    return pipeline.run_pipeline(loader.load(None, overrides), no_cache=no_cache)


def statuses(summary: runner.Summary) -> dict[str, str]:
    return {e.component: e.status for e in summary.executions}


def count(db_path, table: str) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.mark.slow
@pytest.mark.beam
@pytest.mark.serving
def test_runs_are_recorded_cached_and_rerun_from_the_changed_key(tmp_path, make_tree, capsys):
    overrides = tiny_overrides(tmp_path, make_tree)
    db = tmp_path / "pipeline" / "metadata.sqlite"

    first = run(overrides)
    assert statuses(first) == dict.fromkeys(ALL, metadata.COMPLETED) | OFF
    # Every component's outputs (one each, two for the Evaluator) plus the external source.
    assert count(db, "artifacts") == len(ALL) + 2
    assert count(db, "events") > count(db, "artifacts")
    [pushed] = registry_store.list_versions(tmp_path / "store", "tiny")
    assert pushed.labels == ("production",) and pushed.dataset_version is not None

    started = time.time()
    again = run(overrides)
    assert time.time() - started < 5
    assert statuses(again) == dict.fromkeys(ALL, metadata.CACHED) | OFF
    assert len(registry_store.list_versions(tmp_path / "store", "tiny")) == 1

    # A changed latency budget re-runs the InfraValidator, so the Pusher runs again for the same
    # model: it labels the version it pushed before instead of copying the export again.
    budget = run([*overrides, "pipeline.infra_validation.latency_budget_ms=2000"])
    assert statuses(budget)["InfraValidator"] == statuses(budget)["Pusher"] == "completed"
    [again_pushed] = registry_store.list_versions(tmp_path / "store", "tiny")
    assert (again_pushed.version, again_pushed.labels) == (1, ("production",))

    longer = run([*overrides, "train.epochs=4"])
    expected = dict.fromkeys(ALL, metadata.CACHED) | dict.fromkeys(AFTER_TRAINING, "completed")
    expected |= OFF
    assert statuses(longer) == expected
    assert longer.outputs["Trainer.model"].properties["dataset_version"] == pushed.dataset_version

    assert cli.main(["pipeline", "run", "--no-cache", *sets(overrides, "train.epochs=4")]) == 0
    with metadata.Store(db) as store:
        forced = store.executions(store.run()["id"])
    forced_statuses = {e.component: e.status for e in forced}
    assert forced_statuses == dict.fromkeys(ALL, metadata.COMPLETED) | OFF

    capsys.readouterr()
    assert cli.main(["pipeline", "lineage", "tiny@1", "--metadata", str(db)]) == 0
    told = capsys.readouterr().out
    assert f"training run:    {pushed.run_id}" in told
    assert f"pipeline run:    {first.run_id} (config hash " in told
    assert f"dataset version: {pushed.dataset_version}" in told
    assert f"source:          {tmp_path / 'tree'}" in told

    assert cli.main(["pipeline", "status", "--metadata", str(db)]) == 0
    told = capsys.readouterr().out
    assert "completed" in told.splitlines()[0]
    assert all(name in told for name in ALL) and "-> pushed_model: PushedModel" in told


def sets(overrides: list[str], *more: str) -> list[str]:
    return [arg for item in [*overrides, *more] for arg in ("--set", item)]


@pytest.mark.slow
@pytest.mark.beam
def test_a_failed_component_stops_downstream_and_the_next_run_resumes_from_it(tmp_path, make_tree):
    overrides = [
        *tiny_overrides(tmp_path, make_tree),
        "pipeline.infra_validation.enabled=false",
        # Compared with production, which does not exist before the first push: the first
        # model is judged on absolute checks, blessed and pushed.
        "evaluation.gate.baseline=registry:tiny@production",
        "evaluation.gate.max_accuracy_drop=0.5",
    ]
    first = run(overrides)
    assert first.outputs["Pusher.pushed_model"].properties["pushed"] is True
    examples = first.outputs["ExampleGen.examples"]
    # A corrupt train shard: the dataset is still there, reading it fails mid-training.
    [shard_name] = _train_shards(examples.uri)
    shard = tmp_path / "data" / examples.properties["version"] / shard_name
    intact = shard.read_bytes()
    damaged = bytearray(intact)
    middle = len(damaged) // 2
    damaged[middle : middle + 32] = bytes(b ^ 0xFF for b in damaged[middle : middle + 32])
    shard.write_bytes(bytes(damaged))

    with pytest.raises(runner.PipelineFailed, match="Trainer failed .*resumes from Trainer"):
        run([*overrides, "train.epochs=4"])
    with metadata.Store(tmp_path / "pipeline" / "metadata.sqlite") as store:
        failed = store.run()
        executions = {e.component: e for e in store.executions(failed["id"])}
    assert failed["status"] == metadata.FAILED
    assert executions["ExampleGen"].status == metadata.CACHED
    assert executions["Trainer"].status == metadata.FAILED
    assert "TrainingError" in executions["Trainer"].error
    assert executions["Evaluator"].status == executions["Pusher"].status == metadata.SKIPPED
    assert executions["Pusher"].error == "Trainer failed"

    shard.write_bytes(intact)
    resumed = run([*overrides, "train.epochs=4"])
    assert statuses(resumed)["ExampleGen"] == metadata.CACHED
    assert statuses(resumed)["Trainer"] == statuses(resumed)["Pusher"] == metadata.COMPLETED


def _train_shards(version_dir: str) -> list[str]:
    from transforms import dataset_info

    return dataset_info.load(version_dir)["splits"]["train"]["shards"]


@pytest.mark.slow
@pytest.mark.beam
def test_a_chance_level_model_is_not_pushed(tmp_path, make_image, make_tree):
    # No gate thresholds set: the check every model faces refuses it.
    overrides = [
        *chance_overrides(tmp_path, make_image, make_tree),
        "pipeline.infra_validation.enabled=false",
    ]
    summary = run(overrides)
    assert statuses(summary)["Pusher"] == metadata.COMPLETED
    pushed = summary.outputs["Pusher.pushed_model"]
    assert pushed.properties["pushed"] is False and pushed.uri is None
    assert pushed.properties["reason"].startswith("not blessed (accuracy ")
    assert "does not beat always answering" in pushed.properties["reason"]
    assert not (tmp_path / "store").exists() or not registry_store.list_versions(tmp_path / "store")


# The runner alone, on components that are plain Python functions: fast.
def counting_component(name, calls, inputs=None, fail=None, keys=("seed",)):
    def run_it(ctx: component.Context) -> dict:
        calls.append(name)
        if fail and fail[0]:
            raise RuntimeError(f"{name} broke")
        return {"out": metadata.Artifact("Thing", None, {"by": name, "seed": ctx.cfg.seed})}

    return component.Component(
        name, run_it, inputs=inputs or {}, outputs={"out": "Thing"}, config_keys=keys
    )


def test_the_runner_orders_caches_and_resumes_after_a_failure(tmp_path):
    cfg = loader.load(None, [f"pipeline.metadata={tmp_path / 'm.sqlite'}"])
    calls, fail = [], [True]
    components = [
        counting_component("C", calls, {"a": "B.out"}),
        counting_component("B", calls, {"a": "A.out"}, fail=fail),
        counting_component("A", calls, keys=("data.source",)),
    ]
    with pytest.raises(runner.PipelineFailed, match="B failed .*RuntimeError: B broke"):
        runner.run(cfg, components)
    assert calls == ["A", "B"]
    fail[0] = False
    summary = runner.run(cfg, components)
    assert calls == ["A", "B", "B", "C"] and statuses(summary)["A"] == metadata.CACHED
    # A key A does not read leaves it cached; B and C read it and run again.
    runner.run(cfg.model_copy(update={"seed": 7}), components)
    assert calls[4:] == ["B", "C"]
    runner.run(cfg, components, no_cache=True)
    assert calls[6:] == ["A", "B", "C"]


def test_the_runner_rejects_cycles_and_unknown_inputs():
    calls = []
    with pytest.raises(ValueError, match="cycle"):
        runner.topological_order(
            [
                counting_component("A", calls, {"x": "B.out"}),
                counting_component("B", calls, {"x": "A.out"}),
            ]
        )
    with pytest.raises(ValueError, match="no component produces"):
        runner.topological_order([counting_component("A", calls, {"x": "Z.out"})])
