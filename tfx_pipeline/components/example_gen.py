"""ExampleGen: data.source ingested into a dataset version (TFRecords + dataset.json)."""

from configs import schema
from core import locations
from tfx_pipeline import artifact_types, component, external_sources


def resolve_source(cfg: schema.Config, store, inputs) -> dict:
    """data.source, fingerprinted by what it holds: new or changed images re-ingest."""
    return {"source": external_sources.external_source(cfg.data.source, cfg.data)}


def run(ctx: component.Context) -> dict:
    from transforms.beam import ingest

    result = ingest.run(ctx.cfg.data)
    info = result.dataset
    examples = artifact_types.artifact(
        artifact_types.EXAMPLES,
        locations.absolute(result.location),  # a bucket's URL as it is
        version=result.version,
        source=info["source"],
        written=info["written"],
        splits={split: s["count"] for split, s in info["splits"].items()},
    )
    # The version is a hash of the content: an identical re-ingest keeps downstream cached.
    examples.fingerprint = component.digest(
        {"type": artifact_types.EXAMPLES, "version": result.version}
    )
    return {"examples": examples}
