"""configs.schema.backbones: the one backbone table names Keras' own constructors, inputs and
smallest image sides; trainer.models builds every entry from it."""

import inspect

import keras
import pytest

from configs import schema
from trainer import models


@pytest.mark.parametrize("name", schema.BACKBONE_NAMES)
def test_entry_names_a_keras_constructor_and_its_preprocessing(name):
    backbone = schema.BACKBONES[name]
    constructor = getattr(keras.applications, backbone.application)
    assert backbone.preprocessing in schema.PREPROCESSING_MODES
    # Where Keras can normalise 0-255 input inside the model, the table asks it to.
    takes = "include_preprocessing" in inspect.signature(constructor).parameters
    assert backbone.include_preprocessing == takes


@pytest.mark.parametrize("name", schema.BACKBONE_NAMES)
def test_min_side_is_the_smallest_side_keras_builds(name):
    """One less is refused by Keras itself (tests/trainer/test_models.py builds at min_side)."""
    smallest = schema.BACKBONES[name].min_side
    side = smallest - 1
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest}"):
        models.build_application(name, input_shape=(side, side, 3))
