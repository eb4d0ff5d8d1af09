"""`imgclf data digits | stats | diff`: the bundled digits as PNGs, a dataset version's
statistics, and what changed between two versions."""

import argparse

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="write a bundled dataset as image files")
    data_commands = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    digits = data_commands.add_parser("digits", help="scikit-learn's 1,797 handwritten digits")
    digits.add_argument("--out", required=True, help="output folder (<out>/<class>/<n>.png)")
    digits.set_defaults(handler=cmd_data_digits)
    stats = data_commands.add_parser("stats", help="print a dataset version's statistics")
    stats.add_argument("version", help="version, 'latest', or a version folder")
    stats.add_argument("--png", help="chart path (default: ./class-counts-<version>.png)")
    loader.add_config_arguments(stats)
    stats.set_defaults(handler=cmd_data_stats)
    diff = data_commands.add_parser("diff", help="compare two dataset versions")
    diff.add_argument("old", help="version, 'latest', or a version folder")
    diff.add_argument("new", help="version, 'latest', or a version folder")
    loader.add_config_arguments(diff)
    diff.set_defaults(handler=cmd_data_diff)


def cmd_data_digits(args: argparse.Namespace) -> None:
    from transforms import digits

    count = digits.write_digits(args.out)
    print(
        f"data: wrote {count} digit PNGs ({digits.DIGITS_SIZE}x{digits.DIGITS_SIZE}) "
        f"to {args.out}/<class>/"
    )


def dataset_dir(args: argparse.Namespace, version: str) -> tuple[str, str]:
    """(location, local folder) of a version folder given as a path or a bucket URL, or of a
    version (or 'latest') under data.output_dir; a bucket's is read from its cached copy."""
    from transforms import dataset_store

    data_cfg = loader.load(args.config, args.overrides).data
    location = dataset_store.find_version(version, data_cfg)
    return location, dataset_store.local_copy(location, data_cfg)


def cmd_data_stats(args: argparse.Namespace) -> None:
    from transforms import dataset_card, dataset_info, plots

    location, version_dir = dataset_dir(args, args.version)
    info = dataset_info.load(version_dir)
    stats = info["stats"]
    print(f"dataset {info['version']} ({location}) from {info['source']}")
    print(
        f"  {info['written']} images in {info['num_classes']} classes; {info['duplicates']} "
        f"duplicates, {info['quarantined']} quarantined; imbalance ratio {info['imbalance_ratio']}"
    )
    print(f"  {'class':20}" + "".join(f"{split:>8}" for split in info["splits"]) + f"{'total':>8}")
    for name in info["label_map"]:
        row = "".join(f"{s['per_class'].get(name, 0):8d}" for s in info["splits"].values())
        print(f"  {name:20}{row}{info['class_counts'][name]:8d}")
    print(f"  channel mean {stats['channel_mean']}, std {stats['channel_std']}")
    found = info.get("near_duplicates")
    print(f"  near-duplicates: {dataset_card.near_duplicates_line(found)}")
    for group in (found or {}).get("examples", []):
        print(f"    {dataset_card.group_members(group)}")
    for key in (
        "height_histogram",
        "width_histogram",
        "aspect_histogram",
        "original_modes",
        "original_formats",
    ):
        print(f"  {key.replace('_', ' ')}: {stats[key]}")
    png = args.png or f"class-counts-{info['version']}.png"
    plots.plot_class_counts(info, png)
    print(f"data stats: class counts chart in {png}")


def cmd_data_diff(args: argparse.Namespace) -> None:
    from transforms import dataset_info

    report = dataset_info.diff(dataset_dir(args, args.old)[1], dataset_dir(args, args.new)[1])
    print(f"dataset {report['old']} -> {report['new']}")
    print(f"  {'class':20}{'old':>8}{'new':>8}{'change':>8}")
    for name, counts in report["class_counts"].items():
        print(f"  {name:20}{counts['old']:8d}{counts['new']:8d}{counts['change']:+8d}")
    for key in (
        "added_classes",
        "removed_classes",
        "added",
        "removed",
        "relabelled",
        "moved_split",
        "channel_mean_change",
        "channel_std_change",
        "imbalance_ratio",
        "quarantined",
        "near_duplicate_groups",
    ):
        print(f"  {key.replace('_', ' ')}: {report[key]}")
    for field, change in report["card_changes"].items():
        print(f"  card {field}: {change['old']!r} -> {change['new']!r}")
    print(
        f"data diff: {report['added']} examples added, {report['removed']} removed, "
        f"{report['relabelled']} relabelled"
    )
