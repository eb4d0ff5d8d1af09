"""The ingest job's near-duplicate search: transforms/near_duplicates.py's steps as Beam
transforms, from the kept images to their groups.

Only the hashes are gathered in one place (one int an image, ~45 bytes in a Python list: a
shuffle keyed by band would move max_distance + 1 elements an image). The group ids found there
meet the images' other fields in a shuffle keyed by hash, not through a side input: Beam 2.78's
DaskRunner recomputes a side input's upstream in each worker that reads it (docs/beam_runners.md).
"""

import json

import apache_beam as beam

from transforms import near_duplicates
from transforms.beam import steps

HEIGHT = steps.STORED_FIELDS.index("height")
WIDTH = steps.STORED_FIELDS.index("width")


class FindGroups(beam.PTransform):
    """(sha256, label, given split, source, stored, hash) records -> one (report, [(label,
    Mark)]) per group of near-duplicates (near_duplicates.describe_group)."""

    def __init__(self, max_distance: int):
        super().__init__()
        self.max_distance = max_distance

    def expand(self, kept):
        max_distance = self.max_distance
        group_ids = (
            kept
            | "Hashes" >> beam.FlatMap(lambda record: [] if record[5] is None else [record[5]])
            | "CollectHashes" >> beam.combiners.ToList().without_defaults()
            | "NumberGroups"
            >> beam.FlatMap(lambda hashes: near_duplicates.group_ids(hashes, max_distance).items())
        )
        members = kept | "KeyByHash" >> beam.FlatMap(keyed_member)
        return (
            (members, group_ids)
            | "JoinGroupIds" >> beam.Flatten()
            | "GroupByPerceptualHash" >> beam.GroupByKey()
            | "MembersOfGroups" >> beam.FlatMap(members_of_group)
            | "GroupByGroup" >> beam.GroupByKey()
            | "DescribeGroups"
            >> beam.Map(lambda group: near_duplicates.describe_group(list(group[1])))
        )


def keyed_member(record):
    """(hash, Member) of a kept image that has a hash."""
    sha256, label, given, source, stored, phash = record
    if phash is not None:
        description = json.loads(stored)
        pixels = description[HEIGHT] * description[WIDTH]
        yield phash, near_duplicates.Member(sha256, label, given or "", source, pixels)


def members_of_group(hash_and_values):
    """(group id, Member) for each image of one hash, if the hash has a group id (an int among
    the Members)."""
    _, values = hash_and_values
    values = list(values)
    group = next((value for value in values if isinstance(value, int)), None)
    if group is not None:
        for value in values:
            if not isinstance(value, int):
                yield group, value
