"""tracking: the MLflow server and experiment that runs and evaluations are logged to."""

from pydantic import Field

from configs.schema.base import Section


class MlflowConfig(Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI (file:/path, sqlite:///db, http://...); unset = off."
    )
    experiment: str = Field("imgclf", description="MLflow experiment name.")
    log_model: bool = Field(True, description="Log the exported SavedModel as an artefact.")


class TrackingConfig(Section):
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
