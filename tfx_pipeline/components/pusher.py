"""Pusher: a blessed (and infra-validated) model copied into the registry and labelled; a
refused one is recorded with the reason it was not pushed."""

from pathlib import Path

from configs import schema
from tfx_pipeline import artifact_types, component


def push_model_name(cfg: schema.Config) -> str:
    """The registry model the pipeline pushes to (and whose production version it judges by)."""
    return cfg.pipeline.push.model or cfg.serving.model_name


def run(ctx: component.Context) -> dict:
    from registry import store as registry_store

    model, blessing = ctx.inputs["model"], ctx.inputs["blessing"]
    infra_blessing = ctx.inputs.get("infra_blessing")
    name, label = push_model_name(ctx.cfg), ctx.cfg.pipeline.push.label
    lineage = {
        "model": name,
        "run_id": model.properties["run_id"],
        "dataset_version": model.properties["dataset_version"],
    }
    reason = None
    if not blessing.properties["blessed"]:
        reason = f"not blessed ({blessing.properties.get('reason')})"
    elif infra_blessing is not None and not infra_blessing.properties["passed"]:
        reason = "infra validation failed"
    if reason is not None:
        print(f"pusher: {name} not pushed: {reason}")
        refused = artifact_types.artifact(
            artifact_types.PUSHED_MODEL, None, pushed=False, reason=reason, **lineage
        )
        return {"pushed_model": refused}
    store = ctx.cfg.registry.store
    version = pushed_before(store, name, model.uri)
    if version is None:
        version = registry_store.push(store, model.uri, name)
        done = "pushed"
    else:
        done = "was already in the store"
    if label:
        registry_store.promote(store, name, version.version, label)
    print(f"pusher: {name} version {version.version} {done}" + f", labelled {label}" * bool(label))
    pushed = artifact_types.artifact(
        artifact_types.PUSHED_MODEL,
        Path(version.path).absolute(),
        pushed=True,
        version=version.version,
        label=label,
        **lineage,
    )
    return {"pushed_model": pushed}


def pushed_before(store: str, name: str, export_dir: str):
    """The active version of `name` copied from `export_dir`, or None.

    The Pusher re-runs whenever its blessing does, e.g. after the production label moved and the
    Evaluator judged the same model against another baseline: the model is then labelled again,
    not copied into a new version.
    """
    from registry import errors as registry_errors
    from registry import sources
    from registry import store as registry_store

    source = str(sources.find_export(export_dir))
    try:
        versions = registry_store.list_versions(store, name)
    except registry_errors.NotFound:
        return None
    same = [v for v in versions if v.source == source and v.status == registry_store.ACTIVE]
    return same[-1] if same else None
