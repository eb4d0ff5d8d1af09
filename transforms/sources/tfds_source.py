"""TFDS datasets already in the TFDS data dir: `tfds:<name>[:<version>][:<split>]`.

Ingest never downloads one. One unit per split (all the builder's splits by default). Images come
from the first Image feature, encoded as PNG, and labels are the names of the first ClassLabel
feature. TFDS's train/validation/test (also sliced, as in `train[:10%]`) map to our
train/val/test; any other split (say `unlabelled` or `train+test`) gets None, a split assigned by
content. The data dir is TFDS's own: `TFDS_DATA_DIR`
or ~/tensorflow_datasets.
"""

import re
from collections.abc import Iterator
from typing import Any

from configs import schema
from transforms.sources import base

PREFIX = "tfds:"
# name (may hold "/config"), optional version, optional split (may hold ":" as in train[:10%]).
SOURCE_PATTERN = re.compile(r"^(?P<name>[^:]+)(?::(?P<version>\d+\.\d+\.\d+))?(?::(?P<split>.+))?$")
SPLIT_MAP = {"train": "train", "validation": "val", "test": "test"}


def parse(source: str) -> tuple[str, str | None]:
    """("mnist" or "mnist:3.0.1", split or None) of `tfds:<name>[:<version>][:<split>]`."""
    match = SOURCE_PATTERN.match(source.removeprefix(PREFIX).strip())
    if not source.startswith(PREFIX) or not match:
        raise base.SourceError(
            f"data.source {source!r} is not a TFDS source (expected tfds:<name>[:<split>], "
            "e.g. tfds:mnist or tfds:mnist:train)"
        )
    name = match["name"] + (f":{match['version']}" if match["version"] else "")
    return name, match["split"]


def our_split(tfds_split: str) -> str | None:
    """train/val/test for TFDS's train/validation/test, also sliced (`train[:10%]`); else None."""
    return SPLIT_MAP.get(re.sub(r"\[[^\]]*\]$", "", tfds_split.strip()))


def _tfds() -> Any:
    # Imported on use: tensorflow_datasets is slow to import and most sources never need it.
    import tensorflow_datasets

    return tensorflow_datasets


def _builder(name: str) -> Any:
    """The prepared builder of `name`; SourceError when it is unknown or not downloaded."""
    tfds = _tfds()
    try:
        builder = tfds.builder(name)
    except tfds.core.registered.DatasetNotFoundError as error:
        # The message goes on to list every dataset TFDS knows; its first line is enough.
        first_line = str(error).strip().splitlines()[0]
        raise base.SourceError(
            f"TFDS has no dataset {name!r} ({first_line}); see `tfds.list_builders()` for names"
        ) from None
    except Exception as error:  # noqa: BLE001 - builders raise anything on a bad name or config
        raise base.SourceError(f"TFDS dataset {name!r} cannot be loaded: {error}") from error
    if not builder.is_prepared():
        # A download from a Beam worker would be slow, repeated and often impossible (no network).
        raise base.SourceError(
            f"TFDS data for {name!r} is not in the TFDS data dir (looked in {builder.data_dir}); "
            "ingest "
            f"never downloads, so the data must already be there: run `tfds build {name}` "
            "(with TFDS_DATA_DIR set to the data dir) first, or copy the prepared files there"
        )
    return builder


def _feature_keys(builder: Any, name: str) -> tuple[str, str]:
    """(image feature key, label feature key): the first Image and the first ClassLabel."""
    features = _tfds().features
    items = list(builder.info.features.items())
    image = next((key for key, f in items if isinstance(f, features.Image)), None)
    label = next((key for key, f in items if isinstance(f, features.ClassLabel)), None)
    if image is None or label is None:
        raise base.SourceError(
            f"TFDS dataset {name!r} needs an Image and a ClassLabel feature to be an image "
            f"classification dataset (received features {[key for key, _ in items]})"
        )
    return image, label


def list_units(cfg: schema.DataConfig) -> list[base.ReadUnit]:
    """One "tfds" unit per split; checks the data is present without reading any example."""
    name, split = parse(cfg.source)
    builder = _builder(name)
    _feature_keys(builder, name)
    known = sorted(builder.info.splits)
    if split is None:
        splits = known
        if not splits:
            raise base.SourceError(
                f"TFDS dataset {name!r} in {builder.data_dir} lists no splits; name one "
                f"(tfds:{name}:<split>)"
            )
    else:
        # "train[:10%]" and "train+test" are TFDS split expressions over the known splits.
        bases = re.split(r"[+]", re.sub(r"\[[^\]]*\]", "", split))
        unknown = [part for part in bases if known and part.strip() not in known]
        if unknown:
            raise base.SourceError(
                f"TFDS dataset {name!r} has no split {unknown[0]!r} (received {split!r}; "
                f"expected one of {known})"
            )
        splits = [split]
    return [
        base.ReadUnit(kind="tfds", uri=f"{PREFIX}{name}:{s}", split=our_split(s)) for s in splits
    ]


def read_unit(
    unit: base.ReadUnit, cfg: schema.DataConfig
) -> Iterator[tuple[base.SourceItem, bytes | base.ReadFailure]]:
    """Streams a split's examples as (item, PNG bytes); an example without a class fails."""
    del cfg  # TFDS reads from its own data dir.
    import tensorflow as tf  # On use, like tensorflow_datasets.

    name, split = parse(unit.uri)
    assert split is not None, unit
    builder = _builder(name)
    image_key, label_key = _feature_keys(builder, name)
    label_feature = builder.info.features[label_key]
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    dataset = dataset.map(
        lambda example: (tf.io.encode_png(example[image_key]), example[label_key]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)
    for index, (png, label_id) in enumerate(dataset.as_numpy_iterator()):
        label_id = int(label_id)
        known = 0 <= label_id < label_feature.num_classes
        label = label_feature.int2str(label_id) if known else None
        item = base.SourceItem(uri=f"{PREFIX}{name}:{split}/{index}", label=label, split=unit.split)
        if label is None:
            # TFDS marks unlabeled examples (e.g. stl10's `unlabelled`) with -1.
            yield item, base.ReadFailure(f"no label (class id {label_id}) in TFDS example")
        else:
            yield item, bytes(png)
