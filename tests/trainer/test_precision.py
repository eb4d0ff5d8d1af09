"""Mixed precision: a small CNN trains on the digits under mixed_bfloat16 and mixed_float16."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import loader
from trainer import distribute, loop, models, task

BATCH = 32
EPOCHS = 5
CLASSES = 10
TRAIN_COUNT = 1500  # of the 1,797 digits; the other 297 are held out


@pytest.fixture(autouse=True)
def float32_afterwards():
    """The dtype policy is process-wide: put it back for the tests that share the process."""
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float32 images in [0, 1] and int64 labels."""
    from sklearn import datasets

    data = datasets.load_digits()
    return (data.images[..., None] / 16.0).astype(np.float32), data.target.astype(np.int64)


def precision_config(precision: str, *overrides: str):
    return loader.load(
        None,
        [
            f"train.precision={precision}",
            "data.image_size=[8, 8]",
            "data.channels=1",
            f"data.batch_size={BATCH}",
            "model.cnn=[{conv: {filters: 16}}, {max_pool: {}}, {conv: {filters: 32}}]",
            "model.head={pooling: flatten, dropout: 0}",
            "optimizer.learning_rate=0.01",
            "optimizer.schedule=constant",
            f"train.epochs={EPOCHS}",
            "train.early_stopping.enabled=false",
            *overrides,
        ],
    )


def build(cfg, steps_per_epoch: int) -> tuple[keras.Model, list[loop.Phase]]:
    """The model and phases as trainer.task builds them, after setting the global policy."""
    precision = distribute.resolve_precision(cfg.train)
    distribute.set_precision(precision)
    keras.utils.set_random_seed(0)
    model = models.build_model(cfg.model, (8, 8, 1), CLASSES)
    return model, task.build_phases(cfg, model, steps_per_epoch, precision)


def fit(cfg, model, phases, images, labels, run_dir) -> tuple[loop.TrainingLoop, loop.FitResult]:
    """Trains with the loop on in-memory examples, reshuffled every epoch."""
    strategy = tf.distribute.get_strategy()

    def make_train_data(epoch, skip):
        data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
        data = data.shuffle(len(labels), seed=epoch).batch(BATCH)
        return strategy.distribute_datasets_from_function(lambda context: data)

    training = loop.TrainingLoop(model, phases, strategy, cfg.train, BATCH, CLASSES, run_dir)
    return training, training.fit(make_train_data, len(labels) // BATCH, None)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "compute_dtype"),
    [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")],
)
def test_a_small_cnn_trains_in_mixed_precision(tmp_path, digits, precision, compute_dtype):
    images, labels = digits
    train_images, train_labels = images[:TRAIN_COUNT], labels[:TRAIN_COUNT]
    cfg = precision_config(precision)
    model, phases = build(cfg, TRAIN_COUNT // BATCH)

    backbone = model.get_layer(models.BACKBONE)
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 2
    for conv in convs:
        assert conv.dtype_policy.compute_dtype == compute_dtype
        assert conv.dtype_policy.variable_dtype == "float32"
    assert backbone(images[:4]).dtype == compute_dtype  # the features really are low precision
    assert model.get_layer("probs").dtype_policy.compute_dtype == "float32"
    assert model(images[:4]).dtype == "float32"
    [phase] = phases
    if precision == "mixed_float16":
        assert isinstance(phase.optimizer, keras.optimizers.LossScaleOptimizer)
    else:  # bfloat16 has float32's exponent range: no loss scaling
        assert not isinstance(phase.optimizer, keras.optimizers.LossScaleOptimizer)

    training, result = fit(cfg, model, phases, train_images, train_labels, tmp_path)

    assert {weight.dtype for weight in model.weights} == {"float32"}
    if precision == "mixed_float16":
        scale = float(keras.ops.convert_to_numpy(phase.optimizer.dynamic_scale))
        assert math.isfinite(scale) and scale >= 1.0
    losses = result.history["loss"]
    assert len(losses) == EPOCHS and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.25 * losses[0], losses
    # Held-out digits, evaluated in the same precision.
    held_out = tf.data.Dataset.from_tensor_slices(
        (images[TRAIN_COUNT:], labels[TRAIN_COUNT:])
    ).batch(256)
    _, accuracy = training.evaluate(held_out)
    assert accuracy > 0.9, (precision, accuracy, result.history)


def first_step_norm(run_dir, digits, precision: str, *overrides: str) -> float:
    """The norm over all tensors of one plain-SGD step from the seeded start, divided by the rate:
    the gradient the optimizer applied."""
    images, labels = digits
    cfg = precision_config(
        precision, "train.epochs=1", "optimizer.name=sgd", "optimizer.momentum=0", *overrides
    )
    model, phases = build(cfg, 1)
    before = model.get_weights()
    fit(cfg, model, phases, images[:BATCH], labels[:BATCH], run_dir)
    rate = cfg.optimizer.learning_rate
    updates = [(b - a) / rate for b, a in zip(before, model.get_weights(), strict=True)]
    return math.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in updates))


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_global_clipping_bounds_the_update_in_every_precision(tmp_path, digits, precision):
    clip = 0.05
    free = first_step_norm(tmp_path / "free", digits, precision)
    assert free > 2 * clip  # so clipping has something to do
    clipped = first_step_norm(
        tmp_path / "clipped", digits, precision, f"train.clip_global_norm={clip}"
    )
    # Under mixed_float16 the loss-scaled gradients are unscaled before clipping; clipping the
    # scaled ones made this step 32768x too small.
    assert clipped == pytest.approx(clip, rel=1e-2)
