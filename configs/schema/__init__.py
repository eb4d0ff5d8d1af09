"""The typed configuration: every field with its default, its bounds and a description.

One module per section (data, augment, model, optimizer, train, evaluation, serving, registry,
tracking, tuning, pipeline); `root` holds `Config` with the rules that join keys of several
sections; `backbones` is the one table of keras.applications backbones. This module is the
schema's public surface: callers name its types as `schema.DataConfig`, wherever they live.
"""

from configs.schema.augment import AUGMENT_LAYER_CLASSES, AugmentConfig, RandomResizedCropConfig
from configs.schema.backbones import BACKBONE_NAMES, BACKBONES, PREPROCESSING_MODES
from configs.schema.data import (
    CardConfig,
    DataConfig,
    NearDuplicatesConfig,
    SplitConfig,
    StoreConfig,
)
from configs.schema.evaluation import EvaluationConfig, GateConfig
from configs.schema.loss import BUILTIN_LOSSES, ClassBalanceConfig, LossConfig
from configs.schema.model import CNN_LAYER_SPECS, DEFAULT_CNN, HeadConfig, ModelConfig
from configs.schema.optimizer import OptimizerConfig, PlateauConfig
from configs.schema.pipeline import (
    BulkInferenceConfig,
    InfraValidationConfig,
    PipelineConfig,
    PushConfig,
    ValidationConfig,
)
from configs.schema.registry import RegistryConfig
from configs.schema.root import Config
from configs.schema.serving import (
    AuthConfig,
    BatchingConfig,
    MonitoringConfig,
    RequestLogConfig,
    ServingConfig,
    TlsConfig,
)
from configs.schema.tracking import MlflowConfig, TrackingConfig
from configs.schema.train import EarlyStoppingConfig, EmaConfig, FineTuneConfig, TrainConfig
from configs.schema.tuning import ObjectiveSpec, SpaceSpec, TuningConfig

__all__ = [
    "AUGMENT_LAYER_CLASSES",
    "BACKBONES",
    "BACKBONE_NAMES",
    "BUILTIN_LOSSES",
    "CNN_LAYER_SPECS",
    "DEFAULT_CNN",
    "PREPROCESSING_MODES",
    "AugmentConfig",
    "AuthConfig",
    "BatchingConfig",
    "BulkInferenceConfig",
    "ClassBalanceConfig",
    "Config",
    "CardConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "EmaConfig",
    "EvaluationConfig",
    "FineTuneConfig",
    "GateConfig",
    "HeadConfig",
    "InfraValidationConfig",
    "LossConfig",
    "MlflowConfig",
    "ModelConfig",
    "MonitoringConfig",
    "NearDuplicatesConfig",
    "ObjectiveSpec",
    "OptimizerConfig",
    "PipelineConfig",
    "PlateauConfig",
    "PushConfig",
    "RandomResizedCropConfig",
    "RegistryConfig",
    "RequestLogConfig",
    "ServingConfig",
    "TlsConfig",
    "SpaceSpec",
    "SplitConfig",
    "StoreConfig",
    "TrackingConfig",
    "TrainConfig",
    "TuningConfig",
    "ValidationConfig",
]
