"""The front door: the `imgclf` command, one module per command, each calling the same library
functions as the rest of imgclf (`python -m trainer.task` runs the flow `imgclf train` runs)."""

from cli.app import build_parser, main

__all__ = ["build_parser", "main"]
