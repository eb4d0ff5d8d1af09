"""evaluator.models: flip test-time augmentation is the mean of an image's and its mirror's
scores, through the SavedModel's own preprocessing."""

import numpy as np
import pytest
from PIL import ImageOps

from evaluator import models
from tests.conftest import encode, export_dense_model, noise_image

pytestmark = pytest.mark.slow  # exports and loads real SavedModels

SIDE = 8


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> models.ModelSource:
    """Flatten -> Dense with random weights: left and right pixels weigh differently."""
    base = tmp_path_factory.mktemp("dense")
    export_dense_model(base, SIDE, 3, ["a", "b", "c"])
    return models.resolve(str(base), tmp_path_factory.mktemp("store"))


def test_flip_tta_averages_the_scores_of_each_image_and_its_mirror(source):
    pictures = [noise_image(seed, (SIDE, SIDE)) for seed in range(6)]
    images = [encode(picture, "PNG") for picture in pictures]
    mirrors = [encode(ImageOps.mirror(picture), "PNG") for picture in pictures]

    plain = models.Classifier(source).scores(images + mirrors)
    flipped = models.Classifier(source, models.FLIP).scores(images)

    alone, mirrored = plain[: len(images)], plain[len(images) :]
    assert np.abs(alone - mirrored).max() > 0.01  # the model is not mirror-symmetric
    np.testing.assert_allclose(flipped, (alone + mirrored) / 2, atol=1e-5)
    assert flipped.shape == (6, 3) and flipped.dtype == np.float32


def test_flip_tta_skips_only_the_image_that_does_not_decode(source):
    from evaluator import predictions

    good = encode(noise_image(1, (SIDE, SIDE)), "PNG")
    scores = predictions.score(models.Classifier(source, models.FLIP), [good, b"not an image"])
    assert isinstance(scores[0], np.ndarray) and scores[0].shape == (3,)
    assert isinstance(scores[1], str) and "decode" in scores[1]
