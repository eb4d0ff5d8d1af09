"""`imgclf demo`: the bundled digits end to end (data, pipeline, serve, predict)."""

import argparse
from pathlib import Path

import configs
from configs import loader

DIGITS_CONFIG = Path(configs.__file__).parent / "digits.yaml"


def add_commands(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="digits end to end: data, ingest, train, serve, predict"
    )
    loader.add_config_arguments(demo)
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> None:
    if args.config is None:
        args.config = str(DIGITS_CONFIG)
    cfg = loader.load(args.config, args.overrides)
    from tfx_pipeline import demo

    demo.run(cfg)
