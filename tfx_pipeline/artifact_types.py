"""The pipeline's artifact types (what each component's outputs are) and their one constructor."""

from tfx_pipeline import metadata

EXTERNAL_SOURCE = "ExternalSource"
EXAMPLES = "Examples"
STATISTICS = "ExampleStatistics"
ANOMALIES = "ExampleAnomalies"
HYPERPARAMETERS = "HyperParameters"
MODEL = "Model"
REGISTRY_MODEL = "RegistryModel"
EVALUATION = "ModelEvaluation"
BLESSING = "ModelBlessing"
INFRA_BLESSING = "InfraBlessing"
PUSHED_MODEL = "PushedModel"
PREDICTIONS = "BulkPredictions"


def artifact(type_: str, uri, **properties) -> metadata.Artifact:
    """An output of `type_` at `uri` (a path, a URL, or None for a pure record)."""
    return metadata.Artifact(type_, None if uri is None else str(uri), properties)
