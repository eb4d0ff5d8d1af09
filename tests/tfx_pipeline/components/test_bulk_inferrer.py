"""The BulkInferrer in a pipeline run: it classifies after a push, is cached on a rerun, re-runs
when the images change, and skips when nothing was pushed."""

import pytest

from registry import store as registry_store
from tests.serving import test_bulk_inference
from tests.tfx_pipeline.test_pipeline import chance_overrides, run, statuses, tiny_overrides
from tfx_pipeline import metadata

images = test_bulk_inference.images  # five PNGs, a nested one and a broken one
read_jsonl = test_bulk_inference.read_jsonl


@pytest.mark.slow
@pytest.mark.beam
@pytest.mark.serving
def test_the_bulk_inferrer_classifies_after_a_push_and_is_cached_on_a_rerun(
    tmp_path, make_image, make_tree, images
):
    overrides = [
        *tiny_overrides(tmp_path, make_tree),
        "pipeline.infra_validation.enabled=false",
        f"pipeline.bulk_inference.source={images}",
        f"pipeline.bulk_inference.output={tmp_path / 'predictions'}",
    ]
    first = run(overrides)
    assert statuses(first)["BulkInferrer"] == metadata.COMPLETED
    predictions = first.outputs["BulkInferrer.predictions"]
    assert predictions.properties["images"] == 7 and predictions.properties["errors"] == 1
    [pushed] = registry_store.list_versions(tmp_path / "store", "tiny")
    assert predictions.properties["version"] == pushed.version
    rows = read_jsonl(tmp_path / "predictions")
    assert len(rows) == 7 and {r["label"] for r in rows if not r.get("error")} <= {"cat", "dog"}

    again = run(overrides)
    assert statuses(again)["BulkInferrer"] == metadata.CACHED

    (images / "6.png").write_bytes(make_image(6, size=(8, 8)))
    changed = run(overrides)
    assert statuses(changed)["Pusher"] == metadata.CACHED
    assert statuses(changed)["BulkInferrer"] == metadata.COMPLETED
    assert len(read_jsonl(tmp_path / "predictions")) == 8


@pytest.mark.slow
@pytest.mark.beam
def test_the_bulk_inferrer_skips_when_nothing_was_pushed(tmp_path, make_image, make_tree, images):
    overrides = [
        *chance_overrides(tmp_path, make_image, make_tree),
        "pipeline.infra_validation.enabled=false",
        f"pipeline.bulk_inference.source={images}",
    ]
    summary = run(overrides)
    assert statuses(summary)["BulkInferrer"] == metadata.COMPLETED
    predictions = summary.outputs["BulkInferrer.predictions"]
    assert predictions.uri is None and "nothing was pushed" in predictions.properties["note"]
