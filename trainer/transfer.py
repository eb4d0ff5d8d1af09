"""Transfer-learning phases: which backbone layers train, and from which epoch.

Phase `head` trains the head on a frozen backbone; phase `fine_tune` then unfreezes the
backbone's top layers (all, the last N, or from a named layer) at a lower learning rate, with
BatchNorm frozen. In Keras 3 a BatchNormalization layer with trainable=False runs in inference
mode, so freezing it both keeps its moving statistics and stops it normalising with batch
statistics of the new, small dataset. Without train.fine_tune settings a run has one phase,
`full`, where every layer trains.
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import keras

from configs import loader, schema
from trainer import models


@dataclass(frozen=True)
class PhasePlan:
    name: str  # "full", "head" or "fine_tune"
    first_epoch: int
    epochs: int
    learning_rate_factor: float = 1.0


def plan(cfg: schema.TrainConfig) -> list[PhasePlan]:
    fine_tune = cfg.fine_tune
    if not fine_tune.enabled:
        return [PhasePlan("full", 0, cfg.epochs)]
    phases = []
    if fine_tune.head_epochs:
        phases.append(PhasePlan("head", 0, fine_tune.head_epochs))
    if fine_tune.head_epochs < cfg.epochs:
        factor = fine_tune.learning_rate_factor if fine_tune.head_epochs else 1.0
        remaining = cfg.epochs - fine_tune.head_epochs
        phases.append(PhasePlan("fine_tune", fine_tune.head_epochs, remaining, factor))
    return phases


def trainable_setter(
    model: keras.Model, phase: PhasePlan, cfg: schema.FineTuneConfig
) -> Callable[[], None]:
    """A function that sets the model's trainable flags for `phase` (checked now, run later)."""
    if phase.name == "full":
        return lambda: setattr(model, "trainable", True)
    backbone = find_backbone(model)
    first = 0
    if phase.name == "fine_tune":
        first = first_unfrozen_layer(backbone, cfg)
        check_something_trains(backbone.layers[first:], cfg)

    def apply() -> None:
        model.trainable = True
        backbone.trainable = phase.name != "head"  # propagates to every nested layer
        if phase.name != "fine_tune":
            return
        for index, layer in enumerate(backbone.layers):
            batch_norm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = index >= first and not (cfg.freeze_batch_norm and batch_norm)

    return apply


def find_backbone(model: keras.Model) -> keras.Model:
    """The feature extractor phases freeze: every built-in model has one; a custom model needs
    a sub-model named `backbone`."""
    try:
        return model.get_layer(models.BACKBONE)
    except ValueError:
        raise loader.ConfigError(
            f"train.fine_tune needs a sub-model named {models.BACKBONE!r} in the model (the "
            "feature extractor its phases freeze and unfreeze); name it so in model.build_fn's "
            "model, or remove train.fine_tune"
        ) from None


def first_unfrozen_layer(backbone: keras.Model, cfg: schema.FineTuneConfig) -> int:
    """Index in backbone.layers of the first layer phase 2 trains.

    unfreeze_top_layers counts every layer, weightless ones too, as `base_model.layers[-N:]`
    does in Keras' fine-tuning guide.
    """
    names = [layer.name for layer in backbone.layers]
    if cfg.unfreeze_top_layers:
        if cfg.unfreeze_top_layers > len(names):
            raise loader.ConfigError(
                f"train.fine_tune.unfreeze_top_layers: {cfg.unfreeze_top_layers} is more than "
                f"the {len(names)} layers of the backbone"
            )
        return len(names) - cfg.unfreeze_top_layers
    if cfg.unfreeze_from_layer:
        if cfg.unfreeze_from_layer not in names:
            close = difflib.get_close_matches(cfg.unfreeze_from_layer, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise loader.ConfigError(
                f"train.fine_tune.unfreeze_from_layer: the backbone has no layer named "
                f"{cfg.unfreeze_from_layer!r}{hint} (`imgclf train --dry-run` lists its layers)"
            )
        return names.index(cfg.unfreeze_from_layer)
    return 0


def check_something_trains(layers: list[keras.Layer], cfg: schema.FineTuneConfig) -> None:
    """Phase 2 must unfreeze at least one backbone layer that has weights."""
    for layer in layers:
        if cfg.freeze_batch_norm and isinstance(layer, keras.layers.BatchNormalization):
            continue
        if layer.weights:
            return
    names = ", ".join(layer.name for layer in layers)
    raise loader.ConfigError(
        f"train.fine_tune: phase 2 would unfreeze only layers without trainable weights "
        f"({names}); raise unfreeze_top_layers or pick an earlier unfreeze_from_layer"
    )
