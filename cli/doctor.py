"""`imgclf doctor`: what this machine can train with, in words."""

import argparse

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
    doctor_parser = commands.add_parser(
        "doctor",
        help="versions, devices, mixed precision, XLA and tf.data threading on this machine "
        "(with --config: the config's input pipeline settings)",
    )
    loader.add_config_arguments(doctor_parser)
    doctor_parser.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> None:
    cfg = loader.load(args.config, args.overrides) if args.config or args.overrides else None
    from tracking import doctor

    for line in doctor.report(cfg):
        print(line)
