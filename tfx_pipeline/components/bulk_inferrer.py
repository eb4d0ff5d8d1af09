"""BulkInferrer (with pipeline.bulk_inference.source): every image of the source classified by
the model the Pusher pushed, as a Beam job (serving/bulk_inference.py)."""

from pathlib import Path

from configs import schema
from tfx_pipeline import artifact_types, component, external_sources


def resolve_images(cfg: schema.Config, store, inputs) -> dict:
    """The images are an outside input: new or changed files re-run the BulkInferrer."""
    return {
        "images": external_sources.external_source(cfg.pipeline.bulk_inference.source, cfg.data)
    }


def run(ctx: component.Context) -> dict:
    from serving import bulk_inference

    pushed, model = ctx.inputs["pushed_model"], ctx.inputs["model"]
    source = ctx.cfg.pipeline.bulk_inference.source
    if not pushed.properties["pushed"]:
        note = f"nothing was pushed ({pushed.properties.get('reason')}); {source} not classified"
        print(f"bulk inference: {note}")
        return {
            "predictions": artifact_types.artifact(
                artifact_types.PREDICTIONS, None, note=note, source=source
            )
        }
    output = ctx.cfg.pipeline.bulk_inference.output
    output = output or str(Path(model.properties["run_dir"]) / "bulk_inference")
    counts = bulk_inference.run_bulk_inference(Path(pushed.uri), source, output, ctx.cfg)
    predictions = artifact_types.artifact(
        artifact_types.PREDICTIONS,
        Path(output).absolute() if "://" not in output else output,
        source=source,
        format=ctx.cfg.pipeline.bulk_inference.format,
        images=counts["images"],
        errors=counts["errors"],
        model=pushed.properties["model"],
        version=pushed.properties["version"],
    )
    return {"predictions": predictions}
