"""Inference speed of every export format on this CPU: the SavedModel beside ONNX and TFLite
(float, dynamic range, float16, int8).

The model is the serving benchmark's (serving_model.py): MobileNetV2 at 224x224x3 with random
weights and a 10-class head, exported with artifacts.export and converted by artifacts.convert as
`imgclf export --format onnx,tflite --quantize none,dynamic_range,float16,int8` does. Random
weights have no training data, so int8 calibrates on --calibration-images seeded noise images,
and parity (recorded, not required) is measured on noise, where an untrained model's near ties
flip under quantisation.

Every format runs in this process on float pixels through `predict_images`: one image per call
(p50 and p99 over --repeats calls) and batches of 32 (images/s, median of --batches). Formats take
turns in rounds, so slow drifts of a shared machine spread over all of them. Threads: TFLite
with its default XNNPACK delegate and num_threads = the CPU count; onnxruntime with
intra_op_num_threads = the CPU count; TensorFlow with its defaults (a pool per CPU).
Baseline: the SavedModel's `predict_images` signature; ratio = times faster than it.
Writes bench/results/formats.json.

    .venv/bin/python bench/bench_formats.py [--quick] [--formats savedmodel,tflite_int8]

--quick measures the SavedModel and int8 only, with few calls: converting
MobileNetV2 takes 10-15 s per format on 2 cores, so all six would not fit a smoke run.
"""

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import report  # beside this script, which Python puts first on sys.path
import serving_model
import tensorflow as tf
from harness import arguments, comparison, machine, timing

from artifacts import convert, parity
from core import signatures

BASELINE = "savedmodel"
QUANTIZED = ("dynamic_range", "float16", "int8")
FORMATS = (BASELINE, "onnx", "tflite", *(f"tflite_{mode}" for mode in QUANTIZED))
QUICK_FORMATS = (BASELINE, "tflite_int8")
BATCH = 32
ROUNDS = 5
PARITY_IMAGES = 16


def convert_all(
    names: list[str], version_dir: Path, work: Path, calibration_images: int
) -> dict[str, dict]:
    """{format: {"path", "convert_s"}} for each of `names` but the SavedModel itself."""
    rng = np.random.default_rng(1)
    representative = rng.random((calibration_images, *serving_model.IMAGE_SHAPE), np.float32)
    converted = {}
    for name in names:
        if name == BASELINE:
            continue
        started = time.perf_counter()
        if name == "onnx":
            path = convert.to_onnx(version_dir, work / "model.onnx")
        else:
            mode = name.removeprefix("tflite").removeprefix("_") or "none"
            path = convert.to_tflite(version_dir, work / f"{name}.tflite", mode, representative)
        converted[name] = {"path": path, "convert_s": round(time.perf_counter() - started, 1)}
        print(f"bench: {name} converted in {converted[name]['convert_s']} s", flush=True)
    return converted


def build_runner(name: str, version_dir: Path, path: Path | None, threads: int):
    """run(images) -> scores, through `name`'s runtime; compiled for one batch size on first use."""
    if name == BASELINE:
        signature = tf.saved_model.load(str(version_dir)).signatures[signatures.PREDICT_IMAGES]
        return lambda images: signature(**{signatures.IMAGES: tf.constant(images)})[
            signatures.SCORES
        ].numpy()
    if name == "onnx":
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        return lambda images: session.run(None, {signatures.IMAGES: images})[0]
    runner = parity.tflite_interpreter(path, num_threads=threads).get_signature_runner(
        signatures.PREDICT_IMAGES
    )
    return lambda images: runner(**{signatures.IMAGES: images})[signatures.SCORES]


