"""`imgclf config show`: the resolved config, as a run would use it."""

import argparse

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser("config", help="inspect configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_commands.add_parser("show", help="print the resolved config")
    loader.add_config_arguments(show)
    show.set_defaults(handler=cmd_config_show)


def cmd_config_show(args: argparse.Namespace) -> None:
    print(loader.to_yaml(loader.load(args.config, args.overrides)), end="")
