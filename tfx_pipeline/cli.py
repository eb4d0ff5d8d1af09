"""The `imgclf` command: one sub-command per pipeline stage, all sharing --config/--set."""

import argparse
import logging
import os
import sys
from pathlib import Path

import configs
from configs import loader
from core import console, errors
from evaluator import cli as evaluator_cli
from monitoring import cli as monitoring_cli
from registry import cli as registry_cli
from tfx_pipeline import pipeline_cli
from tracking import cli as tracking_cli
from trainer import weights_cli
from trainer.tuning import cli as tuning_cli

DIGITS_CONFIG = Path(configs.__file__).parent / "digits.yaml"


def resolved_config(args: argparse.Namespace):
    return loader.load(args.config, args.overrides)


def cmd_config_show(args: argparse.Namespace) -> None:
    print(loader.to_yaml(resolved_config(args)), end="")


def cmd_data_digits(args: argparse.Namespace) -> None:
    from transforms import digits

    count = digits.write_digits(args.out)
    print(
        f"data: wrote {count} digit PNGs ({digits.DIGITS_SIZE}x{digits.DIGITS_SIZE}) "
        f"to {args.out}/<class>/"
    )


def cmd_ingest(args: argparse.Namespace) -> None:
    overrides = list(args.overrides)
    if args.runner:
        overrides.append(f"data.beam_runner={args.runner}")
    cfg = loader.load(args.config, overrides)
    passed = [f"--{option.removeprefix('--')}" for option in args.beam_options]
    cfg.data.beam_options = [*cfg.data.beam_options, *passed]
    from transforms.beam import ingest

    result = ingest.run(cfg.data)
    info = result.dataset
    counts = ", ".join(f"{split} {s['count']}" for split, s in info["splits"].items())
    print(
        f"ingest: dataset {result.version}: {info['written']} images ({counts}), "
        f"{info['duplicates']} duplicates, {info['quarantined']} quarantined -> {result.path}"
    )


def dataset_dir(args: argparse.Namespace, version: str) -> str:
    """A version folder given as a path, or a version (or 'latest') under data.output_dir."""
    from transforms import dataset_info

    if os.path.isfile(os.path.join(version, dataset_info.DATASET_JSON)):
        return version
    if os.sep in version or os.path.exists(version):
        raise dataset_info.DatasetNotFound(
            f"{version} holds no {dataset_info.DATASET_JSON}: give a dataset version folder, "
            "a version id, or 'latest'"
        )
    return dataset_info.resolve_version_dir(resolved_config(args).data.output_dir, version)


def cmd_data_stats(args: argparse.Namespace) -> None:
    from transforms import dataset_info, plots

    version_dir = dataset_dir(args, args.version)
    info = dataset_info.load(version_dir)
    stats = info["stats"]
    print(f"dataset {info['version']} ({version_dir}) from {info['source']}")
    print(
        f"  {info['written']} images in {info['num_classes']} classes; {info['duplicates']} "
        f"duplicates, {info['quarantined']} quarantined; imbalance ratio {info['imbalance_ratio']}"
    )
    print(f"  {'class':20}" + "".join(f"{split:>8}" for split in info["splits"]) + f"{'total':>8}")
    for name in info["label_map"]:
        row = "".join(f"{s['per_class'].get(name, 0):8d}" for s in info["splits"].values())
        print(f"  {name:20}{row}{info['class_counts'][name]:8d}")
    print(f"  channel mean {stats['channel_mean']}, std {stats['channel_std']}")
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

    report = dataset_info.diff(dataset_dir(args, args.old), dataset_dir(args, args.new))
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
    ):
        print(f"  {key.replace('_', ' ')}: {report[key]}")
    print(
        f"data diff: {report['added']} examples added, {report['removed']} removed, "
        f"{report['relabelled']} relabelled"
    )


def cmd_train(args: argparse.Namespace) -> None:
    cfg = resolved_config(args)
    from tfx_pipeline import flow

    flow.run(cfg, dry_run=args.dry_run)


