"""transforms.beam.ingest: validation, dedupe, content-keyed splits, shards and dataset.json."""

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import tensorflow as tf

from configs import loader
from transforms import dataset_card, dataset_info, features, near_duplicates, splits
from transforms.beam import ingest, steps
from transforms.sources import base as source_base

pytestmark = pytest.mark.beam

MAX_PIXELS = 5_000  # generated images are 20x16 = 320 px; huge.png is 80x80 = 6,400 px
SPLIT = "data.split={train: 0.5, val: 0.25, test: 0.25}"  # every split gets examples
SHARD_NAME = re.compile(r"^(train|val|test)-(\d{5})-of-(\d{5})\.tfrecord$")

GOOD_FILES = [f"cat/c{i:02d}.png" for i in range(6)] + ["cat/c06.jpg", "cat/c07.jpg"]
GOOD_FILES += [f"dog/d{i:02d}.png" for i in range(6)] + ["dog/d06.jpg", "dog/d07.jpg"]
GOOD_FILES += ["dog/d08.bmp", "dog/d09.webp"]
EXPECTED_REASONS = {
    "cat/broken.png": "broken symlink",
    "cat/empty.png": "empty file",
    "cat/notes.png": "not an image",
    "dog/from-cat.png": "same bytes as cat/c01.png but labelled 'dog' instead of 'cat'",
    "dog/huge.png": "too many pixels",
    "dog/truncated.png": "truncated",
}


def build_source(root: Path, make_image, make_tree) -> Path:
    """18 good images in 2 classes, 1 exact duplicate, 6 unusable files and 1 hidden file."""
    cat = {f"c{i:02d}.png": make_image(i) for i in range(6)}
    cat |= {"c06.jpg": make_image(6, "JPEG"), "c07.jpg": make_image(7, "JPEG")}
    dog = {f"d{i:02d}.png": make_image(10 + i) for i in range(6)}
    dog |= {"d06.jpg": make_image(16, "JPEG"), "d07.jpg": make_image(17, "JPEG")}
    dog |= {"d08.bmp": make_image(18, "BMP"), "d09.webp": make_image(19, "WEBP")}
    whole = make_image(99, size=(60, 40))
    cat |= {
        "z-copy.png": cat["c00.png"],  # same bytes, same label, sorts after c00.png: a duplicate
        "empty.png": b"",
        "notes.png": b"this is not a png\n",
        "broken.png": root / "nowhere.png",  # symlink to a file that does not exist
        ".DS_Store": b"\x00\x01",  # hidden files are not part of the dataset
    }
    dog |= {
        "from-cat.png": cat["c01.png"],  # same bytes, other label: a conflict
        "truncated.png": whole[: len(whole) // 2],
        "huge.png": make_image(98, size=(80, 80)),
    }
    return make_tree(root / "source", {"cat": cat, "dog": dog})


def run_ingest(source: Path, output_dir: Path, *overrides: str) -> ingest.IngestResult:
    cfg = loader.load(
        None,
        [
            f"data.source={source}",
            f"data.output_dir={output_dir}",
            f"data.max_pixels={MAX_PIXELS}",
            "data.beam_direct_mode=in_memory",
            SPLIT,
            *overrides,
        ],
    )
    return ingest.run(cfg.data)


def read_shards(paths: list[Path]) -> list[dict]:
    """Every example of `paths`, parsed with the feature contract, as plain Python values."""
    dataset = tf.data.TFRecordDataset([str(p) for p in paths]).map(features.parse)
    return [
        {
            k: v.decode() if isinstance(v, bytes) and k != features.IMAGE else v
            for k, v in ex.items()
        }
        for ex in dataset.as_numpy_iterator()
    ]


def shard_paths(version_dir: Path, split: str) -> list[Path]:
    return sorted(version_dir.glob(features.shard_pattern(split)))


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory, make_image, make_tree) -> Path:
    return build_source(tmp_path_factory.mktemp("ingest"), make_image, make_tree)


