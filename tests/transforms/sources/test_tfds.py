"""TFDS sources on mocked MNIST data (tfds.testing.mock_data): splits, PNG bytes, class names."""

import io

import pytest
from PIL import Image

from transforms.sources import base, registry, tfds_source

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def mnist_data_dir(tmp_path_factory):
    """A TFDS data dir holding MNIST's metadata only (train and test splits), as a prepared one."""
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("mnist", data_dir=str(data_dir))
    splits = [
        tfds.core.SplitInfo(
            name=name,
            shard_lengths=[count],
            num_bytes=0,
            filename_template=tfds.core.ShardedFileTemplate(
                data_dir=builder.data_dir,
                dataset_name="mnist",
                split=name,
                filetype_suffix="tfrecord",
            ),
        )
        for name, count in (("train", 4), ("test", 4))
    ]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    (data_dir / "mnist" / str(builder.info.version)).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)
    return str(data_dir)


@pytest.fixture
def mocked_mnist(mnist_data_dir):
    """MNIST as four random examples per split; nothing is downloaded."""
    with tfds.testing.mock_data(num_examples=4, data_dir=mnist_data_dir):
        yield


def test_every_split_is_a_unit(mocked_mnist, make_cfg):
    assert registry.list_units(make_cfg("tfds:mnist")) == [
        base.ReadUnit(kind="tfds", uri="tfds:mnist:test", split="test"),
        base.ReadUnit(kind="tfds", uri="tfds:mnist:train", split="train"),
    ]


@pytest.mark.slow  # Imports TensorFlow.
def test_a_split_streams_png_images_with_class_names(mocked_mnist, make_cfg):
    cfg = make_cfg("tfds:mnist:train")
    [unit] = registry.list_units(cfg)

    entries = list(registry.read_unit(unit, cfg))

    assert [item.uri for item, _ in entries] == [f"tfds:mnist:train/{i}" for i in range(4)]
    for item, data in entries:
        assert item.split == "train"
        assert item.label in [str(digit) for digit in range(10)]
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size, image.mode) == ("PNG", (28, 28), "L")


def test_a_sliced_split_keeps_its_split(mocked_mnist, make_cfg):
    assert registry.list_units(make_cfg("tfds:mnist:3.0.1:train[:50%]")) == [
        base.ReadUnit(kind="tfds", uri="tfds:mnist:3.0.1:train[:50%]", split="train")
    ]


def test_an_unknown_split_is_a_source_error(mocked_mnist, make_cfg):
    with pytest.raises(base.SourceError, match=r"no split 'validation'.*\['test', 'train'\]"):
        registry.list_units(make_cfg("tfds:mnist:validation"))


def test_data_not_in_the_data_dir_is_never_downloaded(make_cfg):
    # Without metadata files TFDS sees an unprepared dataset, as after a fresh install.
    with tfds.testing.mock_data(num_examples=1), pytest.raises(base.SourceError) as raised:
        registry.list_units(make_cfg("tfds:mnist"))
    assert "TFDS data for 'mnist' is not in the TFDS data dir" in str(raised.value)
    assert "tfds build mnist" in str(raised.value)


def test_an_unknown_dataset_is_a_source_error(make_cfg):
    with pytest.raises(base.SourceError, match="TFDS has no dataset 'no_such_dataset'"):
        registry.list_units(make_cfg("tfds:no_such_dataset"))


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("tfds:mnist", ("mnist", None)),
        ("tfds:mnist:test", ("mnist", "test")),
        ("tfds:mnist:3.0.1", ("mnist:3.0.1", None)),
        ("tfds:cifar10/config:1.0.0:train[:10%]", ("cifar10/config:1.0.0", "train[:10%]")),
    ],
)
def test_parse(source, parsed):
    assert tfds_source.parse(source) == parsed


@pytest.mark.parametrize(
    ("split", "ours"),
    [
        ("train", "train"),
        ("validation", "val"),
        ("test[10:]", "test"),
        ("unlabelled", None),
        ("train+test", None),
    ],
)
def test_tfds_splits_map_to_ours(split, ours):
    assert tfds_source.our_split(split) == ours


def test_a_bad_tfds_source_is_a_source_error(make_cfg):
    with pytest.raises(base.SourceError, match="expected tfds:<name>"):
        registry.list_units(make_cfg("tfds:"))
