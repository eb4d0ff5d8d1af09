"""`imgclf monitor drift`: served inputs and predictions against a training dataset."""

import argparse
import datetime
import json
import math

from configs import loader
from monitoring import thresholds, timespan

DRIFT_EXIT = 1  # drift flagged; 2 stays a user error


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `monitor` and its actions to the `imgclf` sub-commands."""
    monitor = commands.add_parser("monitor", help="production monitoring: drift of served data")
    actions = monitor.add_subparsers(dest="monitor_action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "drift",
        help="compare served inputs and predictions with a dataset; exit 1 when drift is flagged",
    )
    loader.add_config_arguments(check)
    check.add_argument("--model", required=True, help="served model name")
    check.add_argument("--version", type=int, help="one model version (default: all versions)")
    check.add_argument("--since", default="1h", help=f"{timespan.SINCE_HELP} (default: 1h)")
    served = check.add_mutually_exclusive_group()
    served.add_argument(
        "--stats-dir", help="windows written by `imgclf serve` (default: serving.monitoring.dir)"
    )
    served.add_argument(
        "--server", help="ask a running server instead (its memory), e.g. http://127.0.0.1:8501"
    )
    check.add_argument(
        "--dataset",
        default="latest",
        help="dataset version folder, version id or 'latest' under data.output_dir (default)",
    )
    check.add_argument("--out", help="also write the report as JSON here")
    check.add_argument(
        "--psi-threshold",
        type=float,
        default=thresholds.PSI_THRESHOLD,
        help=f"PSI above this is drift (default: {thresholds.PSI_THRESHOLD})",
    )
    check.add_argument(
        "--ks-min",
        type=float,
        default=thresholds.KS_MIN_DISTANCE,
        help="KS distance must exceed this and the 1%% critical value "
        f"(default: {thresholds.KS_MIN_DISTANCE})",
    )
    check.add_argument(
        "--max-low-confidence-rate",
        type=float,
        default=thresholds.MAX_LOW_CONFIDENCE_RATE,
        help="share of top-1 probabilities below serving.monitoring.low_confidence_threshold "
        f"above which it is flagged (default: {thresholds.MAX_LOW_CONFIDENCE_RATE})",
    )
    check.add_argument(
        "--min-count",
        type=int,
        default=thresholds.MIN_COUNT,
        help=f"fewer served images than this are not judged (default: {thresholds.MIN_COUNT})",
    )
    check.set_defaults(handler=cmd_drift)


def served_window(args: argparse.Namespace, since: float, stats_dir: str | None):
    from monitoring import stats, windows

    if args.server:
        return windows.fetch_window(args.server, args.model, since, args.version), args.server
    if stats_dir is None:
        raise windows.MonitoringError(
            "serving.monitoring.dir is null, so no windows were written; give --stats-dir or "
            "--server"
        )
    found = windows.read_windows(stats_dir, args.model, since, args.version)
    return stats.merge_all(found), stats_dir


def cmd_drift(args: argparse.Namespace) -> None:
    # Imported here: TensorFlow and the dataset readers load only when this command runs.
    from monitoring import drift, reference, storage, windows
    from transforms import dataset_store

    cfg = loader.load(args.config, args.overrides)
    since = timespan.parse_since(args.since)
    stats_dir = args.stats_dir or cfg.serving.monitoring.dir
    served, served_from = served_window(args, since, stats_dir)
    if served is None or not served.predictions:
        raise windows.MonitoringError(
            f"no requests to {args.model} recorded since {iso(since)} in {served_from}; "
            "widen --since or check --model"
        )
    # A version folder (a path or a bucket URL), or a version id or 'latest' under
    # data.output_dir; a bucket's is read from its cached copy.
    version_dir = dataset_store.find_version(args.dataset, cfg.data)
    baseline = reference.load_reference(dataset_store.local_copy(version_dir, cfg.data))
    limits = thresholds.Thresholds(
        args.psi_threshold, args.ks_min, args.max_low_confidence_rate, args.min_count
    )
    findings = drift.compare(baseline, served, limits)
    print(
        f"monitor drift: {args.model} from {iso(served.start)} to {iso(served.end)}: "
        f"{served.predictions} predictions, {served.inputs} images measured "
        f"({served.dropped} dropped), from {served_from}"
    )
    print(f"  reference: dataset {baseline.version}, {baseline.source}")
    print(f"  {'feature':16}{'statistic':>10}{'value':>10}{'threshold':>11}  drifted")
    for finding in findings:
        value = "-" if math.isnan(finding.value) else f"{finding.value:.4f}"
        verdict = "yes" if finding.drifted else "no"
        note = f"  ({finding.note})" if finding.note else ""
        print(
            f"  {finding.feature:16}{finding.statistic:>10}{value:>10}"
            f"{finding.threshold:>11.4f}  {verdict}{note}"
        )
    result = drift.report(args.model, since, baseline, served, findings, served_from)
    if args.out:
        storage.write_file(args.out, (json.dumps(result, indent=2) + "\n").encode())
    drifted = result["drifted"]
    print(f"monitor drift: {'drift in ' + ', '.join(drifted) if drifted else 'no drift'}")
    if drifted:
        raise SystemExit(DRIFT_EXIT)


def iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")
