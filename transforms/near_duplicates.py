"""Near-duplicate images: resized, re-encoded or slightly cropped copies that byte hashes miss.

Each image gets a 64-bit perceptual hash (imagehash's pHash: the low frequencies of a 32x32 grey
thumbnail). Images whose hashes differ in at most data.near_duplicates.max_distance bits are
linked, and linked images form a group (transitively: A~B and B~C put A and C together). Finding
the links never compares every pair: the hash is cut into max_distance + 1 bands, and two hashes
within max_distance bits agree exactly on at least one band (pigeonhole), so only hashes sharing
a band value are compared, over one numpy array of every kept image's hash. Each group keeps one
representative; the modes decide what happens to the others (configs/schema/data.py:
NearDuplicatesConfig).

Nothing here knows Beam; transforms/beam/near_duplicates.py runs these steps as the ingest job's.
"""

from dataclasses import dataclass
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import Image
from scipy import sparse
from scipy.sparse import csgraph

from configs import schema
from transforms import splits

HASH_BITS = 64
HASH_SIDE = 32  # pHash's thumbnail side: hash_size 8 x highfreq_factor 4
# Where near-duplicate groups are listed beside dataset.json, one JSON group per line.
NEAR_DUPLICATES_JSONL = "near_duplicates.jsonl"
# Groups, and members of each, listed in dataset.json and the card; all are in the JSONL.
REPORTED_GROUPS = 20
REPORTED_MEMBERS = 10
LINK_BLOCK = 1024  # hashes compared at once: a run of many equal band values stays in memory


class Member(NamedTuple):
    """What choosing a group's representative needs of one image, and what its members learn of
    the one chosen."""

    sha256: str
    label: str
    given_split: str  # "" when the source gave none
    source: str
    pixels: int


def perceptual_hash(image: Image.Image) -> int:
    """The pHash of a decoded image as a signed 64-bit int (Beam's int coder is signed). The
    thumbnail is made here, grey first as imagehash does, with Pillow's reducing_gap (a box
    reduction before the Lanczos filter): hash and all, 0.18 ms an image of bench_ingest's
    JPEGs (0.29 resizing in colour, more with imagehash's full-size resize); the same hash as
    imagehash's on the test photos, 0.3 bits apart on average (at most 2) over 400 of those
    JPEGs."""
    grey = image.convert("L")
    thumbnail = grey.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    # The bits in imagehash's order (its hex string's), without formatting them as text.
    unsigned = int.from_bytes(np.packbits(imagehash.phash(thumbnail).hash).tobytes(), "big")
    return unsigned - (1 << HASH_BITS) if unsigned >> (HASH_BITS - 1) else unsigned


def bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance + 1 disjoint bands covering the hash's 64 bits."""
    count = max_distance + 1
    widths = [HASH_BITS // count + (i < HASH_BITS % count) for i in range(count)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(shift), width) for shift, width in zip(shifts, widths, strict=True)]


def group_ids(hashes: list[int], max_distance: int) -> dict[int, int]:
    """{hash: group id} for every hash within max_distance bits of another, or shared by
    several images; hashes without a near-duplicate are left out.

    Vectorised over one array of every hash (8 bytes an image): per band, hashes are sorted by
    the band's value and only runs of equal values are compared, a run's cost growing with its
    square (about (max_distance + 1) * N**2 / 2**(64 / (max_distance + 1)) comparisons).
    """
    values, counts = np.unique(np.array(hashes, dtype=np.int64), return_counts=True)
    bits = values.view(np.uint64)  # bitwise_count of a negative int64 counts its magnitude's
    rows, cols = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for shift, width in bands(max_distance) if len(values) > 1 and max_distance else []:
        band = (bits >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(band, kind="stable")
        runs = np.split(order, np.flatnonzero(np.diff(band[order])) + 1)
        for run in (run for run in runs if len(run) > 1):
            for start in range(0, len(run), LINK_BLOCK):
                block = run[start : start + LINK_BLOCK]
                close = np.bitwise_count(bits[block, None] ^ bits[None, run]) <= max_distance
                row, col = np.nonzero(close)
                rows.append(block[row])
                cols.append(run[col])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    linked = counts > 1  # a hash several images share is a group of its own
    linked[rows[rows != cols]] = True
    graph = sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), (len(values),) * 2)
    _, component = csgraph.connected_components(graph, directed=False)
    return {int(values[i]): int(component[i]) for i in np.flatnonzero(linked)}


