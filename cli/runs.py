"""`imgclf runs`: list, show and compare recorded training runs from the shell."""

import argparse
from pathlib import Path

from configs import loader
from tracking import compare, listing, records, render


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `runs` and its actions to the `imgclf` sub-commands."""
    runs_parser = commands.add_parser("runs", help="list, show and compare training runs")
    actions = runs_parser.add_subparsers(dest="runs_action", required=True, metavar="ACTION")

    listing_parser = actions.add_parser("list", help="a table of runs, filtered and sorted")
    listing_parser.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        metavar="KEY OP VALUE",
        help="keep runs where a test metric, record field or config key compares: "
        "'accuracy>0.9', status=completed, model.backbone=cnn, 'name=digits*' "
        "(operators = == != > >= < <=; repeatable, all must hold)",
    )
    listing_parser.add_argument(
        "--sort",
        default=listing.DEFAULT_SORT,
        help="key to sort by, descending with a leading '-' or ':desc': accuracy, "
        "--sort=-accuracy (with '=': argparse reads a bare -accuracy as an option), "
        f"accuracy:desc (default: {listing.DEFAULT_SORT}, newest first)",
    )
    listing_parser.add_argument("--limit", type=int, help="show at most N runs")
    listing_parser.set_defaults(handler=cmd_list)

    show = actions.add_parser("show", help="everything recorded about one run")
    show.add_argument("run", help="run id (or a unique part of it) or run folder")
    show.set_defaults(handler=cmd_show)

    compare_parser = actions.add_parser(
        "compare", help="config differences, metric deltas and per-class regressions vs the first"
    )
    compare_parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="two or more run ids or folders; the first is the baseline",
    )
    compare_parser.add_argument(
        "--html", help="also write a self-contained HTML page with overlaid per-epoch curves"
    )
    compare_parser.set_defaults(handler=cmd_compare)

    for action in (listing_parser, show, compare_parser):
        action.add_argument(
            "--runs-dir", help="folder of run folders (default: train.runs_dir of the config)"
        )
        loader.add_config_arguments(action)


def runs_dir(args: argparse.Namespace) -> Path:
    folder = args.runs_dir or loader.load(args.config, args.overrides).train.runs_dir
    listing.refuse_bucket(folder)
    return Path(folder)


def cmd_list(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise listing.BadQuery(f"--limit must be >= 1 (received {args.limit})")
    folder = runs_dir(args)
    filters = [listing.parse_filter(text) for text in args.filters]
    found = listing.find_runs(folder)
    selected = listing.select(found, filters, args.sort, args.limit)
    if selected:
        extra = [f.key for f in filters] + [listing.parse_sort(args.sort)[0]]
        print(render.run_table(selected, extra))
    conditions = "; ".join(
        part
        for part in (
            f"filters: {', '.join(args.filters)}" if args.filters else "",
            f"sorted by {args.sort}",
            f"limit {args.limit}" if args.limit else "",
        )
        if part
    )
    print(f"runs list: {len(selected)} of {len(found)} run(s) in {folder} ({conditions})")


def cmd_show(args: argparse.Namespace) -> None:
    run_dir = listing.resolve(args.run, runs_dir(args))
    record = records.load(run_dir)
    record["path"] = str(run_dir)
    print(render.show(record))
    metrics = record.get("metrics") or {}
    scores = ", ".join(
        f"{label} {metrics[key]:.4f}"
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1"))
        if records.is_number(metrics.get(key))
    )
    print(
        f"runs show: {record['run_id']} {records.display_status(record)} after "
        f"{render.duration(records.elapsed_s(record))}, {len(record.get('epochs') or [])} "
        f"epoch(s){': ' + scores if scores else ''} ({run_dir})"
    )


def cmd_compare(args: argparse.Namespace) -> None:
    if len(args.runs) < 2:
        raise listing.BadQuery(
            f"runs compare needs at least two runs (received {len(args.runs)}: {args.runs[0]})"
        )
    folder = runs_dir(args) if not all(Path(ref).is_dir() for ref in args.runs) else None
    loaded = []
    for ref in args.runs:
        run_dir = listing.resolve(ref, folder or Path(ref).parent)
        record = records.load(run_dir)
        record["path"] = str(run_dir)
        loaded.append(record)
    result = compare.compare(loaded)
    print(render.comparison(result))
    written = ""
    if args.html:
        from tracking import compare_html

        written = f"; HTML in {compare_html.write(result, args.html)}"
    print(
        f"runs compare: {len(loaded)} runs vs {loaded[0]['run_id']}: "
        f"{len(result.config)} config difference(s), {len(result.regressions)} per-class "
        f"regression(s){written}"
    )
