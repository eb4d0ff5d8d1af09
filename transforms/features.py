"""The tf.train.Example contract of ingested shards: feature keys, encoding and parsing."""

import tensorflow as tf

IMAGE = "image/encoded"  # the stored image: original PNG/JPEG bytes or a normalised re-encoding
FORMAT = "image/format"  # lower-case format name, e.g. b"png"
HEIGHT = "image/height"
WIDTH = "image/width"
LABEL = "image/class/label"  # int64 index into the dataset's label map
LABEL_TEXT = "image/class/text"  # the class name, so a shard is readable on its own
SHA256 = "image/sha256"  # hex digest of the original file: the identity for dedupe and splits
SOURCE = "image/source"  # where the file was read from

FEATURE_SPEC = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    LABEL_TEXT: tf.io.FixedLenFeature([], tf.string),
    SHA256: tf.io.FixedLenFeature([], tf.string),
    SOURCE: tf.io.FixedLenFeature([], tf.string),
}

SPLITS = ("train", "val", "test")
SHARD_SUFFIX = ".tfrecord"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_pattern(split: str) -> str:
    return f"{split}-*-of-*{SHARD_SUFFIX}"


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def build_example(
    image: bytes,
    image_format: str,
    height: int,
    width: int,
    label: int,
    label_text: str,
    sha256: str,
    source: str,
) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                IMAGE: _bytes(image),
                FORMAT: _bytes(image_format.encode()),
                HEIGHT: _int(height),
                WIDTH: _int(width),
                LABEL: _int(label),
                LABEL_TEXT: _bytes(label_text.encode()),
                SHA256: _bytes(sha256.encode()),
                SOURCE: _bytes(source.encode()),
            }
        )
    )


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized Example (or a batch) with FEATURE_SPEC."""
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)
