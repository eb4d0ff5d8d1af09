"""`imgclf export`: a run's SavedModel as keras, ONNX and TFLite files, checked for parity."""

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    export_parser = commands.add_parser(
        "export", help="convert a run's SavedModel to keras/onnx/tflite, checked for parity"
    )
    export_parser.add_argument("--run", required=True, help="a run folder (runs/<run_id>)")
    export_parser.add_argument(
        "--format",
        default="savedmodel,keras,onnx,tflite",
        help="comma-separated: savedmodel, keras, onnx, tflite (one file per --quantize mode)",
    )
    export_parser.add_argument(
        "--quantize",
        default="none,dynamic_range",
        help="comma-separated TFLite modes: none (float), dynamic_range (int8 weights), float16, "
        "int8 (int8 weights and activations, float32 input and output; calibrated on the "
        "training split)",
    )
    export_parser.add_argument(
        "--representative-images",
        type=int,
        default=200,
        help="training images int8 calibrates its activation ranges on (200)",
    )
    export_parser.add_argument(
        "--accuracy-images",
        type=int,
        default=500,
        help="test images each file's accuracy is measured on, beside the SavedModel's (500)",
    )
    export_parser.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> None:
    from artifacts import formats

    out, results = formats.export_run(
        args.run,
        formats.parse_formats(args.format),
        formats.parse_quantize(args.quantize),
        args.representative_images,
        args.accuracy_images,
    )
    for line in formats.format_table(results):
        print(f"  {line}")
    checked = ", ".join(
        f"{Path(r['converted']).name} (max diff {r['max_abs_diff']:.1e}, "
        f"top-1 {r['top1_agreement']:.0%})"
        for r in results
    )
    print(f"export: {len(results)} file(s) match the SavedModel in {out}: {checked or 'none'}")
