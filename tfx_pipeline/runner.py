"""Runs components in dependency order, reusing cached executions and recording every one."""

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from configs import schema
from core import errors
from tfx_pipeline import component as component_lib
from tfx_pipeline import metadata

logger = logging.getLogger(__name__)


class PipelineFailed(errors.UserError):
    """A component failed; downstream components did not run. A re-run resumes from it."""


@dataclass(frozen=True)
class Summary:
    run_id: str
    status: str
    executions: list[metadata.Execution]
    outputs: dict[str, metadata.Artifact]  # "Component.output" -> artifact
    duration_s: float


def topological_order(components: list[component_lib.Component]) -> list[component_lib.Component]:
    """Producers before consumers (declaration order among independent ones); rejects cycles
    and inputs naming an unknown component or output."""
    by_name = {c.name: c for c in components}
    needs: dict[str, set[str]] = {}
    for c in components:
        needs[c.name] = set()
        for source in c.inputs.values():
            producer, _, output = source.rstrip("?").partition(".")
            if producer not in by_name or output not in by_name[producer].outputs:
                raise ValueError(f"{c.name} reads {source!r}, which no component produces")
            needs[c.name].add(producer)
    ordered: list[component_lib.Component] = []
    done: set[str] = set()
    while len(ordered) < len(components):
        ready = [c for c in components if c.name not in done and needs[c.name] <= done]
        if not ready:
            stuck = sorted(set(by_name) - done)
            raise ValueError(f"the components {stuck} depend on each other in a cycle")
        ordered.append(ready[0])
        done.add(ready[0].name)
    return ordered


def uri_exists(uri: str | None) -> bool:
    if uri is None:
        return True
    if "://" in uri:
        import tensorflow as tf

        return tf.io.gfile.exists(uri)
    return os.path.exists(uri)


def run(
    cfg: schema.Config, components: list[component_lib.Component], no_cache: bool = False
) -> Summary:
    """Runs the DAG once. Raises PipelineFailed (after recording it) when a component fails."""
    started = time.time()
    store_path = Path(cfg.pipeline.metadata).absolute()
    artifacts_dir = store_path.parent / "artifacts"
    config = cfg.model_dump(mode="json")
    ordered = topological_order(components)
    with metadata.Store(store_path) as store:
        run_id = store.start_run(component_lib.digest(config), config, no_cache)
        print(f"pipeline: run {run_id} (metadata {store_path}{', no cache' if no_cache else ''})")
        produced: dict[str, metadata.Artifact] = {}
        failure: tuple[str, BaseException] | None = None
        for comp in ordered:
            if failure is not None or not comp.enabled(cfg):
                reason = f"{failure[0]} failed" if failure else "disabled by the config"
                skipped = store.start_execution(run_id, comp.name, "", "")
                store.end_execution(skipped, metadata.SKIPPED, reason)
                print(f"pipeline: {comp.name:16} skipped ({reason})")
                continue
            try:
                produced.update(
                    run_one(cfg, comp, store, run_id, produced, artifacts_dir, no_cache)
                )
            except BaseException as error:  # noqa: BLE001 - recorded, then re-raised below
                failure = (comp.name, error)
        status = metadata.FAILED if failure else metadata.COMPLETED
        store.end_run(run_id, status)
        executions = store.executions(run_id)
    duration = time.time() - started
    if failure is not None:
        name, error = failure
        if not isinstance(error, Exception):
            raise error  # KeyboardInterrupt and the like: recorded, not wrapped
        raise PipelineFailed(
            f"pipeline run {run_id}: {name} failed ({type(error).__name__}: {error}); "
            "downstream components did not run; fix the cause and re-run: it resumes from "
            f"{name}"
        ) from error
    counts = {s: sum(e.status == s for e in executions) for s in (metadata.COMPLETED, "cached")}
    print(
        f"pipeline: run {run_id} completed in {duration:.1f}s "
        f"({counts[metadata.COMPLETED]} ran, {counts['cached']} cached)"
    )
    return Summary(run_id, status, executions, produced, duration)


def run_one(
    cfg: schema.Config,
    comp: component_lib.Component,
    store: metadata.Store,
    run_id: str,
    produced: dict[str, metadata.Artifact],
    artifacts_dir: Path,
    no_cache: bool,
) -> dict[str, metadata.Artifact]:
    """One component: a cache hit is recorded as such; otherwise it runs and its outputs are
    recorded. Returns its outputs keyed "Component.output"."""
    inputs: dict[str, metadata.Artifact | None] = {}
    for name, source in comp.inputs.items():
        key = source.rstrip("?")
        if key not in produced and not source.endswith("?"):
            raise component_lib.ComponentError(f"{comp.name}: input {name} ({key}) is missing")
        inputs[name] = produced.get(key)
    if comp.resolve is not None:
        inputs.update(comp.resolve(cfg, store, dict(inputs)))
    config_hash = component_lib.digest(comp.config_subset(cfg))
    cache_key = comp.cache_key(config_hash, inputs)
    started = time.time()
    execution_id = store.start_execution(run_id, comp.name, cache_key, config_hash)
    for name, artifact in inputs.items():
        if artifact is None:
            continue
        if artifact.id is None:  # found outside the DAG: recorded once, on first use
            known = store.find_artifact(artifact.type, artifact.fingerprint)
            artifact = inputs[name] = known or store.put_artifact(artifact, None)
        store.add_event(execution_id, artifact.id, metadata.INPUT, name)
    cached = None if no_cache else store.cached_execution(comp.name, cache_key)
    if cached is not None:
        outputs = store.events(cached.id, metadata.OUTPUT)
        if set(outputs) == set(comp.outputs) and all(uri_exists(a.uri) for a in outputs.values()):
            for name, artifact in outputs.items():
                store.add_event(execution_id, artifact.id, metadata.OUTPUT, name)
            store.end_execution(execution_id, metadata.CACHED, reused=cached.id)
            print(f"pipeline: {comp.name:16} cached (execution {cached.id})")
            return {f"{comp.name}.{name}": artifact for name, artifact in outputs.items()}
    print(f"pipeline: {comp.name:16} running")
    context = component_lib.Context(cfg, inputs, store, artifacts_dir, execution_id)
    try:
        outputs = comp.run(context)
        if set(outputs) != set(comp.outputs):
            raise ValueError(
                f"{comp.name} returned outputs {sorted(outputs)}, declared {sorted(comp.outputs)}"
            )
        for name, artifact in outputs.items():
            if artifact.type != comp.outputs[name]:
                raise ValueError(
                    f"{comp.name}.{name} must be a {comp.outputs[name]} (received {artifact.type})"
                )
    except BaseException as error:
        store.end_execution(execution_id, metadata.FAILED, f"{type(error).__name__}: {error}")
        print(f"pipeline: {comp.name:16} FAILED after {time.time() - started:.1f}s: {error}")
        raise
    for name, artifact in outputs.items():
        artifact.fingerprint = artifact.fingerprint or component_lib.fingerprint(artifact)
        store.put_artifact(artifact, execution_id)
        store.add_event(execution_id, artifact.id, metadata.OUTPUT, name)
    store.end_execution(execution_id, metadata.COMPLETED)
    print(f"pipeline: {comp.name:16} ran in {time.time() - started:.1f}s")
    return {f"{comp.name}.{name}": artifact for name, artifact in outputs.items()}
