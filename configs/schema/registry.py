"""registry: the model store pushed versions are kept in."""

from pydantic import Field, field_validator

from configs.schema.base import PathSetting, Section, local_folder


class RegistryConfig(Section):
    store: PathSetting = Field(
        "model_store",
        description="Model store folder (TF Serving layout plus models.config); local or "
        "mounted, since updates are locked with flock.",
    )

    @field_validator("store")
    @classmethod
    def _store_is_a_folder(cls, store: str) -> str:
        return local_folder(store, "mount the bucket (gcsfuse, mountpoint-s3) or use a volume")
