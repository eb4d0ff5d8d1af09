"""Near-duplicates: resized, re-encoded and slightly cropped copies of real photos are grouped,
and data.near_duplicates flags, moves or drops them so that no group straddles the splits."""

import itertools
import json
import random
import subprocess
import sys

import imagehash
import numpy as np
import pytest
from PIL import Image
from scipy import sparse
from scipy.sparse import csgraph

from configs import schema
from tests.transforms import shards
from tests.transforms.near_copies import cropped, half, photo, reencoded
from transforms import dataset_card, dataset_info, near_duplicates
from transforms.beam import ingest as ingest_job

pytestmark = pytest.mark.beam

# Photos shipped with scikit-image whose pHashes lie >= 20 bits apart.
PHOTOS = {
    "cat": ["astronaut", "coffee", "chelsea", "camera", "rocket", "grass"],
    "dog": ["gravel", "moon", "text", "retina", "hubble_deep_field", "colorwheel"],
}
SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25}
DEFAULT_DISTANCE = 8


def distance(a: Image.Image, b: Image.Image) -> int:
    return int.bit_count(
        (near_duplicates.perceptual_hash(a) ^ near_duplicates.perceptual_hash(b)) & (2**64 - 1)
    )


def test_copies_hash_close_and_different_photos_far():
    names = [name for names in PHOTOS.values() for name in names]
    for name in names:
        original = photo(name)
        for copy in (half(original), reencoded(original), cropped(original)):
            assert distance(original, copy) <= DEFAULT_DISTANCE, name
    for a, b in itertools.combinations(names, 2):
        assert distance(photo(a), photo(b)) >= 20, (a, b)


def test_the_hash_is_imagehash_phash_of_the_full_image():
    # The shrink-first thumbnail is a speed-up, not another hash.
    for name in ("astronaut", "camera", "moon"):
        image = photo(name, width=640)
        mine = near_duplicates.perceptual_hash(image) & (2**64 - 1)
        assert mine == int(str(imagehash.phash(image)), 16)


@pytest.mark.parametrize("max_distance", [0, 3, 8, 16])
def test_every_pair_within_max_distance_is_grouped_and_no_other(max_distance):
    rng = random.Random(max_distance)
    hashes, pairs = [], []
    for _ in range(200):
        a = rng.getrandbits(64)
        near, far = a, a
        for bit in rng.sample(range(64), max_distance):
            near ^= 1 << bit
        for bit in rng.sample(range(64), 48):  # >= 32 bits from `near` too
            far ^= 1 << bit
        pairs.append([h - (1 << 64) if h >> 63 else h for h in (a, near, far)])
        hashes += pairs[-1]
    ids = near_duplicates.group_ids(hashes, max_distance)
    for a, near, far in pairs:
        assert ids[a] == ids[near]
        assert ids.get(far) != ids[a]
    # Against every pair compared: the same hashes linked, in the same groups.
    unsigned = np.array(hashes, dtype=np.int64).view(np.uint64)
    close = np.bitwise_count(unsigned[:, None] ^ unsigned[None, :]) <= max_distance
    np.fill_diagonal(close, False)
    _, component = csgraph.connected_components(sparse.csr_matrix(close), directed=False)
    expected = {h: component[i] for i, h in enumerate(hashes) if close[i].any()}
    assert set(ids) == set(expected)
    assert len({(ids[h], expected[h]) for h in ids}) == len(set(ids.values()))


def test_group_ids_join_chains_and_shared_hashes():
    a, b, c, far = 0, 0b111, 0b111111, -1  # a~b and b~c at 3 bits; a, c 6 apart; far 61+ away
    ids = near_duplicates.group_ids([a, b, c, far, far, 0x5555_5555_5555_5555], max_distance=3)
    assert ids[a] == ids[b] == ids[c] != ids[far]
    assert set(ids) == {a, b, c, far}  # far is shared by two images; 0x5555... stands alone
    assert near_duplicates.group_ids([], 3) == {}
    assert set(near_duplicates.group_ids([a, b, b], 0)) == {b}