def cmd_export(args: argparse.Namespace) -> None:
    from artifacts import formats

    out, results = formats.export_run(
        args.run,
        formats.parse_formats(args.format),
        formats.parse_quantize(args.quantize),
        args.representative_images,
        args.accuracy_images,
    )
    for line in formats.format_table(results):
        print(f"  {line}")
    checked = ", ".join(
        f"{Path(r['converted']).name} (max diff {r['max_abs_diff']:.1e}, "
        f"top-1 {r['top1_agreement']:.0%})"
        for r in results
    )
    print(f"export: {len(results)} file(s) match the SavedModel in {out}: {checked or 'none'}")


def cmd_serve(args: argparse.Namespace) -> None:
    cfg = resolved_config(args)
    serving_cfg = cfg.serving
    for key in ("model_name", "host", "port", "grpc_port"):
        if getattr(args, key) is not None:
            setattr(serving_cfg, key, getattr(args, key))
    if args.no_grpc:
        serving_cfg.grpc_port = None
    from serving.server import server

    server.serve(serving_cfg, args.model_path, args.model_config_file)


def cmd_predict(args: argparse.Namespace) -> None:
    cfg = resolved_config(args)
    from serving import predict

    name = args.model_name or (None if args.model_path else cfg.serving.model_name)
    target = predict.open_target(
        args.server, args.model_path, name, args.version, args.label, args.timeout
    )
    try:
        images = predict.list_images(args.images, cfg.data)
        with predict.open_writer(args.output, args.format) as writer:
            summary = predict.run(target, images, writer, args.batch_size, args.top_k)
    finally:
        target.close()
    # Rows on stdout (--format without --output) keep it machine-readable: summary to stderr.
    rows_on_stdout = args.output is None and args.format is not None
    print(summary.line(), file=sys.stderr if rows_on_stdout else sys.stdout)


def cmd_doctor(args: argparse.Namespace) -> None:
    cfg = resolved_config(args) if args.config or args.overrides else None
    from tracking import doctor

    for line in doctor.report(cfg):
        print(line)


