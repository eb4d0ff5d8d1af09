"""`imgclf serve`: the TF Serving-compatible REST and gRPC server."""

import argparse

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="TF Serving-compatible REST and gRPC server")
    loader.add_config_arguments(serve)
    serve_source = serve.add_mutually_exclusive_group(required=True)
    serve_source.add_argument(
        "--model-path",
        help="one model's folder of numbered versions, or a run folder (runs/<id>: its export/)",
    )
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
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="uvicorn's log level: info (default) logs every request; warning only problems",
    )
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    cfg = loader.load(args.config, args.overrides)
    serving_cfg = cfg.serving
    for key in ("model_name", "host", "port", "grpc_port"):
        if getattr(args, key) is not None:
            setattr(serving_cfg, key, getattr(args, key))
    if args.no_grpc:
        serving_cfg.grpc_port = None
    from serving.server import server

    server.serve(serving_cfg, args.model_path, args.model_config_file, args.log_level)
