"""The `imgclf` command: its parser, assembled from one module per command (each adds its
sub-commands and handlers), and the entry point that turns a user's mistake into one line."""

import argparse
import logging
import sys

from cli import (
    config,
    data,
    demo,
    doctor,
    evaluate,
    export,
    ingest,
    monitor,
    pipeline,
    predict,
    registry,
    runs,
    serve,
    train,
    tune,
    weights,
)
from core import console, errors

# In the order `imgclf --help` lists them.
COMMANDS = [config, data, ingest, train, export, registry, evaluate, runs, tune, weights, pipeline]
COMMANDS += [monitor, serve, predict, doctor, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclf", description="Image classification pipeline.")
    # For --help: console.setup takes --verbose out of the arguments, wherever it stands.
    parser.add_argument(
        console.VERBOSE_FLAG,
        action="store_true",
        help=f"show TensorFlow's native log lines (also {console.VERBOSE_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_commands(commands)
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
