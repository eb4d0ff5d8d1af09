"""Which SavedModel an evaluation runs, found from a folder or a registry label, and loaded.

A model is named by a run folder (its newest export/<n>/), an export folder (its newest <n>/),
a SavedModel version folder, or `registry:<model>@<label>` / `registry:<model>@<version>` in
the model store. Only the SavedModel contract (core/signatures.py) is used, so any exported
model evaluates the same way, whatever trained it, with or without test-time augmentation.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artifacts import export
from artifacts import models as served_models
from core import errors, run_layout, signatures
from registry import errors as registry_errors
from registry import sources, store

REGISTRY_PREFIX = "registry:"
# evaluation.gate.baseline's default: the production version of the model the pipeline pushes.
AUTO = "auto"
# evaluation.tta: each image alone, or averaged with its horizontal mirror.
NO_TTA, FLIP = "none", "flip"


class ModelNotFound(errors.UserError):
    """The model to evaluate (or compare with) cannot be found."""


class NothingLabelled(ModelNotFound):
    """A registry label (or model, or store) that does not exist yet: before a first promotion."""


class TtaUnsupported(errors.UserError):
    """evaluation.tta asks for a signature the model was exported without."""


@dataclass(frozen=True)
class ModelSource:
    spec: str  # as given: a folder or registry:<model>@<label>
    path: Path  # the SavedModel version folder
    name: str  # a short name: the run id, or <model>-v<n> in a store
    run_dir: Path | None  # the run that exported it, when it is a run's export
    metadata: dict  # assets.extra/imgclf.json: class names, run id, dataset version, config

    @property
    def history_csv(self) -> Path | None:
        path = self.run_dir / run_layout.HISTORY if self.run_dir else None
        return path if path is not None and path.is_file() else None


def resolve(spec: str, registry_store: str | Path) -> ModelSource:
    """The SavedModel `spec` names; ModelNotFound when there is none."""
    if spec.startswith(REGISTRY_PREFIX):
        return resolve_registry(spec, registry_store)
    try:
        path = sources.find_export(spec)
    except registry_errors.ExportNotFound as error:
        raise ModelNotFound(str(error)) from None
    run_dir = None
    if path.parent.name == run_layout.EXPORT and (path.parent.parent / run_layout.CONFIG).is_file():
        run_dir = path.parent.parent
    if run_dir is not None:
        name = run_dir.name
    elif path.name.isdigit():
        name = f"{path.parent.name}-v{path.name}"
    else:
        name = path.name
    return ModelSource(spec, path, name, run_dir, export.read_metadata(path))


def resolve_registry(spec: str, registry_store: str | Path) -> ModelSource:
    """`registry:<model>@<label>` (or @<version>) -> that version's folder in the store."""
    model, _, wanted = spec.removeprefix(REGISTRY_PREFIX).partition("@")
    if not model or not wanted:
        raise ModelNotFound(
            f"{spec}: expected registry:<model>@<label> or registry:<model>@<version>, "
            "e.g. registry:digits@production"
        )
    try:
        listed = store.list_versions(registry_store, model)
    except registry_errors.NotFound as error:
        raise NothingLabelled(f"{spec}: {error}") from None
    versions = [v for v in listed if v.status == store.ACTIVE]
    where = os.path.abspath(registry_store)
    if wanted.isdigit():
        chosen = [v for v in versions if v.version == int(wanted)]
        known = ", ".join(str(v.version) for v in versions) or "none"
        problem, fix = f"no active version {wanted} in {where} (versions: {known})", ""
    else:
        chosen = [v for v in versions if wanted in v.labels]
        labelled = sorted({f"{label} -> {v.version}" for v in versions for label in v.labels})
        problem = (
            f"no version labelled {wanted!r} in {where} ({', '.join(labelled) or 'no labels'})"
        )
        fix = f"; label one with `imgclf registry promote {model} <version> --label {wanted}`"
    if not chosen:
        missing = ModelNotFound if wanted.isdigit() else NothingLabelled
        raise missing(f"{spec}: {model} has {problem}{fix}")
    version = chosen[0]
    return ModelSource(
        spec, version.path, f"{model}-v{version.version}", None, export.read_metadata(version.path)
    )


def production_spec(model: str) -> str:
    """What evaluation.gate.baseline `auto` compares with: `model`'s production version."""
    return f"{REGISTRY_PREFIX}{model}@{store.PRODUCTION}"


def same_model(first: ModelSource, second: ModelSource) -> bool:
    """One SavedModel folder, or exports of one training run (a version pushed from it)."""
    if first.path.resolve() == second.path.resolve():
        return True
    run_id = first.metadata.get("run_id")
    return run_id is not None and run_id == second.metadata.get("run_id")


class Classifier:
    """A SavedModel's `serving_default`: encoded images in, class probabilities out. With
    tta=flip, the model's own preprocessing (`preprocess_images`) decodes each image once and
    `predict_images` scores it and its horizontal mirror, whose scores are averaged.

    `class_names` comes from the model's own `classes` output, the label map it serves with.
    """

    def __init__(self, source: ModelSource, tta: str = NO_TTA):
        self.source = source
        self.tta = tta
        try:
            self.served = served_models.ServedModel(source.name, 0, source.path)
        except served_models.ModelLoadError as error:
            raise ModelNotFound(str(error)) from None
        missing = {signatures.PREPROCESS, signatures.PREDICT_IMAGES} - set(self.served.signatures)
        if tta == FLIP and missing:
            raise TtaUnsupported(
                f"evaluation.tta=flip needs the {' and '.join(sorted(missing))} signature(s), "
                f"which {source.spec} was exported without: re-export it with `imgclf export` "
                "or set evaluation.tta=none"
            )
        probe = self.served.predict([served_models.build_warmup_png()])
        self.class_names = [name.decode() for name in probe["classes"][0]]
        self.index = {name: i for i, name in enumerate(self.class_names)}

    def scores(self, images: list[bytes]) -> np.ndarray:
        """float32 [N, C] probabilities in `class_names` order; InvalidInputError when an image
        does not decode."""
        if self.tta == NO_TTA:
            return self.served.predict(images)[signatures.SCORES]
        encoded = {signatures.IMAGE_BYTES: self.served.image_array(images)}
        pixels = self.served.run(signatures.PREPROCESS, encoded)[signatures.IMAGES]
        # One call for both views, [images; mirrors]: NHWC, so axis 2 is left-right.
        both = np.concatenate([pixels, pixels[:, :, ::-1, :]])
        scores = self.served.run(signatures.PREDICT_IMAGES, {signatures.IMAGES: both})
        views = scores[signatures.SCORES]
        return (views[: len(images)] + views[len(images) :]) / 2


InvalidImage = served_models.InvalidInputError
