"""Which model versions are served: read from a models.config or one model folder, rescanned
while serving, so new versions and label changes load without a restart.

A version is served once it has loaded and warmed up; only then does the version it replaces
stop taking requests. A version that fails to load is logged, reported by the status API and
skipped until its files change, while what was serving keeps serving.
"""

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from artifacts import models, runtimes
from configs import schema
from core import errors, saved_models
from serving.server import batching
from serving.server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

# The registry's naming rules: a name or label is only ever a dictionary key here, but the names
# also come from a file a user edits, and they end up in logs and metric labels.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

LATEST, ALL, SPECIFIC = "latest", "all", "specific"


class ModelConfigError(errors.UserError):
    """A models.config the server cannot serve."""


class NotFound(Exception):
    """No such model, version or label: 404 / NOT_FOUND, worded as TF Serving words it."""


@dataclass(frozen=True)
class ModelSpec:
    """What to serve of one model: TF Serving's ModelConfig, reduced to what we honour."""

    name: str
    base_path: Path
    policy: str = LATEST
    num_versions: int = 1  # for LATEST
    versions: tuple[int, ...] = ()  # for SPECIFIC
    labels: dict[str, int] = field(default_factory=dict)

    def wanted(self, available: dict[int, Path]) -> set[int]:
        if self.policy == ALL:
            return set(available)
        if self.policy == SPECIFIC:
            return set(self.versions) & set(available)
        return set(sorted(available)[-self.num_versions :])


def check_name(name: str, pattern: re.Pattern, what: str, where: str) -> str:
    if not pattern.fullmatch(name):
        raise ModelConfigError(
            f"{where}: {what} {name!r} is not allowed; use letters, digits, '_', '-' "
            f"({pattern.pattern})"
        )
    return name


