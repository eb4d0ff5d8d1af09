"""`imgclf train`: the whole flow of tfx_pipeline/flow.py (train, export, evaluate, record)."""

import argparse

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train, evaluate and export a run")
    loader.add_config_arguments(train)
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config and dataset, build the model, print both; train nothing",
    )
    train.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    cfg = loader.load(args.config, args.overrides)
    from tfx_pipeline import flow

    flow.run(cfg, dry_run=args.dry_run)
