"""Deterministic, stratified train/val/test assignment keyed on content hashes."""

from configs import schema

SPLITS = ("train", "val", "test")
# With leakage: keep_eval, the copy in the first split listed here survives.
EVAL_FIRST = ("test", "val", "train")


def assign_stratified(units: dict[str, int], split: schema.SplitConfig) -> dict[str, str]:
    """Splits one class's units (an image by its hash, or a group of near-duplicates by its
    representative's hash, with its image count): {unit: split}, in the configured proportions.

    Units are ordered by key and cut at the cumulative fractions of their images, so each class
    gets its share (stratified), a unit is never cut, and the result depends only on the set of
    contents, never on file names or listing order. Adding images can move others across the
    cut; a new dataset version records it.
    """
    count = sum(units.values())
    # Rounded: 0.1 + 0.2 is 0.30000000000000004, which would pull the image at 0.3 into val.
    train_end = round(split.train, 9)
    val_end = round(split.train + split.val, 9)
    assignment = {}
    before = 0
    for key in sorted(units):
        position = before / count  # the first image of a class always trains
        if position < train_end:
            assignment[key] = "train"
        elif position < val_end:
            assignment[key] = "val"
        else:
            assignment[key] = "test"
        before += units[key]
    return assignment
