"""`imgclf registry`: push, list, promote, roll back and archive model versions from the shell."""

import argparse
import os
import sys
from pathlib import Path

from configs import loader
from core import atomic_write, run_layout
from registry import atomic, errors, models_config, sources, store

METRIC_COLUMNS = (("accuracy", "accuracy"), ("macro_f1", "macro F1"))  # (key, heading)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `registry` and its actions to the `imgclf` sub-commands."""
    registry = commands.add_parser(
        "registry", help="model store: push, list, promote, roll back, archive, serving config"
    )
    actions = registry.add_subparsers(dest="registry_action", required=True, metavar="ACTION")

    push = actions.add_parser("push", help="copy a run's SavedModel in as the next version")
    push.add_argument("source", help="a run folder, its export/ folder or one export/<n>/ folder")
    push.add_argument("--model", help="model name in the store (default: serving.model_name)")
    push.add_argument("--label", help="point this label at the new version (e.g. production)")
    push.add_argument(
        "--force", action="store_true", help="with --label production: accept an unblessed model"
    )
    push.set_defaults(handler=cmd_push)

    listing = actions.add_parser("list", help="every version, its labels, run and metrics")
    listing.add_argument("model", nargs="?", help="one model (default: every model)")
    listing.set_defaults(handler=cmd_list)

    promote = actions.add_parser("promote", help="point a label at a version")
    promote.add_argument("model")
    promote.add_argument("version", type=int)
    promote.add_argument("--label", required=True, help="production, staging or any label")
    promote.add_argument(
        "--force", action="store_true", help="promote to production without a blessing"
    )
    promote.set_defaults(handler=cmd_promote)

    rollback = actions.add_parser("rollback", help="move a label back to its previous version")
    rollback.add_argument("model")
    rollback.add_argument("--label", default=store.PRODUCTION, help="default: production")
    rollback.set_defaults(handler=cmd_rollback)

    archive = actions.add_parser("archive", help="stop serving a version and move it aside")
    archive.add_argument("model")
    archive.add_argument("version", type=int)
    archive.set_defaults(handler=cmd_archive)

    serving = actions.add_parser(
        "serving-config",
        help="the store's models.config with base paths under ROOT, for a server container",
    )
    serving.add_argument(
        "--root", required=True, help="where the server sees the store, e.g. /models"
    )
    serving.add_argument("--out", help="file to write (default: stdout)")
    serving.set_defaults(handler=cmd_serving_config)

    for action in (push, listing, promote, rollback, archive, serving):
        action.add_argument("--store", help="model store folder (default: registry.store)")
        loader.add_config_arguments(action)


def cmd_push(args: argparse.Namespace) -> None:
    store_dir = store_path(args)
    model = store.check_model_name(
        args.model or loader.load(args.config, args.overrides).serving.model_name
    )
    if args.force and not args.label:
        raise errors.RegistryError("--force only applies with --label; add --label production")
    if args.label:
        store.check_label(args.label)
        if args.label == store.PRODUCTION and not args.force:
            refuse_unblessed(args.source)
    pushed = store.push(store_dir, args.source, model)
    labelled = ""
    if args.label:
        pushed = store.promote(store_dir, model, pushed.version, args.label, force=args.force)
        labelled = f", labelled {args.label}"
    print(
        f"registry: pushed {shown(args.source)} as {model} version {pushed.version}{labelled} "
        f"-> {shown(pushed.path)}"
    )


def refuse_unblessed(source: str) -> None:
    """Fails before copying anything, so a refused production push leaves the store untouched."""
    export_dir = sources.find_export(source)
    blessing, blessing_file = sources.read_blessing(export_dir)
    if blessing is not None and blessing["blessed"] is True:
        return
    why = (
        f"no {run_layout.BLESSING} beside it or in its run"
        if blessing is None
        else f'{shown(blessing_file)} says "blessed": false'
        + (f": {blessing['reason']}" if blessing.get("reason") else "")
    )
    raise errors.NotBlessed(
        f"{shown(export_dir)} is not blessed ({why}); evaluate its run so that "
        f'{run_layout.BLESSING} says "blessed": true, push without --label, or pass --force '
        "to push it to production anyway"
    )


