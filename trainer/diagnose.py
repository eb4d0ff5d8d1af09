"""A training outcome explained in words: a model that learnt its training images but answers
validation at chance. (A model that answers one class for everything is the evaluator's
diagnosis: evaluator/diagnose.py.)"""

import math

# Training accuracy that closes this share of the gap between the majority rate and 1.0 means
# the model did learn its training images.
LEARNT_SHARE = 0.5
# Validation accuracy within this of the majority rate (or two standard errors, if larger) is
# indistinguishable from always answering the majority class.
CHANCE_MARGIN = 0.05


def chance_validation(
    history: dict[str, list[float]],
    val_counts: dict[str, int],
    has_batch_norm: bool,
    batch_norm_momentum: float | None,
) -> str | None:
    """A sentence when validation accuracy sat at chance while training accuracy climbed."""
    val_accuracy, accuracy = history.get("val_accuracy"), history.get("accuracy")
    total = sum(val_counts.values())
    if not val_accuracy or not accuracy or not total:
        return None
    majority_class = max(val_counts, key=val_counts.get)
    majority = val_counts[majority_class] / total
    ceiling = majority + max(CHANCE_MARGIN, 2 * math.sqrt(majority * (1 - majority) / total))
    recent = val_accuracy[-3:]
    if max(recent) > ceiling or accuracy[-1] < majority + LEARNT_SHARE * (1 - majority):
        return None
    sentence = (
        f"validation accuracy stayed at chance ({max(recent):.2f} in the last "
        f"{len(recent)} epoch(s); always answering {majority_class!r} scores {majority:.2f}) "
        f"while training accuracy reached {accuracy[-1]:.2f}: the model does not generalise"
    )
    if has_batch_norm:
        used = f"{batch_norm_momentum:g}" if batch_norm_momentum is not None else "each layer's own"
        return (
            f"{sentence}. Its BatchNorm layers evaluate with moving statistics that lag the "
            f"weights when an epoch has few steps (momentum {used}): set "
            "model.batch_norm_momentum: auto or 0.9, or train more steps per epoch "
            "(a smaller data.batch_size)"
        )
    return (
        f"{sentence}. Check that validation images look like training ones (augmentation, "
        "data.resize), lower optimizer.learning_rate, or add regularisation"
    )