@pytest.fixture(scope="module")
def ingested(source, tmp_path_factory) -> ingest.IngestResult:
    return run_ingest(source, tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def examples(ingested) -> dict[str, list[dict]]:
    return {split: read_shards(shard_paths(ingested.path, split)) for split in features.SPLITS}


def test_report_balances_with_expected_counts(ingested):
    info = ingested.dataset
    assert (info["files_seen"], info["written"], info["duplicates"], info["quarantined"]) == (
        25,
        18,
        1,
        6,
    )
    assert info["files_seen"] == info["written"] + info["duplicates"] + info["quarantined"]
    assert info["label_map"] == ["cat", "dog"]
    assert info["num_classes"] == 2


def test_quarantine_lists_each_bad_file_with_reason(ingested):
    lines = (ingested.path / dataset_info.QUARANTINE_JSONL).read_text().splitlines()
    reasons = {entry["path"]: entry["reason"] for entry in map(json.loads, lines)}
    assert set(reasons) == set(EXPECTED_REASONS)
    for path, expected in EXPECTED_REASONS.items():
        assert expected in reasons[path], (path, reasons[path])


def test_every_good_file_written_once_and_nothing_else(examples):
    sources = [ex[features.SOURCE] for split in examples.values() for ex in split]
    assert sorted(sources) == sorted(GOOD_FILES)


def test_dataset_json_counts_match_shard_contents(ingested, examples):
    splits = ingested.dataset["splits"]
    for split in features.SPLITS:
        per_class = Counter(ex[features.LABEL_TEXT] for ex in examples[split])
        assert splits[split]["count"] == len(examples[split])
        assert splits[split]["per_class"] == {"cat": per_class["cat"], "dog": per_class["dog"]}
    assert sum(splits[s]["count"] for s in features.SPLITS) == ingested.dataset["written"]


def test_every_split_has_examples(ingested):
    assert all(ingested.dataset["splits"][s]["count"] > 0 for s in features.SPLITS)


def test_examples_carry_label_from_folder_and_label_map(ingested, examples):
    label_map = ingested.dataset["label_map"]
    for ex in (ex for split in examples.values() for ex in split):
        assert ex[features.LABEL_TEXT] == ex[features.SOURCE].split("/")[0]
        assert label_map[ex[features.LABEL]] == ex[features.LABEL_TEXT]


def test_png_and_jpeg_keep_their_bytes_other_formats_are_rewritten(source, examples):
    for ex in (ex for split in examples.values() for ex in split):
        data = (source / ex[features.SOURCE]).read_bytes()
        assert ex[features.SHA256] == hashlib.sha256(data).hexdigest()
        assert (ex[features.HEIGHT], ex[features.WIDTH]) == (16, 20)
        suffix = ex[features.SOURCE].rsplit(".", 1)[1]
        if suffix in ("png", "jpg"):
            assert ex[features.IMAGE] == data
            assert ex[features.FORMAT] == {"jpg": "jpeg"}.get(suffix, suffix)
        else:
            assert ex[features.IMAGE] != data and ex[features.FORMAT] == "png"


def test_version_folder_holds_only_shards_and_reports(ingested):
    names = {p.name for p in ingested.path.iterdir()}
    listed = {name for s in features.SPLITS for name in ingested.dataset["splits"][s]["shards"]}
    reports = {
        dataset_info.DATASET_JSON,
        dataset_info.QUARANTINE_JSONL,
        dataset_card.CARD_MD,
        near_duplicates.NEAR_DUPLICATES_JSONL,
    }
    assert names == listed | reports
    assert all(SHARD_NAME.match(name) for name in listed)


def test_shard_names_number_shards_of_their_split(ingested):
    for split in features.SPLITS:
        shards = ingested.dataset["splits"][split]["shards"]
        numbers = [SHARD_NAME.match(name).groups() for name in shards]
        assert numbers == [(split, f"{i:05d}", f"{len(shards):05d}") for i in range(len(shards))]


def test_dataset_json_on_disk_matches_result(ingested):
    on_disk = dataset_info.load(ingested.path)
    assert on_disk == ingested.dataset
    assert on_disk["version"] == ingested.version == ingested.path.name
    assert re.fullmatch(r"[0-9a-f]{16}", ingested.version)


def test_latest_points_at_version(ingested):
    out = ingested.path.parent
    assert (out / dataset_info.LATEST).read_text().strip() == ingested.version
    assert dataset_info.resolve_version_dir(str(out), "latest") == str(ingested.path)
    assert dataset_info.resolve_version_dir(str(out), ingested.version) == str(ingested.path)


def test_rerun_gives_same_version_and_identical_bytes(source, ingested, tmp_path):
    again = run_ingest(source, tmp_path / "out")
    assert again.version == ingested.version
    assert file_bytes(again.path) == file_bytes(ingested.path)


def test_rerun_into_same_output_keeps_one_version(source, tmp_path):
    first = run_ingest(source, tmp_path)
    second = run_ingest(source, tmp_path)
    assert second.version == first.version
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.version, dataset_info.LATEST]
    )


