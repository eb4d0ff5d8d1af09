"""Real photos for preprocessing tests: scikit-learn's sample images (china.jpg and flower.jpg,
427x640, shipped inside the package, so no download) and a camera-sized mosaic of them."""

import functools

import numpy as np


@functools.cache
def sample_photos() -> tuple[np.ndarray, np.ndarray]:
    """(china, flower), uint8 [427, 640, 3] each."""
    # Imported here: scikit-learn takes about a second to import.
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return china, flower


@functools.cache
def large_photo() -> np.ndarray:
    """uint8 [1000, 1500, 3]: both photos and their mirror images tiled at their own resolution
    (nothing resampled), so there is real detail at every pixel, as in a camera's picture."""
    china, flower = sample_photos()
    rows = [
        np.concatenate([china, flower[:, ::-1], china[:, ::-1]], axis=1),
        np.concatenate([flower[::-1], china[::-1, ::-1], flower], axis=1),
        np.concatenate([china[::-1], flower, china], axis=1),
    ]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:1000, :1500])
