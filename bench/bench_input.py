"""Input pipeline: images/s of imgclf's tf.data training path beside a Keras baseline and the
machine's raw JPEG decode rate (issue 9).

On the same synthetic JPEGs (generated once, cached under --work, ingested by imgclf's own ingest,
which stores these JPEGs' own bytes):
- imgclf: `transforms.dataset.build_training_dataset` over the ingested TFRecord shards
  (read → shuffle → parse → decode → resize → batch → augment), as the training loop builds it;
- baseline: `keras.utils.image_dataset_from_directory` on the JPEG folder, the same augmenter
  applied with `.map(num_parallel_calls=AUTOTUNE)`, then `.prefetch(AUTOTUNE)`;
- both again without augmentation, which leaves the reading and preprocessing alone;
- imgclf with Inception-style random-resized crop (augment.random_resized_crop, scale
  [0.08, 1], ratio [3/4, 4/3]: JPEGs decode only the box) and a horizontal flip, the training
  input of a photo model, beside the same crop decode on the in-memory bytes;
- raw decode: `tf.io.decode_jpeg` over the encoded bytes held in memory, in a tf.data
  `map(num_parallel_calls=AUTOTUNE, deterministic=False)` (tf.data's thread pool uses every
  core), alone, followed by imgclf's own preprocessing (`preprocess.decode_and_resize` with
  `data.resize: stretch`, as the folder loader fits images: float conversion, bilinear resize,
  antialiased only past a 2x downscale), or by its random-resized crop decode.
  Nothing is read from disk, parsed, shuffled or augmented there.
Each sample builds a fresh pipeline, pulls --warmup batches untimed, then times at least --batches
batches. All eight sides run once per repeat, in turns; figures are medians. The CPU time per image
of each side (less sensitive to other processes than wall time) gives the cost of each stage.
--deterministic turns on op determinism first, as `train.deterministic` does.
Writes bench/results/input.json.
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import report  # beside this script, which Python puts first on sys.path
import synthetic_images
import tensorflow as tf
from harness import arguments, comparison, machine, timing

from configs import loader, schema
from transforms import augment, dataset, dataset_info, features, preprocess, random_crop
from transforms.beam import ingest

RAW_TARGET = 0.8  # the target: imgclf >= 0.8x the raw decode rate
# The augmentation every configs/examples/*.yaml for a pretrained backbone declares.
AUGMENT_LAYERS = [
    {"random_flip": {"mode": "horizontal"}},
    {"random_rotation": {"factor": 0.05}},
    {"random_zoom": {"height_factor": 0.1}},
    {"random_contrast": {"factor": 0.1}},
]
# A photo model's training input: random-resized crop at decode, then a flip.
CROP = schema.RandomResizedCropConfig()
CROP_AUGMENT_LAYERS = [{"random_flip": {"mode": "horizontal"}}]


def build_config(source: Path, out_dir: Path, image_size: int, batch_size: int) -> schema.Config:
    return loader.load(
        None,
        [
            f"data.source={source}",
            f"data.output_dir={out_dir}",
            "data.beam_direct_mode=in_memory",
            "data.split={train: 1.0, val: 0.0, test: 0.0}",
            f"data.image_size=[{image_size}, {image_size}]",
            # What image_dataset_from_directory does, so the sides beside it do the same work.
            "data.resize=stretch",
            "data.channels=3",
            f"data.batch_size={batch_size}",
            f"augment.layers={AUGMENT_LAYERS}",
        ],
    )


def ensure_ingested(cfg: schema.DataConfig, count: int) -> Path:
    """The ingested version of the tree; ingest runs only when no version of it exists yet."""
    if (Path(cfg.output_dir) / "latest").is_file():
        version_dir = Path(dataset_info.resolve_version_dir(cfg.output_dir, "latest"))
        if dataset_info.load(str(version_dir)).get("files_seen") == count:
            print(f"bench: reusing ingested shards in {version_dir}")
            return version_dir
    print(f"bench: ingesting {count} images to {cfg.output_dir}", flush=True)
    started = time.perf_counter()
    result = ingest.run(cfg)
    print(f"bench: ingested in {time.perf_counter() - started:.1f}s")
    return result.path


def describe_stored(version_dir: Path, source: Path) -> dict:
    """What ingest stored: formats, and how many records hold the source file's bytes unchanged
    (then both pipelines decode the very same JPEGs)."""
    formats, unchanged, total = Counter(), 0, 0
    files = dataset.shard_files(version_dir, "train")
    for serialized in tf.data.TFRecordDataset(files).map(features.parse):
        total += 1
        formats[serialized[features.FORMAT].numpy().decode()] += 1
        original = source / serialized[features.SOURCE].numpy().decode()
        stored = serialized[features.IMAGE].numpy()
        unchanged += original.is_file() and stored == original.read_bytes()
    return {
        "records": total,
        "formats": dict(formats),
        "stored_as_source_bytes": unchanged,
        "shards": len(files),
    }


@dataclass(frozen=True)
class Sampling:
    """How much of a pipeline each sample pulls."""

    warmup: int  # untimed batches per sample
    batches: int  # timed batches per sample, at least
    min_seconds: float  # and at least this long, so the fast raw-decode sides time enough work
    batch_size: int


class Side:
    """One pipeline under test: builds a fresh dataset per sample, times it, keeps CPU per image.

    Wall-clock images/s is the figure; CPU milliseconds per image (this process, every thread)
    says where the time goes even when other processes share the cores.
    """

    def __init__(self, build: Callable[[], tf.data.Dataset], sampling: Sampling):
        self.build, self.sampling, self.cpu_ms_per_image = build, sampling, []

    def __call__(self) -> float:
        iterator = iter(self.build())
        for _ in range(self.sampling.warmup):  # tracing, thread start, shuffle-buffer fill
            next(iterator)
        started, cpu_started, batches = time.perf_counter(), time.process_time(), 0
        while batches < self.sampling.batches or (
            time.perf_counter() - started < self.sampling.min_seconds
        ):
            next(iterator)
            batches += 1
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        images = batches * self.sampling.batch_size
        self.cpu_ms_per_image.append(1000 * cpu / images)
        return images / seconds


def build_imgclf(
    version_dir: Path, cfg: schema.Config, augmenter, crop: schema.RandomResizedCropConfig | None
) -> tf.data.Dataset:
    return dataset.build_training_dataset(
        version_dir,
        cfg.data,
        cfg.seed,
        cfg.data.batch_size,
        augmenter=augmenter,
        random_resized_crop=crop,
    )


def build_keras_baseline(source: Path, cfg: schema.Config, augmenter) -> tf.data.Dataset:
    """What a competent Keras user writes: the folder loader, a parallel augment map, prefetch."""
    images = keras.utils.image_dataset_from_directory(
        source,
        image_size=tuple(cfg.data.image_size),
        batch_size=cfg.data.batch_size,
        seed=cfg.seed,
        verbose=False,
    ).repeat()
    if augmenter is None:
        scaled = images.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        scaled = images.map(
            lambda x, y: (augmenter(x / 255.0, training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return scaled.prefetch(tf.data.AUTOTUNE)


def decode_only(data, position):
    image = tf.io.decode_jpeg(data, channels=3)
    # A pixel and the shape: the decode must run, nothing else is copied.
    return tf.cast(image[0, 0, 0], tf.int32) + tf.reduce_sum(tf.shape(image))


def build_raw_decode(encoded: list[bytes], decode, batch_size: int) -> tf.data.Dataset:
    """`decode(bytes, position)` on in-memory bytes, in parallel on every core; batches of
    per-image results."""

    return (
        tf.data.Dataset.from_tensor_slices(encoded)
        .repeat()
        .enumerate()
        .map(
            lambda position, data: decode(data, position),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def measure(sides: dict[str, Side], repeats: int) -> dict[str, list[float]]:
    """Every side once per repeat, in turns, so that drifts of the machine hit all sides."""

    def show(number: int, samples: dict[str, list[float]]) -> None:
        line = ", ".join(f"{name} {values[-1]:.0f}" for name, values in samples.items())
        print(f"bench: repeat {number}/{repeats}: images/s {line}", flush=True)

    return timing.take_turns(sides, repeats, after_round=show)


def stage_costs(cpu_ms: dict[str, float]) -> dict[str, float]:
    """CPU ms per image of each stage, from the differences between sides that add one stage."""
    return {
        "decode_jpeg": cpu_ms["decode"],
        "exif_to_float_and_resize": cpu_ms["decode_resize"] - cpu_ms["decode"],
        "tfrecord_parse_shuffle_batch": cpu_ms["imgclf_noaug"] - cpu_ms["decode_resize"],
        "augment": cpu_ms["imgclf"] - cpu_ms["imgclf_noaug"],
        "imgclf_total": cpu_ms["imgclf"],
        "random_crop_decode_and_resize": cpu_ms["decode_crop"],
        "crop_tfrecord_parse_shuffle_batch_flip": cpu_ms["imgclf_crop"] - cpu_ms["decode_crop"],
        "imgclf_crop_total": cpu_ms["imgclf_crop"],
    }


def build_sides(
    version_dir: Path, source: Path, encoded: list[bytes], cfg: schema.Config, sampling: Sampling
) -> dict[str, Side]:
    """Pairs measured alternately: the full pipelines, the same without augmentation, raw decode,
    the random-resized-crop pipeline and its decode alone.

    Each sample gets a new augmenter, as a new training process would.
    """
    image_size = tuple(cfg.data.image_size)

    def augmenter():
        return augment.build_augmenter(cfg.augment, cfg.seed)

    def flip():
        return augment.build_augmenter(schema.AugmentConfig(layers=CROP_AUGMENT_LAYERS), cfg.seed)

    def decode_and_resize(data, position):
        return preprocess.decode_and_resize(data, image_size, 3, resize=cfg.data.resize)

    crop_settings = CROP.model_dump()  # outside the traced function: AutoGraph can't read it

    def decode_random_crop(data, position):
        seed = tf.stack([tf.constant(cfg.seed, tf.int64), position])
        return random_crop.decode_random_crop(data, seed, image_size, 3, **crop_settings)

    return {
        "imgclf": Side(lambda: build_imgclf(version_dir, cfg, augmenter(), None), sampling),
        "keras": Side(lambda: build_keras_baseline(source, cfg, augmenter()), sampling),
        "imgclf_noaug": Side(lambda: build_imgclf(version_dir, cfg, None, None), sampling),
        "keras_noaug": Side(lambda: build_keras_baseline(source, cfg, None), sampling),
        "decode": Side(
            lambda: build_raw_decode(encoded, decode_only, sampling.batch_size), sampling
        ),
        "decode_resize": Side(
            lambda: build_raw_decode(encoded, decode_and_resize, sampling.batch_size), sampling
        ),
        "imgclf_crop": Side(lambda: build_imgclf(version_dir, cfg, flip(), CROP), sampling),
        "decode_crop": Side(
            lambda: build_raw_decode(encoded, decode_random_crop, sampling.batch_size), sampling
        ),
    }


def build_comparisons(medians: dict[str, float]) -> list[comparison.Comparison]:
    def versus(key, what, imgclf, baseline, baseline_name, **target):
        return comparison.Comparison(
            key=key,
            what=what,
            unit="images/s",
            imgclf=medians[imgclf],
            baseline=medians[baseline],
            baseline_name=baseline_name,
            **target,
        )

    keras_name = "keras.utils.image_dataset_from_directory"
    raw_target = {"target": f">= {RAW_TARGET}x raw decode", "min_ratio": RAW_TARGET}
    return [
        versus(
            "input.images_per_s_vs_keras",
            "training input (augmented) images/s",
            "imgclf",
            "keras",
            f"{keras_name} + same augment map",
            target="ratio > 1.0",
            target_met=medians["imgclf"] > medians["keras"],
        ),
        versus(
            "input.images_per_s_vs_raw_decode",
            "training input (augmented) vs raw decode",
            "imgclf",
            "decode",
            "tf.io.decode_jpeg, all cores, bytes in memory",
            **raw_target,
        ),
        versus(
            "input.noaug_images_per_s_vs_keras",
            "input without augmentation images/s",
            "imgclf_noaug",
            "keras_noaug",
            keras_name,
        ),
        versus(
            "input.noaug_images_per_s_vs_raw_decode_resize",
            "input without augmentation vs raw decode+resize",
            "imgclf_noaug",
            "decode_resize",
            "preprocess.decode_and_resize (decode, float, stretch), all cores, in memory",
        ),
        versus(
            "input.crop_images_per_s_vs_raw_decode",
            "training input (random-resized crop + flip) vs raw decode",
            "imgclf_crop",
            "decode",
            "tf.io.decode_jpeg of the whole file, all cores, bytes in memory",
            **raw_target,
        ),
    ]


def parse_args():
    options = arguments.Options(__doc__, "small counts, about a minute")
    options.add_sized("--images", 3000, 600, "synthetic JPEGs", type=int)
    options.add_sized("--batches", 40, 8, "timed batches per sample, at least", type=int)
    options.add_sized("--min-seconds", 2.0, 1.0, "timed seconds per sample, at least", type=float)
    options.add_sized("--repeats", 3, 2, "samples per side", type=int)
    options.add("--warmup", type=int, default=4, help="untimed batches per sample")
    options.add("--image-size", type=int, default=224, help="square model input side")
    options.add("--source-size", default="320x240", help="synthetic JPEGs' nominal WIDTHxHEIGHT")
    options.add("--batch-size", type=int, default=32)
    options.add("--work", default="/tmp/imgclf-bench-input", help="image/shard cache")
    options.add("--seed", type=int, default=0)
    options.add(
        "--deterministic", action="store_true", help="op determinism, as train.deterministic"
    )
    return options.parse()


def main() -> None:
    args = parse_args()
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    count, repeats = args.images, args.repeats
    sampling = Sampling(args.warmup, args.batches, args.min_seconds, args.batch_size)
    machine.announce()

    work = Path(args.work)
    size = tuple(int(side) for side in args.source_size.split("x"))
    source = synthetic_images.ensure(
        work / f"images-{count}-{size[0]}x{size[1]}", count, seed=args.seed, size=size
    )
    cfg = build_config(source, work / f"tfrecords-{source.name}", args.image_size, args.batch_size)
    version_dir = ensure_ingested(cfg.data, count)
    stored = describe_stored(version_dir, source)
    print(
        f"bench: ingest stored {stored['records']} records as {stored['formats']}, "
        f"{stored['stored_as_source_bytes']} of them the source JPEG's own bytes"
    )
    encoded = [path.read_bytes() for path in sorted(source.glob("class_*/*.jpg"))]
    sides = build_sides(version_dir, source, encoded, cfg, sampling)
    print(
        f"bench: {count} JPEGs ~{size[0]}x{size[1]} -> {args.image_size}x{args.image_size}x3, "
        f"batch {args.batch_size}; per sample {sampling.warmup} untimed + at least "
        f"{sampling.batches} timed batches; {repeats} repeats",
        flush=True,
    )
    samples = measure(sides, repeats)
    medians = timing.medians(samples)
    cpu_ms = timing.medians({name: side.cpu_ms_per_image for name, side in sides.items()})
    stages = stage_costs(cpu_ms)
    print(
        "bench: CPU ms per image by stage: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
    )

    details = {
        "images": count,
        "source_images": f"about {size[0]}x{size[1]} JPEG q{synthetic_images.JPEG_QUALITY}",
        "bytes_per_image_mean": round(float(np.mean([len(e) for e in encoded]))),
        "image_size": [args.image_size, args.image_size],
        "batch_size": args.batch_size,
        "augment": AUGMENT_LAYERS,
        "crop_side": {"random_resized_crop": CROP.model_dump(), "augment": CROP_AUGMENT_LAYERS},
        "timing": asdict(sampling),
        "repeats": repeats,
        "op_determinism": args.deterministic,
        "ingest_stored": stored,
        "raw_decode_method": "tf.data map(num_parallel_calls=AUTOTUNE, deterministic=False) "
        "over the encoded bytes held in memory; tf.data's thread pool spans every core",
        "samples_images_per_s": {k: [round(v, 1) for v in vs] for k, vs in samples.items()},
        "medians_images_per_s": {k: round(v, 1) for k, v in medians.items()},
        "cpu_ms_per_image": {k: round(v, 3) for k, v in cpu_ms.items()},
        "cpu_ms_per_image_by_stage": {k: round(v, 3) for k, v in stages.items()},
    }
    report.write_results("input", build_comparisons(medians), details)


if __name__ == "__main__":
    main()