def test_changing_split_fractions_changes_version(source, ingested, tmp_path):
    other = run_ingest(source, tmp_path, "data.split={train: 0.6, val: 0.2, test: 0.2}")
    assert other.version != ingested.version
    assert ingested.path.name != other.path.name


def test_splits_are_stratified_by_class(ingested):
    per_split = ingested.dataset["splits"]
    for name in ("cat", "dog"):
        counts = [per_split[split]["per_class"][name] for split in features.SPLITS]
        assert counts == [4, 2, 2] if name == "cat" else [5, 2, 3]


def test_same_bytes_under_other_names_land_in_same_split(source, examples, tmp_path):
    renamed = tmp_path / "renamed"
    for good in GOOD_FILES:
        class_name, name = good.split("/")
        (renamed / class_name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / good, renamed / class_name / f"renamed-{name}")
    result = run_ingest(renamed, tmp_path / "out")
    split_by_hash = {
        ex[features.SHA256]: split
        for split in features.SPLITS
        for ex in read_shards(shard_paths(result.path, split))
    }
    original = {ex[features.SHA256]: split for split, exs in examples.items() for ex in exs}
    assert split_by_hash == original


def test_assign_stratified_depends_on_hashes_only():
    split_cfg = loader.load(None, [SPLIT]).data.split
    hashes = [f"{i:064x}" for i in range(8)]
    assigned = splits.assign_stratified(dict.fromkeys(hashes, 1), split_cfg)
    assert list(assigned.values()) == ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    assert splits.assign_stratified(dict.fromkeys(reversed(hashes), 1), split_cfg) == assigned
    one = splits.assign_stratified({"a" * 64: 1}, split_cfg)
    assert one == {"a" * 64: "train"}


def test_assign_stratified_never_cuts_a_unit():
    # A group of near-duplicates counts with its images and lands whole in one split.
    split_cfg = loader.load(None, [SPLIT]).data.split
    units = {f"{i:064x}": 1 for i in range(8)}
    units[f"{3:064x}"] = 4  # spans positions 3..6 of 11: starts in train, stays there whole
    assigned = splits.assign_stratified(units, split_cfg)
    assert [assigned[f"{i:064x}"] for i in range(8)] == ["train"] * 4 + ["val"] * 2 + ["test"] * 2


def test_small_shards_hold_every_example_exactly_once(source, ingested, examples, tmp_path):
    result = run_ingest(source, tmp_path, "data.examples_per_shard=2")
    assert len(result.dataset["splits"]["train"]["shards"]) > 1
    for split in features.SPLITS:
        listed = result.dataset["splits"][split]["shards"]
        assert [p.name for p in shard_paths(result.path, split)] == listed
        hashes = [ex[features.SHA256] for ex in read_shards([result.path / n for n in listed])]
        assert len(hashes) == len(set(hashes))
        assert sorted(hashes) == sorted(ex[features.SHA256] for ex in examples[split])


