"""The YAML CNN's layers: the residual block's shapes, names and identity start."""

import keras
import numpy as np
import pytest

from configs import loader
from trainer import cnn, models


def backbone_of(*layers: str, side: int = 16, channels: int = 3) -> keras.Model:
    cfg = loader.load(None, [f"model.cnn=[{', '.join(layers)}]"]).model
    return models.build_feature_extractor(cfg, (side, side, channels))


def test_a_residual_block_keeping_the_shape_adds_its_input_unchanged():
    backbone = backbone_of("{conv: {filters: 8}}", "{residual: {filters: 8}}")
    names = [layer.name for layer in backbone.layers]
    assert "residual_1_shortcut" not in names  # same width and stride: the identity shortcut
    assert backbone.output.shape == (None, 16, 16, 8)
    # The second BatchNorm starts at gamma 0: the block begins as relu(input).
    images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    conv_out = keras.Model(backbone.input, backbone.get_layer("conv_1").output)(images)
    np.testing.assert_allclose(
        backbone(images, training=False), np.maximum(conv_out, 0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(("strides", "filters", "side_out"), [(2, 8, 8), (1, 16, 16), (2, 16, 8)])
def test_a_residual_block_changing_stride_or_width_projects_its_shortcut(
    strides, filters, side_out
):
    backbone = backbone_of(
        "{conv: {filters: 8}}", f"{{residual: {{filters: {filters}, strides: {strides}}}}}"
    )
    shortcut = backbone.get_layer("residual_1_shortcut")
    assert shortcut.kernel_size == (1, 1) and shortcut.strides == (strides, strides)
    assert backbone.output.shape == (None, side_out, side_out, filters)
    # Its main path trains from the start: gamma 0 only on the block's last BatchNorm.
    assert np.all(backbone.get_layer("residual_1_bn1").gamma.numpy() == 1)
    assert np.all(backbone.get_layer("residual_1_bn2").gamma.numpy() == 0)


def test_residual_blocks_are_numbered_and_take_the_model_momentum():
    cfg = loader.load(
        None, ["model.cnn=[{residual: {filters: 4}}, {residual: {filters: 8, strides: 2}}]"]
    ).model
    backbone = models.build_feature_extractor(cfg, (8, 8, 1), batch_norm_momentum=0.91)
    norms = [x for x in backbone.layers if isinstance(x, keras.layers.BatchNormalization)]
    assert [x.name for x in norms] == [
        "residual_1_bn1",
        "residual_1_bn2",
        "residual_1_shortcut_bn",  # 1 channel in, 4 out
        "residual_2_bn1",
        "residual_2_bn2",
        "residual_2_shortcut_bn",
    ]
    assert {x.momentum for x in norms} == {0.91}


def test_without_a_model_momentum_batch_norm_keeps_keras_default():
    backbone = backbone_of("{conv: {filters: 4}}", "{batch_norm: {}}")
    assert backbone.get_layer("batch_norm_1").momentum == cnn.KERAS_BATCH_NORM_MOMENTUM == 0.99
