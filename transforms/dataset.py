"""tf.data input pipelines from ingested TFRecord shards, for training and evaluation."""

import functools
import os
from pathlib import Path

import keras
import tensorflow as tf

from configs import schema
from transforms import augment, features, preprocess, random_crop

# Folded into (seed, stream) for per-example crop draws, so they are not the per-batch draws
# augment_batches folds batch numbers into for the same (seed, stream).
CROP_DRAWS = 0x63726F70  # "crop"


def shard_files(version_dir: str | Path, split: str) -> list[str]:
    return sorted(tf.io.gfile.glob(os.path.join(version_dir, features.shard_pattern(split))))


def build_decoder(cfg: schema.DataConfig):
    """Serialized Example -> (float32 image in [0, 1], int64 label) via transforms.preprocess,
    fitted to image_size as data.resize and data.crop_fraction say."""
    return _decoder(
        tuple(cfg.image_size), cfg.channels, tuple(cfg.background), cfg.resize, cfg.crop_fraction
    )


@functools.lru_cache(maxsize=8)
def _decoder(
    image_size: tuple[int, int],
    channels: int,
    background: tuple[int, int, int],
    resize: str,
    crop_fraction: float,
):
    # Traced once per settings: tracing the decode graph costs 0.4-2 s, and a run builds
    # pipelines many times (each epoch, validation, the TensorBoard grid, evaluation).
    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(serialized):
        example = features.parse(serialized)
        image = preprocess.decode_and_resize(
            example[features.IMAGE],
            image_size,
            channels,
            background,
            resize,
            crop_fraction,
            stored=True,
        )
        return image, example[features.LABEL]

    return decode


def build_random_crop_decoder(cfg: schema.DataConfig, crop: schema.RandomResizedCropConfig):
    """(seed int64 [2], serialized Example) -> (float32 image in [0, 1], int64 label): a random
    box of the image (transforms.random_crop), stretched to image_size."""
    return _random_crop_decoder(
        tuple(cfg.image_size),
        cfg.channels,
        tuple(crop.scale),
        tuple(crop.ratio),
        crop.attempts,
    )


@functools.lru_cache(maxsize=8)
def _random_crop_decoder(
    image_size: tuple[int, int],
    channels: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int,
):
    @tf.function(input_signature=[tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.string)])
    def decode(seed, serialized):
        example = features.parse(serialized)
        image = random_crop.decode_random_crop(
            example[features.IMAGE], seed, image_size, channels, scale, ratio, attempts
        )
        return image, example[features.LABEL]

    return decode


