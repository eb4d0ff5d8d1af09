"""Deterministic, stratified train/val/test assignment keyed on content hashes."""

from configs import schema

SPLITS = ("train", "val", "test")
# With leakage: keep_eval, the copy in the first split listed here survives.
EVAL_FIRST = ("test", "val", "train")


def assign_stratified(hashes: list[str], split: schema.SplitConfig) -> dict[str, str]:
    """Splits one class's images: {sha256: split}, in the configured proportions.

    Images are ordered by hash and cut at the cumulative fractions, so each class gets its share
    (stratified) and the result depends only on the set of contents, never on file names or
    listing order. Adding images can move others across the cut; a new dataset version records it.
    """
    ordered = sorted(hashes)
    count = len(ordered)
    # Rounded: 0.1 + 0.2 is 0.30000000000000004, which would pull the image at 0.3 into val.
    train_end = round(split.train, 9)
    val_end = round(split.train + split.val, 9)
    assignment = {}
    for rank, sha in enumerate(ordered):
        position = rank / count  # the first image of a class always trains
        if position < train_end:
            assignment[sha] = "train"
        elif position < val_end:
            assignment[sha] = "val"
        else:
            assignment[sha] = "test"
    return assignment