def cmd_demo(args: argparse.Namespace) -> None:
    if args.config is None:
        args.config = str(DIGITS_CONFIG)
    cfg = resolved_config(args)
    from tfx_pipeline import demo

    demo.run(cfg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclf", description="Image classification pipeline.")
    # For --help: console.setup takes --verbose out of the arguments, wherever it stands.
    parser.add_argument(
        console.VERBOSE_FLAG,
        action="store_true",
        help=f"show TensorFlow's native log lines (also {console.VERBOSE_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = commands.add_parser("config", help="inspect configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_commands.add_parser("show", help="print the resolved config")
    loader.add_config_arguments(show)
    show.set_defaults(handler=cmd_config_show)

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

    ingest = commands.add_parser("ingest", help="Beam job: images -> validated TFRecords")
    loader.add_config_arguments(ingest)
    ingest.add_argument("--runner", help="Beam runner, e.g. DataflowRunner (data.beam_runner)")
    ingest.add_argument(
        "--beam-option",
        dest="beam_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Beam pipeline option passed through, e.g. --beam-option project=my-proj "
        "(repeatable; appended to data.beam_options)",
    )
    ingest.set_defaults(handler=cmd_ingest)

    train = commands.add_parser("train", help="train, evaluate and export a run")
    loader.add_config_arguments(train)
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config and dataset, build the model, print both; train nothing",
    )
    train.set_defaults(handler=cmd_train)

    export_parser = commands.add_parser(
        "export", help="convert a run's SavedModel to keras/onnx/tflite, checked for parity"
    )
    export_parser.add_argument("--run", required=True, help="a run folder (runs/<run_id>)")
    export_parser.add_argument(
        "--format",
        default="savedmodel,keras,onnx,tflite",
        help="comma-separated: savedmodel, keras, onnx, tflite (one file per --quantize mode)",
    )
    export_parser.add_argument(
        "--quantize",
        default="none,dynamic_range",
        help="comma-separated TFLite modes: none (float), dynamic_range (int8 weights), float16, "
        "int8 (int8 weights and activations, float32 input and output; calibrated on the "
        "training split)",
    )
    export_parser.add_argument(
        "--representative-images",
        type=int,
        default=200,
        help="training images int8 calibrates its activation ranges on (200)",
    )
    export_parser.add_argument(
        "--accuracy-images",
        type=int,
        default=500,
        help="test images each file's accuracy is measured on, beside the SavedModel's (500)",
    )
    export_parser.set_defaults(handler=cmd_export)
    registry_cli.add_commands(commands)
    evaluator_cli.add_commands(commands)
    tracking_cli.add_commands(commands)
    tuning_cli.add_commands(commands)
    weights_cli.add_commands(commands)
    pipeline_cli.add_commands(commands)
    monitoring_cli.add_commands(commands)

    serve = commands.add_parser("serve", help="TF Serving-compatible REST and gRPC server")
    loader.add_config_arguments(serve)
    serve_source = serve.add_mutually_exclusive_group(required=True)
    serve_source.add_argument("--model-path", help="one model's folder of numbered versions")
    serve_source.add_argument(
        "--model-config-file",
        help="TF Serving models.config (e.g. <store>/models.config): every model, its versions "
        "and labels, re-read every serving.poll_seconds",
    )
    serve.add_argument("--model-name", help="name of --model-path in URLs (serving.model_name)")
    serve.add_argument("--host", help="bind address (default: serving.host)")
    serve.add_argument("--port", type=int, help="REST port (default: serving.port)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (default: serving.grpc_port)")
    serve.add_argument("--no-grpc", action="store_true", help="serve REST only")
    serve.set_defaults(handler=cmd_serve)

    predict = commands.add_parser(
        "predict", help="classify images (files, folders, s3://, gs://) by a server or a model"
    )
    loader.add_config_arguments(predict)
    predict.add_argument(
        "images",
        nargs="+",
        help="image files, folders (recursive) or bucket prefixes such as s3://bucket/prefix "
        "(endpoint and credentials: AWS_ENDPOINT_URL, AWS_* or --set data.storage_options...)",
    )
    predict_target = predict.add_mutually_exclusive_group()
    predict_target.add_argument(
        "--server",
        help="http(s)://host:8501 (REST) or grpc://host:8500 (gRPC) of TF Serving or `imgclf "
        "serve` (default: http://127.0.0.1:8501)",
    )
    predict_target.add_argument(
        "--model-path",
        help="classify in this process, no server: a folder of numbered SavedModel versions "
        "(the newest), a version folder, or a run folder (runs/<id>)",
    )
    predict.add_argument(
        "--model-name", help="model name (default: serving.model_name; local: the folder's)"
    )
    predict_version = predict.add_mutually_exclusive_group()
    predict_version.add_argument("--version", type=int, help="this version (default: the newest)")
    predict_version.add_argument("--label", help="the version with this label, e.g. production")
    predict.add_argument(
        "--batch-size", type=int, default=32, help="images per request (default: 32)"
    )
    predict.add_argument(
        "--top-k", type=int, default=3, help="classes reported per image (default: 3)"
    )
    predict.add_argument(
        "--output", help="results file, .jsonl or .csv (default: one line per image on stdout)"
    )
    predict.add_argument(
        "--format", choices=["jsonl", "csv"], help="results format (default: --output's suffix)"
    )
    predict.add_argument(
        "--timeout", type=float, default=60, help="seconds per request (default: 60)"
    )
    predict.set_defaults(handler=cmd_predict)

    doctor_parser = commands.add_parser(
        "doctor",
        help="versions, devices, mixed precision, XLA and tf.data threading on this machine "
        "(with --config: the config's input pipeline settings)",
    )
    loader.add_config_arguments(doctor_parser)
    doctor_parser.set_defaults(handler=cmd_doctor)

    demo = commands.add_parser(
        "demo", help="digits end to end: data, ingest, train, serve, predict"
    )
    loader.add_config_arguments(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def drop_beam_bigquery_notice(record: logging.LogRecord) -> bool:
    """Beam logs "apitools not found, and bigquery client libraries are not available" on
    import when google-apitools is absent; imgclf never uses BigQuery, so it only confuses."""
    return not record.getMessage().startswith("apitools not found")


def main(argv: list[str] | None = None) -> int:
    argv = console.setup(sys.argv[1:] if argv is None else argv)
    logging.getLogger().addFilter(drop_beam_bigquery_notice)
    args = build_parser().parse_args(argv)
    return errors.exit_on_user_error(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