def measure(runners: dict, repeats: int, batches: int) -> dict[str, dict]:
    """Latency of one image and of one batch per format, its samples taken in turns."""
    rng = np.random.default_rng(0)
    one = rng.random((1, *serving_model.IMAGE_SHAPE), np.float32)
    batch = rng.random((BATCH, *serving_model.IMAGE_SHAPE), np.float32)
    for single, batched in runners.values():  # warm-up: tracing, allocation, delegates
        single(one)
        batched(batch)
    ones, batches_per_round = -(-repeats // ROUNDS), -(-batches // ROUNDS)

    def side(single, batched):
        def take() -> tuple[list[float], list[float]]:
            return (
                [timing.elapsed_ms(lambda: single(one)) for _ in range(ones)],
                [timing.elapsed_ms(lambda: batched(batch)) for _ in range(batches_per_round)],
            )

        return take

    rounds = timing.take_turns(
        {name: side(*pair) for name, pair in runners.items()},
        ROUNDS,
        after_round=lambda number, _: print(f"bench: round {number}/{ROUNDS} done", flush=True),
    )
    figures = {}
    for name, taken in rounds.items():
        one_ms = [ms for single, _ in taken for ms in single]
        batch_ms = statistics.median(ms for _, batched in taken for ms in batched)
        figures[name] = {
            **timing.latency(one_ms),
            "batch_ms": round(batch_ms, 1),
            "images_per_s": round(BATCH * 1000 / batch_ms, 1),
            "samples": len(one_ms),
        }
    return figures


def comparisons(figures: dict[str, dict]) -> list[comparison.Comparison]:
    base = figures[BASELINE]
    found = []
    for name in list(figures)[1:]:
        ours = figures[name]
        for stat, what in (("p50_ms", "1 image, p50"), ("p99_ms", "1 image, p99")):
            found.append(
                comparison.Comparison(
                    key=f"formats.{name}.{stat}.b1",
                    what=f"{name}: {what}",
                    unit="ms",
                    imgclf=ours[stat],
                    baseline=base[stat],
                    baseline_name="SavedModel predict_images",
                    higher_is_better=False,
                )
            )
        found.append(
            comparison.Comparison(
                key=f"formats.{name}.images_per_s.b{BATCH}",
                what=f"{name}: batches of {BATCH}",
                unit="images/s",
                imgclf=ours["images_per_s"],
                baseline=base["images_per_s"],
                baseline_name="SavedModel predict_images",
            )
        )
    return found


def print_table(figures: dict[str, dict], files: dict[str, dict]) -> None:
    base = figures[BASELINE]
    print(
        f"\n{'format':22}{'MB':>7}{'p50 ms':>8}{'p99 ms':>8}{'img/s b32':>11}"
        f"{'x p50':>7}{'x b32':>7}{'top-1 agree':>13}"
    )
    for name, row in figures.items():
        file = files[name]
        agreement = file.get("top1_agreement")
        print(
            f"{name:22}{file['size_bytes'] / 1e6:7.1f}{row['p50_ms']:8.1f}{row['p99_ms']:8.1f}"
            f"{row['images_per_s']:11.1f}{base['p50_ms'] / row['p50_ms']:7.2f}"
            f"{row['images_per_s'] / base['images_per_s']:7.2f}"
            + (f"{agreement:13.0%}" if agreement is not None else f"{'-':>13}")
        )


def parse_args():
    options = arguments.Options(__doc__, f"a smoke run: few calls, {','.join(QUICK_FORMATS)}")
    options.add_sized("--repeats", 200, 20, "1-image calls per format", type=int)
    options.add_sized("--batches", 20, 5, "batch-32 calls per format", type=int)
    options.add_sized("--calibration-images", 100, 8, "noise images int8 calibrates on", type=int)
    options.add_sized(
        "--formats", ",".join(FORMATS), ",".join(QUICK_FORMATS), "comma-separated formats"
    )
    args = options.parse()
    chosen = arguments.subset(options.parser, args.formats, FORMATS, "format")
    if BASELINE not in chosen:
        options.parser.error(f"--formats must include {BASELINE}, the baseline")
    args.formats = [name for name in FORMATS if name in chosen]
    return args


def main() -> None:
    args = parse_args()
    names = args.formats
    threads = machine.usable_cpus()
    machine.announce()

    work = Path(tempfile.mkdtemp(prefix="imgclf-bench-formats-"))
    version_dir = serving_model.export_model(serving_model.build_model(), work)
    converted = convert_all(names, version_dir, work, args.calibration_images)
    parity_images = parity.build_parity_images(version_dir, PARITY_IMAGES)
    expected = parity.saved_model_outputs(version_dir, parity_images)
    files = {BASELINE: {"size_bytes": parity.saved_model_size(version_dir)}}
    for name, item in converted.items():
        verdict = parity.check_parity(version_dir, item["path"], parity_images, None, expected)
        files[name] = {
            "size_bytes": verdict["size_bytes"],
            "convert_s": item["convert_s"],
            "quantize": verdict["quantize"],
            "max_abs_diff": verdict["max_abs_diff"],
            "top1_agreement": verdict["top1_agreement"],
        }

    runners = {
        name: tuple(
            build_runner(name, version_dir, converted.get(name, {}).get("path"), threads)
            for _ in ("one", "batch")  # one runner per batch size: no re-allocation per call
        )
        for name in names
    }
    figures = measure(runners, args.repeats, args.batches)
    print_table(figures, files)
    details = {
        "model": {"backbone": "mobilenet_v2", "weights": "random", "input": [224, 224, 3]},
        "threads": {
            "tflite": f"num_threads={threads}, default XNNPACK delegate",
            "onnxruntime": f"intra_op_num_threads={threads}, CPUExecutionProvider",
            "tensorflow": "defaults",
        },
        "settings": {
            "repeats": args.repeats,
            "batches": args.batches,
            "batch": BATCH,
            "calibration_images": args.calibration_images,
            "calibration_data": "seeded uniform noise",
            "quick": args.quick,
        },
        "load_average_after": machine.load_average()[0],
        "figures": figures,
        "files": files,
        "parity_images": f"{PARITY_IMAGES} seeded noise images",
    }
    report.write_results("formats", comparisons(figures), details)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