def save(image: Image.Image, path, kind: str = "png") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(
        path, {"png": "PNG", "jpg": "JPEG"}[kind], **({"quality": 95} if kind == "jpg" else {})
    )


@pytest.fixture(scope="module")
def copies_tree(tmp_path_factory):
    """Twelve photos in two classes, six near-duplicate groups: a half-size copy, a re-encoded
    JPEG and a cropped copy in the same class, and camera's copy labelled dog."""
    root = tmp_path_factory.mktemp("copies") / "tree"
    for label, names in PHOTOS.items():
        for name in names:
            save(photo(name), root / label / f"{name}.png")
    save(half(photo("astronaut")), root / "cat" / "astronaut_half.png")
    save(reencoded(photo("coffee")), root / "cat" / "coffee_q40.jpg", "jpg")
    save(cropped(photo("chelsea")), root / "cat" / "chelsea_crop.png")
    save(half(photo("gravel")), root / "dog" / "gravel_half.png")
    save(cropped(photo("moon")), root / "dog" / "moon_crop.png")
    save(reencoded(photo("camera")), root / "dog" / "camera_q40.jpg", "jpg")
    return root


GROUPS = {
    ("cat/astronaut.png", "cat/astronaut_half.png"),
    ("cat/coffee.png", "cat/coffee_q40.jpg"),
    ("cat/chelsea.png", "cat/chelsea_crop.png"),
    ("cat/camera.png", "dog/camera_q40.jpg"),
    ("dog/gravel.png", "dog/gravel_half.png"),
    ("dog/moon.png", "dog/moon_crop.png"),
}


def ingest(tree, tmp_path_factory, mode: str):
    out = tmp_path_factory.mktemp(f"out-{mode}")
    config = {"mode": mode, "max_distance": DEFAULT_DISTANCE}
    return shards.run(tree, out, split=SPLIT, near_duplicates=config)


@pytest.fixture(scope="module")
def flagged(copies_tree, tmp_path_factory):
    return ingest(copies_tree, tmp_path_factory, "flag")


def found_groups(result) -> set[tuple[str, ...]]:
    lines = (result.path / near_duplicates.NEAR_DUPLICATES_JSONL).read_text().splitlines()
    return {tuple(sorted(m["source"] for m in json.loads(line)["members"])) for line in lines}


def test_flag_reports_every_group_and_changes_nothing(flagged, copies_tree, tmp_path_factory):
    assert found_groups(flagged) == GROUPS
    found = flagged.dataset["near_duplicates"]
    assert (found["groups"], found["images"], found["mode"]) == (6, 12, "flag")
    assert found["straddling"] >= 1  # so that move below has something to fix
    assert flagged.dataset["written"] == 18
    unchecked = ingest(copies_tree, tmp_path_factory, "off")
    assert unchecked.version == flagged.version  # a mode that only reports changes no byte
    assert unchecked.dataset["near_duplicates"] == {"mode": "off", "max_distance": 8}
    assert not (unchecked.path / near_duplicates.NEAR_DUPLICATES_JSONL).read_text()


def test_move_puts_each_group_in_one_split(copies_tree, flagged, tmp_path_factory):
    moved = ingest(copies_tree, tmp_path_factory, "move")
    stored = shards.labels_and_splits(moved.path)
    for group in GROUPS - {("cat/camera.png", "dog/camera_q40.jpg")}:
        assert len({stored[source][1] for source in group}) == 1, group
    assert moved.dataset["near_duplicates"]["straddling"] == 0
    # camera's copy labelled dog is the same picture with two labels: quarantined.
    assert "dog/camera_q40.jpg" not in stored and "cat/camera.png" in stored
    reason = shards.quarantine(moved.path)["dog/camera_q40.jpg"]
    assert reason.startswith("near-duplicate labelled differently: 'dog' here, 'cat' for")
    assert moved.dataset["written"] == 17
    assert moved.version != flagged.version


