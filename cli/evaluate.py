"""`imgclf evaluate`: metrics, charts, report and blessing of any exported model on test data."""

import argparse
import copy
import logging

from configs import loader, schema

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")  # transforms.features.SPLITS, without importing TensorFlow


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `evaluate` to the `imgclf` sub-commands."""
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a SavedModel on labelled images: metrics, charts, report.html, "
        "blessing.json",
    )
    evaluate.add_argument(
        "--model-path",
        required=True,
        help="a run folder (its newest export), an export folder, a SavedModel version folder, "
        "or registry:<model>@<label> (e.g. registry:digits@production)",
    )
    evaluate.add_argument(
        "--test-data",
        help="a class folder, a .csv/.jsonl manifest, an archive, s3:// or gs:// (as data.source "
        "takes), or a dataset version folder / version id written by `imgclf ingest` "
        "(default: the dataset the model was trained on)",
    )
    evaluate.add_argument(
        "--split",
        default="test",
        choices=SPLITS,
        help="split of a dataset version or a pre-split source (default: test)",
    )
    evaluate.add_argument(
        "--out",
        help="output folder (default: the run folder when evaluating a run on its own "
        "dataset's test split, the run's own record; <run>/evaluations/<timestamp>-<data>/ for "
        "a run on other data or another split, so that record is never overwritten; "
        "./evaluation-<model>-<timestamp>/ for a model outside any run)",
    )
    evaluate.add_argument(
        "--baseline",
        help="compare with this model on the same images (default: evaluation.gate.baseline, "
        "auto = the production version of pipeline.push.model or serving.model_name)",
    )
    evaluate.add_argument(
        "--tta",
        choices=("none", "flip"),
        help="test-time augmentation, as --set evaluation.tta=...: flip averages the scores of "
        "each image and its horizontal mirror",
    )
    loader.add_config_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from evaluator import models, run

    overrides = [*args.overrides, *([f"evaluation.tta={args.tta}"] if args.tta else [])]
    cfg = loader.load(args.config, overrides)
    source = models.resolve(args.model_path, cfg.registry.store)
    if args.config is None:
        # Without --config the model's own resolved config applies (its gate included).
        cfg = model_config(source.metadata.get("config"), overrides) or cfg
    result = run.evaluate(cfg, source, args.test_data, args.split, args.out, args.baseline)
    print(result.line())


def model_config(saved: dict | None, overrides: list[str]) -> schema.Config | None:
    """The config saved with a model, with `overrides` applied; None when there is none or it
    no longer validates (a model exported before a schema change)."""
    if not saved:
        return None
    raw = copy.deepcopy(saved)
    for override in overrides:
        loader.apply_override(raw, override)
    try:
        return loader.validate(raw)
    except loader.ConfigError as error:
        logger.warning("the model's saved config does not validate (%s); using defaults", error)
        return None