def cmd_list(args: argparse.Namespace) -> None:
    store_dir = store_path(args)
    versions = store.list_versions(store_dir, args.model)
    headings = ["model", "version", "status", "labels", "blessed", "run id", "dataset version"]
    headings += [heading for _, heading in METRIC_COLUMNS] + ["created"]
    rows = [
        [
            v.model,
            str(v.version),
            v.status,
            ",".join(v.labels) or "-",
            "yes" if v.blessed else "no",
            v.run_id or "-",
            v.dataset_version or "-",
            *(metric(v.metrics.get(key)) for key, _ in METRIC_COLUMNS),
            v.created or "-",
        ]
        for v in versions
    ]
    print_table(headings, rows)
    models = len({v.model for v in versions})
    print(f"registry: {len(versions)} version(s) of {models} model(s) in {shown(store_dir)}")


def cmd_promote(args: argparse.Namespace) -> None:
    store_dir = store_path(args)
    promoted = store.promote(store_dir, args.model, args.version, args.label, force=args.force)
    forced = " (forced, not blessed)" if args.force and not promoted.blessed else ""
    print(
        f"registry: {promoted.model} {args.label} -> version {promoted.version}{forced} "
        f"-> {shown(promoted.path)}"
    )


def cmd_rollback(args: argparse.Namespace) -> None:
    store_dir = store_path(args)
    before = [
        v.version for v in store.list_versions(store_dir, args.model) if args.label in v.labels
    ]
    restored = store.rollback(store_dir, args.model, args.label)
    source = f" from version {before[0]}" if before else ""
    print(
        f"registry: rolled {restored.model} {args.label} back{source} to version "
        f"{restored.version} -> {shown(restored.path)}"
    )


def cmd_archive(args: argparse.Namespace) -> None:
    archived = store.archive(store_path(args), args.model, args.version)
    print(
        f"registry: archived {archived.model} version {archived.version} (no longer served) "
        f"-> {shown(archived.path)}"
    )


def cmd_serving_config(args: argparse.Namespace) -> None:
    store_dir = store.existing_store(store_path(args))
    config_file = store_dir / store.CONFIG_FILE
    # Shared lock: no store command rewrites models.config (or sweeps temp files) meanwhile.
    with atomic.locked(store_dir / store.LOCK_FILE, exclusive=False):
        if not config_file.is_file():
            raise errors.NotFound(f"{config_file} does not exist; push a model first")
        config = models_config.rebased(models_config.read(config_file), args.root)
        text = models_config.to_text(config)
        if args.out:
            out = Path(args.out)
            if out.is_dir() or not out.parent.is_dir():
                raise errors.NotFound(
                    f"--out {args.out} must name a file in an existing folder, e.g. "
                    f"{shown(store_dir / 'serving.config')}"
                )
            # Atomic, so a server polling this file never reads half of it.
            atomic_write.write_text(out, text, durable=True)
    if not args.out:
        sys.stdout.write(text)
    entries = config.model_config_list.config
    where = shown(args.out) if args.out else "stdout"
    # On stderr when the config goes to stdout, so `> file` captures the config alone.
    print(
        f"registry: serving config for {len(entries)} model(s) of {shown(store_dir)}, base paths "
        f"under {args.root} -> {where}",
        file=sys.stdout if args.out else sys.stderr,
    )


def store_path(args: argparse.Namespace) -> str:
    return args.store or loader.load(args.config, args.overrides).registry.store


def metric(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.4f}"


def print_table(headings: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headings, *rows, strict=True)]
    for row in [headings, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def shown(path: str | os.PathLike) -> str:
    """`path` relative to the working folder when it lies inside it, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative == ".." or relative.startswith(".." + os.sep) else relative
