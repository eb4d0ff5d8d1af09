"""A benchmark's command line: --quick, the settings whose full and quick values differ, and
comma-separated subsets of named things (benchmarks, contenders, formats)."""

import argparse
from collections.abc import Sequence


class Options:
    """An argument parser with --quick, whose sized settings take the value given on the
    command line, else their --quick value under --quick, else their full value."""

    def __init__(self, description: str, quick_help: str):
        self.parser = argparse.ArgumentParser(
            description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        self.parser.add_argument("--quick", action="store_true", help=quick_help)
        self.sized: dict[str, tuple[object, object]] = {}

    def add(self, *flags: str, **settings) -> None:
        """A setting with one default, as ArgumentParser.add_argument takes it."""
        self.parser.add_argument(*flags, **settings)

    def add_sized(self, flag: str, full: object, quick: object, help: str, **settings) -> None:
        """A setting that is `full` in a full run and `quick` in a --quick one."""
        action = self.parser.add_argument(
            flag,
            default=None,
            help=f"{help} (default {shown(full)}; --quick {shown(quick)})",
            **settings,
        )
        self.sized[action.dest] = (full, quick)

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        args = self.parser.parse_args(argv)
        for dest, (full, quick) in self.sized.items():
            if getattr(args, dest) is None:
                setattr(args, dest, quick if args.quick else full)
        return args


def shown(value: object) -> str:
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def subset(
    parser: argparse.ArgumentParser, value: str | None, known: Sequence[str], what: str
) -> list[str]:
    """The names of a comma-separated option, in the order given (every known name when it was
    not given); an unknown name is a usage error that lists the known ones."""
    names = value.split(",") if value else list(known)
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names