def augment_batches(
    dataset: tf.data.Dataset,
    augmenter: keras.Sequential,
    seed: int,
    stream: int = 0,
    first_batch: int = 0,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Augments (images, labels) batches in parallel; batch k's random draws come from
    (seed, stream, first_batch + k) alone. With MixUp or CutMix the labels come out as float
    one-hot targets [batch, classes], mixed like the images.

    Stateless, so that tf.data keeps every stage parallel and prefetched under op determinism
    (a Keras seed variable in the pipeline makes it run it all sequentially) and a batch is
    augmented the same whichever thread runs it, or whether its epoch was resumed.
    """
    base = tf.constant([seed, stream], tf.int64)

    def augment_one(position, batch):
        images, labels = batch
        batch_seed = tf.random.experimental.stateless_fold_in(base, position)
        # Labels go through too: MixUp and CutMix turn them into mixed one-hot targets.
        return augment.augment_batch(augmenter, images, batch_seed, labels)

    return dataset.enumerate(start=first_batch).map(
        augment_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )


def build_dataset(
    version_dir: str | Path,
    split: str,
    cfg: schema.DataConfig,
    training: bool,
    seed: int = 0,
    augmenter: keras.Layer | None = None,
    num_examples: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1], int64 labels) from one split's shards.

    Training reads shards in parallel and out of order, shuffles, and augments per batch;
    evaluation reads in a fixed order so predictions line up with the files. `num_examples`
    (from dataset.json) gives the pipeline a known length, so Keras sizes epochs and bars.
    """
    files = shard_files(version_dir, split)
    if not files:
        raise FileNotFoundError(f"no {split} shards in {version_dir}")
    decode = build_decoder(cfg)

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training,
    )
    if training and cfg.shuffle_buffer > 1:
        dataset = dataset.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    dataset = dataset.batch(cfg.batch_size)
    if num_examples is not None:
        batches = -(-num_examples // cfg.batch_size)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    if training and augmenter is not None:
        dataset = augment_batches(dataset, augmenter, seed, deterministic=False)
    return dataset.prefetch(tf.data.AUTOTUNE)


def build_training_dataset(
    version_dir: str | Path,
    cfg: schema.DataConfig,
    seed: int,
    micro_batch_size: int,
    accumulation_steps: int = 1,
    augmenter: keras.Layer | None = None,
    shard: tuple[int, int] = (1, 0),
    skip_batches: int = 0,
    random_resized_crop: schema.RandomResizedCropConfig | None = None,
) -> tf.data.Dataset:
    """Endless training batches for one input pipeline of the training loop.

    `seed` changes every epoch (the loop passes seed + epoch), so epochs see different orders and a
    resumed epoch the same one. `shard = (count, index)` gives this pipeline every count-th example
    of that fixed order, so each example is trained on by exactly one pipeline. With accumulation,
    batches have a leading axis of `accumulation_steps` micro-batches. `random_resized_crop`
    (augment.random_resized_crop) decodes a random box of each image instead of data.resize's fit;
    an example's box comes from (seed, index, its position in the epoch) alone.
    """
    files = shard_files(version_dir, "train")
    if not files:
        raise FileNotFoundError(f"no train shards in {version_dir}")
    count, index = shard

    # One file order for every pass of the endless stream: a new order per pass would change
    # which records dataset.shard gives each pipeline, and shares would overlap after a pass.
    dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(
        len(files), seed=seed, reshuffle_each_iteration=False
    )
    # Deterministic throughout: a resumed epoch skips exactly the batches it already trained on.
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if count > 1:
        # Every count-th record of one fixed order (same seed everywhere): equal, disjoint shares
        # even when shards hold different numbers of examples; only the share is decoded.
        dataset = dataset.shard(count, index)
    if cfg.shuffle_buffer > 1:
        dataset = dataset.shuffle(cfg.shuffle_buffer, seed=seed)
    dataset = dataset.repeat()
    if random_resized_crop is None:
        decode = build_decoder(cfg)
    else:
        # Numbered before the skip below, so a resumed epoch crops each example as before.
        dataset = dataset.enumerate()
        decode = _seeded_by_position(
            build_random_crop_decoder(cfg, random_resized_crop), seed, stream=index
        )
    # Skip records, not batches: a resumed epoch decodes and augments nothing it then drops.
    # The stream is endless and batches drop no remainder, so batch boundaries stay where they
    # were and the next batch is the one the interrupted run would have trained on.
    skipped_micro_batches = skip_batches * accumulation_steps
    dataset = dataset.skip(skipped_micro_batches * micro_batch_size)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(micro_batch_size, drop_remainder=True)
    if augmenter is not None:
        # Numbered from the epoch's start and per pipeline, so a resumed epoch repeats the
        # augmentation too and pipelines do not share random draws.
        dataset = augment_batches(
            dataset, augmenter, seed, stream=index, first_batch=skipped_micro_batches
        )
    if accumulation_steps > 1:
        dataset = dataset.batch(accumulation_steps, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _seeded_by_position(decode, seed: int, stream: int):
    """(position, serialized) -> decode(seed of that position, serialized)."""
    base = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, stream], tf.int64), CROP_DRAWS
    )

    def decode_at(position, serialized):
        return decode(tf.random.experimental.stateless_fold_in(base, position), serialized)

    return decode_at
