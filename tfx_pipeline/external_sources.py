"""Inputs from outside the DAG (a dataset source, the images to classify) as ExternalSource
artifacts, fingerprinted by what they hold now: new or rewritten files re-run their readers."""

import logging

from configs import schema
from tfx_pipeline import artifact_types, component, metadata

log = logging.getLogger(__name__)


def external_source(location: str, data_cfg: schema.DataConfig) -> metadata.Artifact:
    source = artifact_types.artifact(artifact_types.EXTERNAL_SOURCE, location)
    source.fingerprint = source_fingerprint(location, data_cfg)
    return source


def source_fingerprint(source: str, data_cfg: schema.DataConfig) -> str:
    """What a source holds now, cheaply: every object's name, size and modification stamp.

    Local trees are walked; a bucket (s3://, gs://, ...) or URL is listed through the same
    filesystem layer ingest reads with (an object's ETag or modification time). `tfds:` names and
    a listing that fails (logged) fall back to the URI: re-ingest those with --no-cache.
    """
    from transforms.sources import storage

    if source.startswith("tfds:"):
        return component.digest({"uri": source})
    try:
        fs, path = storage.filesystem(source, data_cfg.model_copy(update={"source": source}))
        if fs.isdir(path):
            found = fs.find(path, detail=True)
        else:
            found = {path: fs.info(path)}
    except Exception as error:  # noqa: BLE001 - any listing failure means "known by URI only"
        log.warning("cannot list %s to fingerprint it (%s); known by its URI only", source, error)
        return component.digest({"uri": source})
    return component.digest(
        [[name, info.get("size"), stamp_of(info)] for name, info in sorted(found.items())]
    )


def stamp_of(info: dict) -> str | None:
    """What changes when an object is rewritten, whichever filesystem described it."""
    for key in ("mtime", "ETag", "LastModified", "etag", "md5Hash", "updated", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return None