def representative(members: list[Member]) -> Member:
    """The image a group keeps: one given in test, then val, then train (a given evaluation
    image stays where the user put it), else the most pixels (copies are mostly downscaled),
    then the first by path."""
    given_rank = {split: rank for rank, split in enumerate(splits.EVAL_FIRST)}
    return min(
        members,
        key=lambda m: (given_rank.get(m.given_split, len(given_rank)), -m.pixels, m.source),
    )


@dataclass(frozen=True)
class Mark:
    """Travels to a member's class beside its records: the member and its representative."""

    sha256: str
    representative: Member


def describe_group(members: list[Member]) -> tuple[dict, list[tuple[str, Mark]]]:
    """A group's report and a Mark per member, keyed by the member's label."""
    chosen = representative(members)
    ordered = sorted(members, key=lambda m: m.source)
    report = {
        "representative": chosen.source,
        "members": [{"source": m.source, "label": m.label, "sha256": m.sha256} for m in ordered],
    }
    return report, [(m.label, Mark(m.sha256, chosen)) for m in ordered]


def settle_class(label: str, members: list[tuple], grouped: dict, mode: str):
    """Applies `mode` to one class's (sha256, given split, source, stored) members.

    Returns (members kept, their unit keys, {unit: given split}, [(source, reason) quarantined]).
    A unit is what splits place whole: an image, or under `move` a group's members of this
    class. Under move and drop, a member labelled unlike its representative is quarantined (the
    same picture with two labels); under drop, every member but the representative is.
    """
    kept, units, unit_split, quarantined = [], [], {}, []
    for member in members:
        sha256, given, source, _ = member
        stands_for = grouped.get(sha256)
        if stands_for is None or mode == "flag":
            unit = sha256
        elif stands_for.label != label:
            quarantined.append(
                (
                    source,
                    f"near-duplicate labelled differently: {label!r} here, "
                    f"{stands_for.label!r} for {stands_for.source}",
                )
            )
            continue
        elif mode == "drop" and stands_for.sha256 != sha256:
            quarantined.append(
                (
                    source,
                    f"near-duplicate dropped: keeps {stands_for.source} "
                    "(data.near_duplicates: drop)",
                )
            )
            continue
        else:
            unit, given = stands_for.sha256, stands_for.given_split
        kept.append(member)
        units.append(unit)
        if given:
            unit_split[unit] = given
    return kept, units, unit_split, quarantined


def groups_found(reports: list[dict], group_splits: list) -> list[dict]:
    """The groups found, each member with the split it was written to (None: quarantined) and
    each group with the splits it spans: groups spanning several splits first (the leaks to
    look at), then by representative."""
    split_of = dict(map(tuple, group_splits))
    groups = []
    for report in sorted(reports, key=lambda group: group["representative"]):
        members = [
            {**member, "split": split_of.get(member["sha256"])} for member in report["members"]
        ]
        spans = sorted({member["split"] for member in members if member["split"]})
        groups.append({**report, "members": members, "splits": spans})
    return sorted(groups, key=lambda group: len(group["splits"]) < 2)


def summary(config: schema.NearDuplicatesConfig, groups: list[dict]) -> dict:
    """dataset.json's account of the search: its settings and, unless off, what it found."""
    summary = config.model_dump(mode="json")
    if config.mode == "off":
        return summary
    return summary | {
        "groups": len(groups),
        "images": sum(len(group["members"]) for group in groups),
        "straddling": sum(len(group["splits"]) > 1 for group in groups),
        # A group can chain thousands of look-alikes: dataset.json lists a few of each.
        "examples": [
            group | {"size": len(group["members"]), "members": group["members"][:REPORTED_MEMBERS]}
            for group in groups[:REPORTED_GROUPS]
        ],
    }
