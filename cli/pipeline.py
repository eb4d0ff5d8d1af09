"""`imgclf pipeline run|status|lineage`: the component DAG, its last run, and what made what."""

import argparse
import time
from pathlib import Path

from configs import loader
from tfx_pipeline import metadata
from tfx_pipeline.pipeline import run_pipeline


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `pipeline` (run, status, lineage) to the `imgclf` sub-commands."""
    pipeline = commands.add_parser(
        "pipeline", help="the whole flow as cached, recorded components (TFX-lite)"
    )
    actions = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="ExampleGen -> StatisticsGen -> ExampleValidator -> [Tuner] -> Trainer -> "
        "Evaluator -> InfraValidator -> Pusher; unchanged components are reused from the cache",
    )
    loader.add_config_arguments(run)
    run.add_argument("--no-cache", action="store_true", help="run every component again")
    run.set_defaults(handler=cmd_run)

    status = actions.add_parser("status", help="a pipeline run: each component, cached/ran/failed")
    status.add_argument("run_id", nargs="?", help="pipeline run id (default: the last run)")
    add_metadata_arguments(status)
    status.set_defaults(handler=cmd_status)

    lineage = actions.add_parser("lineage", help="what produced an artifact, back to its source")
    lineage.add_argument(
        "target",
        help="an artifact id, a pipeline run id, a training run id, <model>@<version> of a "
        "pushed model, or a path (dataset version, export, registry version folder)",
    )
    add_metadata_arguments(lineage)
    lineage.set_defaults(handler=cmd_lineage)


def add_metadata_arguments(parser: argparse.ArgumentParser) -> None:
    loader.add_config_arguments(parser)
    parser.add_argument("--metadata", help="metadata store (default: pipeline.metadata)")


def open_store(args: argparse.Namespace) -> metadata.Store:
    path = Path(args.metadata or loader.load(args.config, args.overrides).pipeline.metadata)
    if not path.is_file():
        raise metadata.NotFound(
            f"no metadata store at {path}: run `imgclf pipeline run` first, or pass --metadata"
        )
    return metadata.Store(path)


def cmd_run(args: argparse.Namespace) -> None:
    run_pipeline(loader.load(args.config, args.overrides), no_cache=args.no_cache)


def cmd_status(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        for line in describe_run(store, args.run_id):
            print(line)


def describe_run(store: metadata.Store, run_id: str | None) -> list[str]:
    run = store.run(run_id)
    ended = run["ended"] and f"{run['ended'] - run['started']:.1f}s"
    lines = [
        f"pipeline run {run['id']}: {run['status']} "
        f"(started {format_time(run['started'])}, {ended or 'still running'}, "
        f"config {run['config_hash']})"
    ]
    for execution in store.executions(run["id"]):
        took = execution.duration_s
        how = execution.status
        if execution.reused_execution_id is not None:
            how += f" from execution {execution.reused_execution_id}"
        lines.append(
            f"  {execution.component:16} {how:28} "
            f"{'' if took is None else f'{took:7.1f}s'}  execution {execution.id}"
        )
        if execution.error:
            lines.append(f"      {execution.error}")
        for name, artifact in store.events(execution.id, metadata.OUTPUT).items():
            lines.append(f"      -> {name}: {artifact.type} #{artifact.id} {artifact.uri or ''}")
    return lines


def cmd_lineage(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        target = args.target
        try:
            run = store.run(target)
        except metadata.NotFound:
            run = None
        if run is not None:
            for line in describe_run(store, target):
                print(line)
            return
        artifact = find_artifact(store, target)
        for line in [*origin(store, artifact), *lineage(store, artifact)]:
            print(line)


def find_artifact(store: metadata.Store, target: str) -> metadata.Artifact:
    """The artifact `target` names: an id, <model>@<version>, a training run id or a path."""
    if target.isdigit():
        return store.artifact(int(target))
    everything = store.artifacts()
    model, at, version = target.rpartition("@")
    if at and version.isdigit():
        for artifact in everything:
            props = artifact.properties
            if artifact.type == "PushedModel" and props.get("pushed"):
                if props.get("model") == model and props.get("version") == int(version):
                    return artifact
        raise metadata.NotFound(f"no pipeline pushed {target} (see `imgclf registry list`)")
    for artifact in everything:
        if artifact.type == "Model" and artifact.properties.get("run_id") == target:
            return artifact
    path = str(Path(target).absolute())
    for artifact in everything:
        if artifact.uri is not None and path in (artifact.uri, artifact.properties.get("run_dir")):
            return artifact
    raise metadata.NotFound(
        f"{target!r} is no artifact id, pipeline run id, training run id, <model>@<version> or "
        f"artifact path in {store.path}"
    )


def origin(store: metadata.Store, artifact: metadata.Artifact) -> list[str]:
    """One line per fact a model's user asks first: which training run, pipeline run, dataset
    version, source and config produced it (empty for artifacts upstream of training)."""
    found: dict[str, metadata.Artifact] = {}
    pending = [artifact]
    while pending:
        item = pending.pop()
        found.setdefault(item.type, item)
        if item.producer_execution_id is not None:
            pending.extend(store.events(item.producer_execution_id, metadata.INPUT).values())
    model = found.get("Model")
    if model is None:
        return []
    trainer = store.execution(model.producer_execution_id)
    run = store.run(trainer.run_id)
    examples, source = found.get("Examples"), found.get("ExternalSource")
    return [
        f"training run:    {model.properties['run_id']} ({model.properties['run_dir']})",
        f"pipeline run:    {run['id']} (config hash {run['config_hash']}, trainer config "
        f"hash {trainer.config_hash})",
        f"dataset version: {model.properties['dataset_version']}"
        + (f" ({examples.uri})" if examples else ""),
        f"source:          {source.uri if source else 'unknown'}",
    ]


def lineage(store: metadata.Store, artifact: metadata.Artifact) -> list[str]:
    """The artifact, then each producing execution and its inputs, depth first, upstream."""
    lines: list[str] = []
    seen: set[int] = set()

    def walk(item: metadata.Artifact, name: str, depth: int) -> None:
        pad = "  " * depth
        props = ", ".join(f"{k}={v}" for k, v in sorted(item.properties.items()))
        lines.append(f"{pad}{name}: {item.type} #{item.id} {item.uri or ''}".rstrip())
        if props:
            lines.append(f"{pad}    {props}")
        if item.id in seen or item.producer_execution_id is None:
            return
        seen.add(item.id)
        execution = store.execution(item.producer_execution_id)
        run = store.run(execution.run_id)
        inputs = store.events(execution.id, metadata.INPUT)
        lines.append(
            f"{pad}  <- {execution.component} execution {execution.id} ({execution.status}), "
            f"pipeline run {run['id']}, component config {execution.config_hash}, "
            f"pipeline config {run['config_hash']}"
        )
        for input_name, upstream in inputs.items():
            walk(upstream, input_name, depth + 2)

    walk(artifact, "artifact", 0)
    return lines


def format_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
