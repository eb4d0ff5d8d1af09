"""What a push copies: the newest SavedModel of a run or export folder, and its blessing."""

import json
import os
from pathlib import Path

from core import locations, run_layout, saved_models
from registry import errors


def find_export(source: str | Path) -> Path:
    """The SavedModel folder a push copies: `source` itself or its newest numbered export."""
    if locations.is_url(str(source)):
        raise errors.ExportNotFound(
            f"{source} is a URL; give a local (or mounted) run or export folder (copy it first: "
            "aws s3 cp --recursive, gcloud storage cp -r)"
        )
    try:
        return saved_models.locate(os.path.abspath(source)).path
    except saved_models.SavedModelNotFound as error:
        raise errors.ExportNotFound(str(error)) from None


# The figures of an evaluation that a registry version records.
RECORDED_METRICS = ("accuracy", "macro_f1", "num_examples")


def beside(export_dir: Path, name: str) -> list[Path]:
    """Where an evaluation of the SavedModel in `export_dir` leaves file `name`, nearest first:
    beside it, in its export folder, in its run folder."""
    candidates = [export_dir / name, export_dir.parent / name]
    if export_dir.parent.name == run_layout.EXPORT:
        candidates.append(export_dir.parent.parent / name)
    return candidates


def read_metrics(export_dir: Path, metadata: dict) -> dict:
    """RECORDED_METRICS of the first readable metrics.json beside the SavedModel (see `beside`);
    for an export made before the evaluator became metrics' one writer, its `metadata`'s copy."""
    for path in beside(export_dir, run_layout.METRICS):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(metrics, dict):
            return {key: metrics[key] for key in RECORDED_METRICS if key in metrics}
    return metadata.get("metrics") or {}


def read_blessing(export_dir: Path) -> tuple[dict | None, str | None]:
    """The first blessing.json beside the SavedModel (see `beside`), and its path."""
    for path in beside(export_dir, run_layout.BLESSING):
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
    return export_dir.parent.parent.name if export_dir.parent.name == run_layout.EXPORT else None
