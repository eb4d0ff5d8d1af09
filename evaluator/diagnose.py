"""An evaluation's outcome explained in words: a model that answers one class for every image,
whatever it is shown."""


def one_class_answers(metrics: dict) -> str | None:
    """A sentence when every evaluated image got the same predicted class."""
    matrix = metrics.get("confusion_matrix")
    names = metrics.get("class_names")
    if not matrix or not names or len(names) < 2:
        return None
    predicted = [sum(row[column] for row in matrix) for column in range(len(names))]
    total = sum(predicted)
    answered = [column for column, count in enumerate(predicted) if count]
    true_classes = sum(1 for row in matrix if sum(row))
    if total < 2 or len(answered) != 1 or true_classes < 2:
        return None
    images = f"{metrics['split']} images" if metrics.get("split") else "images"
    return (
        f"every one of the {total} {images} was predicted as {names[answered[0]]!r}: "
        "the model ignores its input"
    )