def test_drop_keeps_the_largest_image_of_each_group(copies_tree, tmp_path_factory):
    dropped = ingest(copies_tree, tmp_path_factory, "drop")
    stored = shards.labels_and_splits(dropped.path)
    assert dropped.dataset["written"] == 12
    assert {"cat/astronaut.png", "dog/gravel.png", "cat/chelsea.png"} <= set(stored)
    quarantined = shards.quarantine(dropped.path)
    assert quarantined["cat/astronaut_half.png"] == (
        "near-duplicate dropped: keeps cat/astronaut.png (data.near_duplicates: drop)"
    )
    assert {"cat/chelsea_crop.png", "dog/moon_crop.png", "dog/camera_q40.jpg"} <= set(quarantined)
    groups = {
        g["representative"]: g
        for g in map(json.loads, open(dropped.path / "near_duplicates.jsonl"))
    }
    assert [m["split"] for m in groups["cat/astronaut.png"]["members"]] == [
        stored["cat/astronaut.png"][1],
        None,
    ]


def test_move_follows_a_given_evaluation_split(tmp_path):
    # The test copy decides, though smaller: the user put it there.
    tree = tmp_path / "given"
    for label, names in PHOTOS.items():
        for name in names[1:]:
            save(photo(name), tree / "train" / label / f"{name}.png")
    save(photo("astronaut"), tree / "train" / "cat" / "astronaut.png")
    save(half(photo("astronaut")), tree / "test" / "cat" / "astronaut_half.png")
    moved = shards.run(tree, tmp_path / "out", near_duplicates={"mode": "move"})
    stored = shards.labels_and_splits(moved.path)
    assert stored["train/cat/astronaut.png"][1] == "test"
    assert stored["test/cat/astronaut_half.png"][1] == "test"
    dropped = shards.run(tree, tmp_path / "out-drop", near_duplicates={"mode": "drop"})
    stored = shards.labels_and_splits(dropped.path)
    assert "train/cat/astronaut.png" not in stored
    assert stored["test/cat/astronaut_half.png"][1] == "test"


def test_ingest_warns_of_groups_that_span_splits(flagged, capsys):
    ingest_job.warn_of_straddling_groups(flagged.dataset["near_duplicates"])
    warning = capsys.readouterr().out
    assert warning.startswith("ingest: warning: ")
    assert "near-duplicate group(s) span more than one split" in warning
    assert "set data.near_duplicates.mode to move" in warning


def test_data_stats_prints_the_groups(flagged, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cli", "data", "stats", str(flagged.path)]
        + ["--png", str(tmp_path / "counts.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "near-duplicates: 6 group(s) of 12 images" in done.stdout
    assert "cat/astronaut.png (" in done.stdout


def test_the_card_lists_the_groups(flagged):
    card = (flagged.path / dataset_card.CARD_MD).read_text()
    assert "6 group(s) of 12 images whose perceptual hashes differ in at most 8 bits" in card
    assert "## Near-duplicate groups" in card
    assert "cat/astronaut.png (" in card and "cat/astronaut_half.png (" in card


def test_dataset_json_and_the_card_list_a_few_members_of_a_large_group(flagged):
    members = [
        {"source": f"cat/{i:02d}.png", "label": "cat", "sha256": f"{i:064x}", "split": "train"}
        for i in range(30)
    ]
    group = {"representative": "cat/00.png", "members": members, "splits": ["train"]}
    found = near_duplicates.summary(schema.NearDuplicatesConfig(), [group])
    assert (found["images"], found["examples"][0]["size"]) == (30, 30)
    assert len(found["examples"][0]["members"]) == near_duplicates.REPORTED_MEMBERS
    card = dataset_card.render(flagged.dataset | {"near_duplicates": found})
    assert "cat/09.png (train) and 20 more |" in card


def test_data_diff_reports_the_change_in_groups(flagged, copies_tree, tmp_path_factory):
    unchecked = ingest(copies_tree, tmp_path_factory, "off")
    report = dataset_info.diff(str(unchecked.path), str(flagged.path))
    assert report["near_duplicate_groups"] == {"old": None, "new": 6}
