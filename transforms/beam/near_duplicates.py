"""The ingest job's near-duplicate search: transforms/near_duplicates.py's steps as Beam
transforms, from the kept images to their groups.

Only the hashes are gathered in one place (one int an image, ~45 bytes in a Python list: a
shuffle keyed by band would move max_distance + 1 elements an image); the images' other fields
are joined back for the few whose hash is linked, through a side input the size of the linked
hashes, not of the dataset.
"""

import json

import apache_beam as beam

from transforms import near_duplicates
from transforms.beam import steps

HEIGHT = steps.STORED_FIELDS.index("height")
WIDTH = steps.STORED_FIELDS.index("width")


class FindGroups(beam.PTransform):
    """(sha256, label, given split, source, stored, hash) records -> one (report,
    {sha256: Representative}) per group of near-duplicates."""

    def __init__(self, max_distance: int):
        super().__init__()
        self.max_distance = max_distance

    def expand(self, kept):
        group_of_hash = (
            kept
            | "Hashes" >> beam.FlatMap(lambda record: [] if record[5] is None else [record[5]])
            | "CollectHashes" >> beam.combiners.ToList()
            | "NumberGroups" >> beam.Map(near_duplicates.group_ids, max_distance=self.max_distance)
        )
        return (
            kept
            | "JoinMembers"
            >> beam.FlatMap(member_of_group, group_of_hash=beam.pvalue.AsSingleton(group_of_hash))
            | "GroupByGroup" >> beam.GroupByKey()
            | "DescribeGroups"
            >> beam.Map(lambda group: near_duplicates.describe_group(list(group[1])))
        )


def member_of_group(record, group_of_hash: dict[int, int]):
    sha256, label, given, source, stored, phash = record
    group = group_of_hash.get(phash)
    if group is not None:
        description = json.loads(stored)
        pixels = description[HEIGHT] * description[WIDTH]
        yield group, near_duplicates.Member(sha256, label, given or "", source, pixels)
