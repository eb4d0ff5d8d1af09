"""TF Serving's models.config for a store, built and parsed with its protobuf classes."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from core import atomic_write
from registry import errors

PLATFORM = "tensorflow"


@dataclass(frozen=True)
class ServedModel:
    """One `model_config_list.config` entry: what TF Serving loads for a model and its labels."""

    name: str
    base_path: Path  # absolute: TF Serving resolves nothing relative to the config file
    versions: tuple[int, ...]
    labels: dict[str, int] = field(default_factory=dict)


def build(models: Iterable[ServedModel]) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig serving exactly `versions` of each model, sorted for stable diffs."""
    config = model_server_config_pb2.ModelServerConfig()
    entries = config.model_config_list.config
    for model in sorted(models, key=lambda m: m.name):
        entry = entries.add()
        entry.name = model.name
        entry.base_path = str(model.base_path)
        entry.model_platform = PLATFORM
        entry.model_version_policy.specific.versions.extend(sorted(model.versions))
        for label, version in sorted(model.labels.items()):
            entry.version_labels[label] = version
    return config


def rebased(
    config: model_server_config_pb2.ModelServerConfig, root: str
) -> model_server_config_pb2.ModelServerConfig:
    """A copy of `config` whose base paths are `<root>/<model folder>`, for a server that holds
    the store at `root` (e.g. /models in a container); versions and labels are kept as they are."""
    if not PurePosixPath(root).is_absolute():
        raise errors.RegistryError(
            f"the serving root must be an absolute path inside the server, e.g. /models "
            f"(received {root!r})"
        )
    if config.WhichOneof("config") == "custom_model_config":
        raise errors.RegistryError("cannot rebase a custom_model_config; expected a model list")
    moved = model_server_config_pb2.ModelServerConfig()
    moved.CopyFrom(config)
    for entry in moved.model_config_list.config:
        # The store's folder for a model is named after it; keep that name under the new root.
        folder = PurePosixPath(entry.base_path).name or entry.name
        entry.base_path = str(PurePosixPath(root) / folder)
    return moved


def to_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def read(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    return parse(Path(path).read_text(encoding="utf-8"))


def write(path: Path, models: Iterable[ServedModel]) -> None:
    """Regenerates `path` atomically, so a polling model server never reads half a config."""
    atomic_write.write_text(path, to_text(build(models)), durable=True)
