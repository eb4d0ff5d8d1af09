"""What a push copies: the newest SavedModel of a run or export folder, and its blessing."""

import json
import os
from pathlib import Path

from core import locations
from registry import errors
from trainer import runs

BLESSING_FILE = "blessing.json"  # {"blessed": bool, ...}, written by the evaluator


def find_export(source: str | Path) -> Path:
    """The SavedModel folder a push copies: `source` itself or its newest numbered export."""
    if locations.is_url(str(source)):
        raise errors.ExportNotFound(
            f"{source} is a URL; give a local (or mounted) run or export folder (copy it first: "
            "aws s3 cp --recursive, gcloud storage cp -r)"
        )
    source = Path(os.path.abspath(source))
    if (source / runs.SAVED_MODEL_FILE).is_file():
        return source
    for base in (source, source / runs.EXPORT):
        numbered = runs.saved_model_versions(base)
        if numbered:
            return numbered[max(numbered)]
    raise errors.ExportNotFound(
        f"{source} holds no SavedModel: expected a run folder (<run>/{runs.EXPORT}/<n>/), an "
        f"export folder (<export>/<n>/) or a folder with {runs.SAVED_MODEL_FILE}"
    )


def read_blessing(export_dir: Path) -> tuple[dict | None, str | None]:
    """The first blessing.json beside the SavedModel, its export folder or its run folder."""
    candidates = [export_dir / BLESSING_FILE, export_dir.parent / BLESSING_FILE]
    if export_dir.parent.name == runs.EXPORT:
        candidates.append(export_dir.parent.parent / BLESSING_FILE)
    for path in candidates:
        if path.is_file():
            try:
                blessing = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise errors.InvalidBlessing(f"{path} is not valid JSON: {error}") from None
            if not isinstance(blessing, dict) or not isinstance(blessing.get("blessed"), bool):
                raise errors.InvalidBlessing(
                    f'{path} must be a JSON object with "blessed": true or false '
                    f"(received {blessing!r:.200})"
                )
            return blessing, str(path)
    return None, None


def run_id_from_path(export_dir: Path) -> str | None:
    """<run>/export/<n>/ names its run; any other folder does not."""
    return export_dir.parent.parent.name if export_dir.parent.name == runs.EXPORT else None
