"""TF Serving's models.config for a store, built and parsed with its protobuf classes."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from registry import atomic

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


def to_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def read(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    return parse(Path(path).read_text(encoding="utf-8"))


def write(path: Path, models: Iterable[ServedModel]) -> None:
    """Regenerates `path` atomically, so a polling model server never reads half a config."""
    atomic.write_text(path, to_text(build(models)))
