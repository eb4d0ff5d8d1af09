"""The one table of keras.applications backbones model.backbone can name: the constructor
trainer.models builds, the input its ImageNet weights expect, the smallest image side it takes."""

from dataclasses import dataclass
from typing import Literal, get_args

# How trainer.models.BackboneInput maps our [0, 1] RGB images to the input a backbone's ImageNet
# weights expect (keras.applications' preprocess_input modes; a test compares every backbone
# with its own preprocess_input):
#   tf:    scaled to [-1, 1]
#   torch: ImageNet mean and std normalised, RGB
#   caffe: 0-255, RGB flipped to BGR, ImageNet BGR mean subtracted
#   raw:   0-255; the model normalises inside its own graph
PreprocessingMode = Literal["tf", "torch", "caffe", "raw"]
PREPROCESSING_MODES = get_args(PreprocessingMode)


@dataclass(frozen=True)
class Backbone:
    """One keras.applications backbone (its ImageNet weights file: trainer.weights)."""

    application: str  # the keras.applications constructor, e.g. "MobileNetV2"
    preprocessing: PreprocessingMode
    # Built with include_preprocessing=True: its own graph normalises 0-255 input.
    include_preprocessing: bool = False
    min_side: int = 32  # the smallest data.image_size side the constructor accepts


BACKBONES = {
    "mobilenet_v2": Backbone("MobileNetV2", "tf"),
    "mobilenet_v3_small": Backbone("MobileNetV3Small", "raw", include_preprocessing=True),
    "mobilenet_v3_large": Backbone("MobileNetV3Large", "raw", include_preprocessing=True),
    "efficientnet_b0": Backbone("EfficientNetB0", "raw"),
    "efficientnet_b1": Backbone("EfficientNetB1", "raw"),
    "efficientnet_b2": Backbone("EfficientNetB2", "raw"),
    "efficientnet_b3": Backbone("EfficientNetB3", "raw"),
    "efficientnet_b4": Backbone("EfficientNetB4", "raw"),
    "efficientnet_b5": Backbone("EfficientNetB5", "raw"),
    "efficientnet_b6": Backbone("EfficientNetB6", "raw"),
    "efficientnet_b7": Backbone("EfficientNetB7", "raw"),
    "efficientnet_v2_b0": Backbone("EfficientNetV2B0", "raw", include_preprocessing=True),
    "efficientnet_v2_b1": Backbone("EfficientNetV2B1", "raw", include_preprocessing=True),
    "efficientnet_v2_b2": Backbone("EfficientNetV2B2", "raw", include_preprocessing=True),
    "efficientnet_v2_b3": Backbone("EfficientNetV2B3", "raw", include_preprocessing=True),
    "efficientnet_v2_s": Backbone("EfficientNetV2S", "raw", include_preprocessing=True),
    "resnet50": Backbone("ResNet50", "caffe"),
    "resnet101": Backbone("ResNet101", "caffe"),
    "resnet152": Backbone("ResNet152", "caffe"),
    "resnet50_v2": Backbone("ResNet50V2", "tf"),
    "resnet101_v2": Backbone("ResNet101V2", "tf"),
    "resnet152_v2": Backbone("ResNet152V2", "tf"),
    "vgg16": Backbone("VGG16", "caffe"),
    "vgg19": Backbone("VGG19", "caffe"),
    "densenet121": Backbone("DenseNet121", "torch"),
    "xception": Backbone("Xception", "tf", min_side=71),
    "convnext_tiny": Backbone("ConvNeXtTiny", "raw", include_preprocessing=True),
}
BACKBONE_NAMES = tuple(BACKBONES)


def min_image_side(backbone: str) -> int:
    """The smallest image side model.backbone takes (any, for cnn and custom)."""
    return BACKBONES[backbone].min_side if backbone in BACKBONES else 1