def test_rank_bucket_ranks_each_split_in_global_hash_order():
    # Each (split, hash bucket) group is ranked alone; together they must give the rank in the
    # whole split's hash order, so shards fill up as if one process had sorted every hash.
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(600)]
    by_split = {"train": hashes[:500], "val": hashes[500:], "test": []}
    groups: dict[tuple[str, str], list] = {}
    for split, mine in by_split.items():
        for sha in mine:
            bucket = sha[: steps.BUCKET_HEX_DIGITS]
            groups.setdefault((split, bucket), []).append((sha, "dog", f"dog/{sha[:6]}.png", ""))
    classes = {
        steps.LABEL: ["dog"],
        steps.BUCKET_COUNT: [(key, len(records)) for key, records in groups.items()],
    }
    places = dict(steps.place_buckets((None, classes), vocabulary=["cat", "dog"]))
    keyed = {}
    for key, records in groups.items():
        values = [*reversed(records), places[key]]
        for shard_key, record in steps.rank_bucket((key, values), 64):
            keyed[record[0]] = shard_key, record[1]
    for split, mine in by_split.items():
        for rank, sha in enumerate(sorted(mine)):
            assert keyed[sha] == ((split, rank // 64, len(mine)), 1)  # dog: label 1 of cat, dog


def test_worker_environment_adds_only_unset_names_and_restores(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    wanted = {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "1048576"}
    with ingest.worker_environment(wanted):
        assert os.environ["MALLOC_ARENA_MAX"] == "4"  # the user's setting wins
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "1048576"
    assert os.environ["MALLOC_ARENA_MAX"] == "4"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ


def test_small_shards_are_numbered_without_gaps_and_bounded(source, tmp_path):
    result = run_ingest(source, tmp_path, "data.examples_per_shard=2")
    for split in features.SPLITS:
        listed = result.dataset["splits"][split]["shards"]
        total = -(-result.dataset["splits"][split]["count"] // 2)
        assert listed == [features.shard_name(split, i, total) for i in range(total)]
        for name in listed:
            assert len(read_shards([result.path / name])) <= 2


def test_missing_source_raises_ingest_error(tmp_path):
    with pytest.raises(source_base.SourceError, match=r"data.source .*nope"):
        run_ingest(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_source_without_class_folders_raises_ingest_error(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "image.png").write_bytes(b"")
    with pytest.raises(source_base.SourceError, match="0 class folder"):
        run_ingest(tmp_path / "flat", tmp_path / "out")


def test_unknown_version_raises_ingest_error(ingested):
    with pytest.raises(dataset_info.DatasetNotFound, match="dataset version 0123 not found"):
        dataset_info.resolve_version_dir(str(ingested.path.parent), "0123")


def test_latest_without_ingest_raises_ingest_error(tmp_path):
    with pytest.raises(dataset_info.DatasetNotFound, match="run `imgclf ingest"):
        dataset_info.resolve_version_dir(str(tmp_path), "latest")


def test_bundled_digits_ingest(digits_dir, tmp_path):
    cfg = loader.load(
        None,
        [
            f"data.source={digits_dir}",
            f"data.output_dir={tmp_path}",
            "data.beam_direct_mode=in_memory",
        ],
    )
    info = ingest.run(cfg.data).dataset
    assert (info["files_seen"], info["written"], info["quarantined"]) == (1797, 1797, 0)
    assert info["label_map"] == [str(d) for d in range(10)]
    for split, fraction in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert info["splits"][split]["count"] / 1797 == pytest.approx(fraction, abs=0.03)
        assert all(count > 0 for count in info["splits"][split]["per_class"].values())


def test_every_version_has_a_card_of_what_ingest_found(ingested, source, tmp_path):
    card = (ingested.path / dataset_card.CARD_MD).read_text()
    info = ingested.dataset
    assert card == dataset_card.render(info)
    assert card.startswith(f"# Dataset {ingested.version}\n")
    assert "_No description: set data.card.description._" in card
    assert f"{info['written']:,} written of {info['files_seen']:,} found" in card
    splits = info["splits"]
    cat = [splits[split]["per_class"]["cat"] for split in features.SPLITS]
    assert f"| cat | {' | '.join(map(str, cat))} | {sum(cat)} |" in card
    # One row per kind of quarantine reason, counted.
    reasons = info["quarantine_reasons"]
    assert sum(reasons.values()) == info["quarantined"] == 6
    for kind, count in reasons.items():
        assert f"| {kind} | {count} |" in card

    # The card is documentation, not data: the version does not change with it.
    described = run_ingest(
        source,
        tmp_path / "out",
        "data.card={description: Cats and dogs., license: CC0-1.0, citation: Me (2026)}",
    )
    assert described.version == ingested.version
    card = (described.path / dataset_card.CARD_MD).read_text()
    assert "Cats and dogs." in card and "**Licence:** CC0-1.0" in card
    assert "**Citation:** Me (2026)" in card