def read_model_config(path: str | Path) -> list[ModelSpec]:
    """The models of a TF Serving models.config (text protobuf), with clear errors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelConfigError(f"cannot read the model config {path}: {error}") from None
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ModelConfigError(
            f"{path} is not a valid TF Serving ModelServerConfig (text protobuf): {error}"
        ) from None
    specs = []
    for entry in config.model_config_list.config:
        name = check_name(entry.name, MODEL_NAME, "model name", str(path))
        if entry.model_platform not in ("", "tensorflow"):
            raise ModelConfigError(
                f"{path}: model {name!r} has model_platform {entry.model_platform!r}; "
                "only 'tensorflow' SavedModels are served"
            )
        if not entry.base_path:
            raise ModelConfigError(f"{path}: model {name!r} has no base_path")
        base_path = Path(entry.base_path)
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        policy = entry.model_version_policy.WhichOneof("policy_choice") or LATEST
        labels = {
            check_name(label, LABEL_NAME, "version label", str(path)): version
            for label, version in entry.version_labels.items()
        }
        specs.append(
            ModelSpec(
                name=name,
                base_path=base_path,
                policy=policy,
                num_versions=max(entry.model_version_policy.latest.num_versions, 1),
                versions=tuple(entry.model_version_policy.specific.versions),
                labels=labels,
            )
        )
    names = [spec.name for spec in specs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ModelConfigError(f"{path} names these models more than once: {duplicated}")
    if not specs:
        raise ModelConfigError(f"{path} lists no models under model_config_list")
    return specs


@dataclass
class ServedVersions:
    """What is served of one model right now. Replaced whole, never mutated, so a reader that
    took a reference sees one consistent state."""

    spec: ModelSpec
    versions: dict[int, models.ServedModel]
    failed: dict[int, str]  # version -> load error


class ModelManager:
    """Loads, swaps and unloads model versions; answers which version serves a request."""

    def __init__(
        self,
        read_specs: Callable[[], list[ModelSpec]],
        batching_config: schema.BatchingConfig | None = None,
        metrics: ServerMetrics | None = None,
        poll_seconds: float = 0,
        runtime: str = runtimes.SAVEDMODEL,
    ):
        self.read_specs = read_specs
        self.runtime = runtime
        self.batching_config = batching_config
        self.metrics = metrics or ServerMetrics()
        self.poll_seconds = poll_seconds
        self._served: dict[str, ServedVersions] = {}
        self._batchers: dict[tuple[str, int], batching.Batcher] = {}
        # Files that failed to load, by (model, version) -> saved_model.pb mtime: retried when
        # the files change, never on every poll.
        self._failed_files: dict[tuple[str, int], float] = {}
        self._reloading = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @classmethod
    def for_model_path(cls, name: str, base_path: str | Path, **options) -> "ModelManager":
        check_name(name, MODEL_NAME, "model name", "--model-name")
        # Fails now, with the folder's listing, rather than serving nothing.
        models.find_versions(base_path)
        spec = ModelSpec(name=name, base_path=Path(base_path))
        return cls(lambda: [spec], **options)

    @classmethod
    def for_model_config(cls, config_file: str | Path, **options) -> "ModelManager":
        read_model_config(config_file)
        return cls(lambda: read_model_config(config_file), **options)

    # --- loading ---

    def start(self) -> None:
        """Loads everything once (blocking), then rescans every `poll_seconds` in a thread."""
        self.reload()
        if self.poll_seconds > 0 and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        for batcher in list(self._batchers.values()):
            batcher.close()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - a bad rescan must never stop serving
                logger.exception("rescanning the model config failed; serving what is loaded")

    def reload(self) -> None:
        """One rescan: load new versions, then swap them in, then unload what they replace."""
        with self._reloading:
            try:
                specs = self.read_specs()
            except errors.UserError as error:
                logger.error("%s; serving what is loaded", error)
                return
            served = {}
            for spec in specs:
                served[spec.name] = self._reconcile(spec, self._served.get(spec.name))
            retired = [
                version
                for name, before in self._served.items()
                for number, version in before.versions.items()
                if name not in served or number not in served[name].versions
            ]
            self._served = served
            for version in retired:
                self._unload(version)

    def _reconcile(self, spec: ModelSpec, before: ServedVersions | None) -> ServedVersions:
        loaded = dict(before.versions) if before else {}
        failed = {}
        try:
            available = (
                saved_models.saved_model_versions(spec.base_path) if spec.base_path.is_dir() else {}
            )
        except OSError as error:
            logger.error("cannot list %s for %s: %s", spec.base_path, spec.name, error)
            available = {}
        wanted = spec.wanted(available)
        for number in sorted(wanted - set(loaded)):
            path = available[number]
            stamp = self._files_stamp(path)
            key = (spec.name, number)
            if self._failed_files.get(key) == stamp:
                failed[number] = before.failed.get(number, "failed to load") if before else ""
                continue
            try:
                version = models.ServedModel(spec.name, number, path, self.runtime)
            except Exception as error:  # noqa: BLE001 - any broken export, kept out of service
                message = f"{type(error).__name__}: {str(error).strip()[:500]}"
                logger.error(
                    "%s version %d at %s failed to load (%s); still serving %s",
                    spec.name,
                    number,
                    path,
                    message,
                    sorted(loaded) or "nothing",
                )
                self._failed_files[key] = stamp
                self.metrics.load_failures.labels(spec.name, str(number)).inc()
                failed[number] = message
                continue
            self._failed_files.pop(key, None)
            self._attach_batcher(version)
            loaded[number] = version
            self.metrics.loaded.labels(spec.name, str(number)).set(1)
        keep = {number: loaded[number] for number in wanted if number in loaded}
        if not keep and loaded:
            # Nothing wanted could load (a corrupt new version): the old one keeps serving.
            newest = max(loaded)
            keep = {newest: loaded[newest]}
        return ServedVersions(spec=spec, versions=keep, failed=failed)

    @staticmethod
    def _files_stamp(path: Path) -> float:
        try:
            return (path / saved_models.SAVED_MODEL_FILE).stat().st_mtime
        except OSError:
            return -1.0

    def _attach_batcher(self, version: models.ServedModel) -> None:
        config = self.batching_config
        if config is None or not config.enabled:
            return
        size_histogram = self.metrics.batch_size.labels(version.name, str(version.version))
        self._batchers[(version.name, version.version)] = batching.Batcher(
            version.run_checked,  # PredictService.submit checked each request
            max_batch_size=config.max_batch_size,
            timeout_s=config.batch_timeout_ms / 1000,
            max_enqueued_batches=config.max_enqueued_batches,
            on_batch=size_histogram.observe,
            name=f"batcher-{version.name}-{version.version}",
        )

    def _unload(self, version: models.ServedModel) -> None:
        batcher = self._batchers.pop((version.name, version.version), None)
        if batcher is not None:
            batcher.close()
        self.metrics.loaded.remove(version.name, str(version.version))
        logger.info("unloaded %s version %d", version.name, version.version)

    # --- answering ---

    def batcher(self, version: models.ServedModel) -> batching.Batcher | None:
        return self._batchers.get((version.name, version.version))

    def model_names(self) -> list[str]:
        return sorted(self._served)

    def served(self) -> dict[str, ServedVersions]:
        return dict(self._served)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> models.ServedModel:
        """The loaded version a request names (newest when it names none)."""
        served = self._served.get(name)
        if label is not None:
            if served is None:
                raise NotFound(f"Servable not found for request: Latest({name})")
            number = served.spec.labels.get(label)
            if number is None:
                raise NotFound(f"Unrecognized servable version label: {label}")
            if number not in served.versions:
                raise NotFound(
                    f"Version label {label!r} of {name} points at version {number}, which is not "
                    "loaded"
                )
            return served.versions[number]
        if (
            served is None
            or not served.versions
            or (version is not None and version not in served.versions)
        ):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise NotFound(f"Servable not found for request: {request}")
        return served.versions[max(served.versions) if version is None else version]

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[dict]:
        """TF Serving's model_version_status entries: loaded versions AVAILABLE, versions that
        failed to load END with their error."""
        served = self._served.get(name)
        if served is None:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if label is not None:
            version = self.resolve(name, label=label).version
        if version is None:
            statuses = [available_status(n) for n in sorted(served.versions, reverse=True)]
            return statuses + [
                failed_status(number, message)
                for number, message in sorted(served.failed.items(), reverse=True)
                if number not in served.versions
            ]
        if version in served.versions:
            return [available_status(version)]
        if version in served.failed:
            return [failed_status(version, served.failed[version])]
        raise NotFound(f"Servable not found for request: Specific({name}, {version})")


def available_status(version: int) -> dict:
    return {
        "version": str(version),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


def failed_status(version: int, message: str) -> dict:
    return {
        "version": str(version),
        "state": "END",
        "status": {"error_code": "UNKNOWN", "error_message": message},
    }
