"""`imgclf tune`: a hyperparameter search over config keys, from the shell."""

import argparse

from configs import loader


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `tune` to the `imgclf` sub-commands."""
    tune = commands.add_parser(
        "tune",
        help="search config keys with KerasTuner (tuning section); every trial is a run",
        description="Runs the search declared in the config's tuning section. Each trial "
        "trains as a run <search>-trial-<id> under train.runs_dir; the search ends with a "
        "ranked table, search.png and best.yaml in tuning.directory. A search found there is "
        "resumed (completed trials are not run again). KERASTUNER_TUNER_ID, "
        "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT make it a distributed search.",
    )
    loader.add_config_arguments(tune)
    start = tune.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue the search in tuning.directory; an error when there is none "
        "(default: continue one if found, else start)",
    )
    start.add_argument(
        "--overwrite",
        action="store_true",
        help="start over: delete the search's state and its trial runs first (chief only)",
    )
    tune.set_defaults(handler=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> None:
    cfg = loader.load(args.config, args.overrides)
    # Here: the search imports TensorFlow and KerasTuner, which other commands never need.
    from trainer.tuning import search

    mode = "resume" if args.resume else "overwrite" if args.overwrite else "auto"
    search.run(cfg, mode)
