"""The base of every config section and the field types several sections share."""

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from core import locations


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


# A setting used as a local path (or, where it says so, a bucket URL); file:// is stripped.
PathSetting = Annotated[str, BeforeValidator(locations.without_file_scheme)]


def local_folder(path: str, fix: str) -> str:
    if locations.is_url(path):
        raise ValueError(f"needs a local (or mounted) path, not a URL (received {path}): {fix}")
    return path
