"""`imgclf weights fetch`: puts a backbone's ImageNet weights in the Keras cache ahead of time
(e.g. in an image build), from Keras' origin or a mirror."""

import argparse
from pathlib import Path

from configs import schema
from core import errors


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `weights` and its `fetch` action to the `imgclf` sub-commands."""
    weights_parser = commands.add_parser("weights", help="pretrained backbone weights")
    actions = weights_parser.add_subparsers(dest="weights_action", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="download a backbone's no-top ImageNet weights into the Keras cache",
        description="Downloads (progress bar; Keras' file hash where it has one) and checks "
        "the file model.weights: imagenet loads, into $KERAS_HOME/models (default "
        "~/.keras/models). A file already there is kept.",
    )
    fetch.add_argument("backbone", help=f"one of {', '.join(schema.BACKBONE_NAMES)}")
    fetch.add_argument(
        "--image-size",
        type=int,
        default=224,
        metavar="N",
        help="the data.image_size side the model trains at (N x N; default 224): mobilenet_v2 "
        "has weights per resolution (96, 128, 160, 192, 224; other sizes use 224's)",
    )
    fetch.add_argument(
        "--mirror",
        help="base URL standing for Keras' keras-applications/ folder, or a local folder "
        "(default: $IMGCLF_WEIGHTS_MIRROR, else Keras' storage.googleapis.com)",
    )
    fetch.set_defaults(handler=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> None:
    if args.backbone not in schema.BACKBONE_NAMES:
        raise errors.UserError(
            f"weights fetch: unknown backbone {args.backbone!r}; accepted: "
            f"{', '.join(schema.BACKBONE_NAMES)}"
        )
    smallest = schema.BACKBONES[args.backbone].min_side
    if args.image_size < smallest:
        raise errors.UserError(
            f"weights fetch: {args.backbone} needs --image-size {smallest} or more "
            f"(received {args.image_size})"
        )
    # Here: the fetch imports TensorFlow and Keras, which `imgclf --help` never needs.
    from trainer import models

    size = (args.image_size, args.image_size)
    path = Path(models.resolve_weights(args.backbone, "imagenet", size, args.mirror))
    print(f"weights fetch: {args.backbone} ImageNet weights {path.name} in {path.parent}")
