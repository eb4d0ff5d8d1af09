"""The tf.train.Example contract of ingested shards: feature keys, encoding and parsing.

Examples are built with TensorFlow Datasets' copy of the Example proto, which serialises to the
same bytes as tf.train.Example (a test compares them): ingest workers write shards without
loading TensorFlow. Parsing needs TensorFlow and imports it on use.
"""

from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

IMAGE = "image/encoded"  # the stored image: original PNG/JPEG bytes or a normalised re-encoding
FORMAT = "image/format"  # lower-case format name, e.g. b"png"
HEIGHT = "image/height"
WIDTH = "image/width"
LABEL = "image/class/label"  # int64 index into the dataset's label map
LABEL_TEXT = "image/class/text"  # the class name, so a shard is readable on its own
SHA256 = "image/sha256"  # hex digest of the original file: the identity for dedupe and splits
SOURCE = "image/source"  # where the file was read from

SPLITS = ("train", "val", "test")
SHARD_SUFFIX = ".tfrecord"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_pattern(split: str) -> str:
    return f"{split}-*-of-*{SHARD_SUFFIX}"


def _bytes(value: bytes) -> tf_feature_pb2.Feature:
    return tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=[value]))


def _int(value: int) -> tf_feature_pb2.Feature:
    return tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=[value]))


def serialize_example(
    image: bytes,
    image_format: str,
    height: int,
    width: int,
    label: int,
    label_text: str,
    sha256: str,
    source: str,
) -> bytes:
    """One shard record: a serialised tf.train.Example, deterministic so shards reproduce."""
    example = tf_example_pb2.Example(
        features=tf_feature_pb2.Features(
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
    return example.SerializeToString(deterministic=True)


def feature_spec() -> dict:
    """tf.io.parse_single_example's spec of every feature."""
    import tensorflow as tf

    strings = (IMAGE, FORMAT, LABEL_TEXT, SHA256, SOURCE)
    return {
        key: tf.io.FixedLenFeature([], tf.string if key in strings else tf.int64)
        for key in (IMAGE, FORMAT, HEIGHT, WIDTH, LABEL, LABEL_TEXT, SHA256, SOURCE)
    }


def parse(serialized):
    """Parses one serialized Example (or a batch) with feature_spec()."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, feature_spec())
