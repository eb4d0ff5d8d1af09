"""The training loss, per example, and extra validation metrics: built in or from a user module.

Every loss here returns one value per example (reduction "none"): the training loop weights it
by class, sums it over the global batch and divides by the global batch size, so the same loss
works under every tf.distribute strategy. Losses and metrics are training-only: the exported
model never holds them, so serving needs no user code.
"""

import functools
import inspect
from collections.abc import Callable

import keras
import numpy as np

from configs import schema
from trainer import user_code

PROBE_BATCH = 2  # examples a custom loss or metric is tried on before training starts


class CustomObjectError(user_code.UserCodeError):
    """train.custom_objects, train.loss or train.metrics names something unusable."""


def build_crossentropy(cfg: schema.LossConfig, num_classes: int) -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy(
        label_smoothing=cfg.label_smoothing, reduction="none"
    )


def build_focal(cfg: schema.LossConfig, num_classes: int) -> keras.losses.Loss:
    """Keras' alpha-balanced focal loss: sum over classes of alpha x (1 - p)^gamma x CE, with
    the targets smoothed first."""
    if isinstance(cfg.alpha, list) and len(cfg.alpha) != num_classes:
        raise CustomObjectError(
            f"train.loss.alpha has {len(cfg.alpha)} values but the dataset has {num_classes} "
            "classes: give one per class in label order, or a single number"
        )
    return keras.losses.CategoricalFocalCrossentropy(
        alpha=cfg.alpha, gamma=cfg.gamma, label_smoothing=cfg.label_smoothing, reduction="none"
    )


LOSSES = {"categorical_crossentropy": build_crossentropy, "focal": build_focal}


def build_loss(cfg: schema.TrainConfig, num_classes: int) -> Callable:
    """train.loss as a callable taking (one-hot targets, probabilities), returning (batch,)."""
    loss_cfg = cfg.loss
    if loss_cfg.name in LOSSES:
        return LOSSES[loss_cfg.name](loss_cfg, num_classes)
    found = lookup(cfg.custom_objects, "LOSSES", loss_cfg.name, "train.loss.name")
    where = f"LOSSES[{loss_cfg.name!r}] of {cfg.custom_objects}"
    options = loss_cfg.options
    if isinstance(found, type) and issubclass(found, keras.losses.Loss):
        try:
            loss = found(reduction="none", **options)
        except TypeError as error:
            raise CustomObjectError(
                f"train.loss.options: {where} does not take {sorted(options)} ({error})"
            ) from None
    elif callable(found) and not isinstance(found, (type, keras.losses.Loss)):
        check_signature(found, options, "train.loss.name", where)
        loss = functools.partial(found, **options)
    else:
        raise CustomObjectError(
            f"train.loss.name: {where} must be a function (y_true, y_pred) or a "
            f"keras.losses.Loss subclass (received {found!r})"
        )
    targets, probabilities = probe_batch(num_classes)
    value = probe(lambda: loss(targets, probabilities), "train.loss.name", where)
    if tuple(value.shape) != (PROBE_BATCH,):
        raise CustomObjectError(
            f"train.loss.name: {where} must return one loss per example, shape (batch,) "
            f"(received shape {tuple(value.shape)} for a batch of {PROBE_BATCH})"
        )
    return loss


def build_metrics(cfg: schema.TrainConfig, num_classes: int) -> dict[str, keras.metrics.Metric]:
    """{name: Metric} for train.metrics; each takes (one-hot targets, probabilities)."""
    return {name: build_metric(cfg.custom_objects, name, num_classes) for name in cfg.metrics}


def build_metric(location: str, name: str, num_classes: int) -> keras.metrics.Metric:
    found = lookup(location, "METRICS", name, "train.metrics")
    where = f"METRICS[{name!r}] of {location}"
    if isinstance(found, type) and issubclass(found, keras.metrics.Metric):
        metric = probe(lambda: found(name=name), "train.metrics", where)
    elif callable(found) and not isinstance(found, (type, keras.metrics.Metric)):
        check_signature(found, {}, "train.metrics", where)
        metric = keras.metrics.MeanMetricWrapper(found, name=name)
    else:
        raise CustomObjectError(
            f"train.metrics: {where} must be a function (y_true, y_pred) or a "
            f"keras.metrics.Metric subclass (received {found!r})"
        )
    targets, probabilities = probe_batch(num_classes)
    probe(lambda: metric.update_state(targets, probabilities), "train.metrics", where)
    result = keras.ops.convert_to_numpy(metric.result())
    if result.shape != ():
        raise CustomObjectError(
            f"train.metrics: {where} must give one number (received shape {result.shape})"
        )
    metric.reset_state()
    return metric


def effective_number_weights(counts: list[int], beta: float) -> list[float]:
    """Cui et al. 2019: (1 - beta) / (1 - beta^n) per class, scaled to average 1 over classes.
    A class without training images counts as one, like `auto` does."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return (weights * len(weights) / weights.sum()).tolist()


# --- the user's module ---


def lookup(location: str, registry: str, name: str, key: str):
    module = user_code.load_module(location, "train.custom_objects")
    entries = getattr(module, registry, None)
    if not isinstance(entries, dict):
        raise CustomObjectError(
            f"{key}: {location} has no {registry} dict; define {registry} = "
            f"{{{name!r}: your_function}} in it"
        )
    if name not in entries:
        raise CustomObjectError(
            f"{key}: {name!r} is not in {registry} of {location} "
            f"(it has: {', '.join(map(str, entries)) or 'nothing'})"
        )
    return entries[name]


def check_signature(function, options: dict, key: str, where: str) -> None:
    try:
        inspect.signature(function).bind("y_true", "y_pred", **options)
    except TypeError as error:
        extra = f" and keyword arguments {sorted(options)} (train.loss.options)" if options else ""
        raise CustomObjectError(
            f"{key}: {where} must take (y_true, y_pred){extra}: {error}"
        ) from None
    except ValueError:
        pass  # builtins without a signature: the probe call checks them


def probe_batch(num_classes: int):
    """One-hot targets and uniform probabilities of PROBE_BATCH examples."""
    labels = np.arange(PROBE_BATCH) % num_classes
    targets = np.eye(num_classes, dtype=np.float32)[labels]
    return targets, np.full((PROBE_BATCH, num_classes), 1 / num_classes, np.float32)


def probe(call, key: str, where: str):
    """Runs `call` (a custom object on a probe batch) so a broken one fails before training."""
    try:
        return call()
    except Exception as error:
        raise CustomObjectError(
            f"{key}: {where} failed on a batch of one-hot targets and probabilities: "
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
        ) from None
