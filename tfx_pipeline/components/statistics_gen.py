"""StatisticsGen: a dataset version's statistics, as ingest wrote them in its dataset.json."""

from pathlib import Path

from tfx_pipeline import artifact_types, component


def run(ctx: component.Context) -> dict:
    from transforms import dataset_info

    examples = ctx.inputs["examples"]
    info = dataset_info.load(examples.uri)
    stats = artifact_types.artifact(
        artifact_types.STATISTICS,
        Path(examples.uri) / dataset_info.DATASET_JSON,
        version=info["version"],
        num_classes=info["num_classes"],
        class_counts=info["class_counts"],
        imbalance_ratio=info["imbalance_ratio"],
        channel_mean=info["stats"]["channel_mean"],
    )
    return {"statistics": stats}
