"""StatisticsGen: a dataset version's statistics, as ingest wrote them in its dataset.json,
copied into the execution's folder (the version may be in a bucket) for ExampleValidator."""

from core import atomic_write
from tfx_pipeline import artifact_types, component


def run(ctx: component.Context) -> dict:
    from transforms import dataset_info, dataset_store

    examples = ctx.inputs["examples"]
    info = dataset_info.load(dataset_store.local_copy(examples.uri, ctx.cfg.data))
    path = ctx.output_dir("StatisticsGen") / dataset_info.DATASET_JSON
    stats = artifact_types.artifact(
        artifact_types.STATISTICS,
        atomic_write.write_json(path, info),
        version=info["version"],
        num_classes=info["num_classes"],
        class_counts=info["class_counts"],
        imbalance_ratio=info["imbalance_ratio"],
        channel_mean=info["stats"]["channel_mean"],
    )
    return {"statistics": stats}
