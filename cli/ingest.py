"""`imgclf ingest`: the Beam job from images to validated TFRecords and dataset.json."""

import argparse

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
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
        f"{info['duplicates']} duplicates, {info['quarantined']} quarantined -> {result.location}"
    )
