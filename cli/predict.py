"""`imgclf predict`: classify files, folders and buckets through a server or a local model."""

import argparse
import sys

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
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
        help="http(s)://host:8501 (REST) or grpc(s)://host:8500 (gRPC) of TF Serving or "
        "`imgclf serve` (default: http://127.0.0.1:8501); a private CA: SSL_CERT_FILE",
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


def cmd_predict(args: argparse.Namespace) -> None:
    cfg = loader.load(args.config, args.overrides)
    from serving import predict

    name = args.model_name or (None if args.model_path else cfg.serving.model_name)
    # The server's own serving.auth setting names the token its clients send.
    token = None
    if args.model_path is None and cfg.serving.auth.enabled:
        from serving.server import auth

        token = auth.load_token(cfg.serving.auth)
    target = predict.open_target(
        args.server, args.model_path, name, args.version, args.label, args.timeout, token
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
