"""Where SavedModels sit: TF Serving's numbered version folders, and the one rule that finds the
SavedModel a path means (a version folder, a folder of versions, or a run folder's export/)."""

from dataclasses import dataclass
from pathlib import Path

from core import run_layout
from core.errors import UserError

SAVED_MODEL_FILE = "saved_model.pb"  # what makes a folder a complete SavedModel


class SavedModelNotFound(UserError):
    """A path that holds no SavedModel, or not the version asked for."""


@dataclass(frozen=True)
class Located:
    base: Path  # the folder of numbered versions (or the lone version folder's parent)
    version: int | None  # None for a SavedModel folder whose name is not a number
    path: Path  # the SavedModel folder itself

    @property
    def name(self) -> str:
        """The model's name: its run's folder for <run>/export/, else the base folder's."""
        return self.base.parent.name if self.base.name == run_layout.EXPORT else self.base.name


def is_saved_model(path: Path) -> bool:
    return (Path(path) / SAVED_MODEL_FILE).is_file()


def saved_model_versions(base: Path) -> dict[int, Path]:
    """{n: base/n} for every numbered folder under `base` holding a complete SavedModel, in
    TF Serving's layout (a run's export/, or a model's folder in a store), sorted by n."""
    base = Path(base)
    if not base.is_dir():
        return {}
    found = {
        int(child.name): child
        for child in base.iterdir()
        if child.name.isdigit() and is_saved_model(child)
    }
    return dict(sorted(found.items()))


def locate(path: str | Path, version: int | None = None) -> Located:
    """The SavedModel `path` means: `path` itself when it holds one, else the newest (or
    `version`) of the numbered versions in `path` or in `path`/export/."""
    path = Path(path).expanduser()
    if is_saved_model(path):
        number = int(path.name) if path.name.isdigit() else None
        if version is not None and version != number:
            raise SavedModelNotFound(f"version {version} does not match the version folder {path}")
        return Located(path.parent if number is not None else path, number, path)
    for base in (path, path / run_layout.EXPORT):
        versions = saved_model_versions(base)
        if versions:
            number = max(versions) if version is None else version
            if number not in versions:
                raise SavedModelNotFound(
                    f"no version {version} under {base} (versions: {list(versions)})"
                )
            return Located(base, number, versions[number])
    expected = (
        f"expected a run folder (<run>/{run_layout.EXPORT}/<n>/), an export folder "
        f"(<export>/<n>/) or a folder with {SAVED_MODEL_FILE}"
    )
    if not path.is_dir():
        raise SavedModelNotFound(f"model path {path} is not a folder: {expected}")
    raise SavedModelNotFound(f"{path} holds no SavedModel: {expected}")
