"""What a pipeline component is: typed inputs and outputs, the config it reads, one call."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from configs import schema
from core import errors
from tfx_pipeline import metadata

# Bump when a component's behaviour changes, so that cached executions stop matching.
CODE_VERSION = "1"


class ComponentError(errors.UserError):
    """A component met inputs it cannot accept (e.g. a dataset failing validation)."""


@dataclass
class Context:
    """What a component's function gets: the whole config (it reads only its declared keys),
    its resolved input artifacts, and a folder of its own for files it writes."""

    cfg: schema.Config
    inputs: dict[str, metadata.Artifact | None]
    store: metadata.Store
    artifacts_dir: Path
    execution_id: int

    def output_dir(self, component: str) -> Path:
        out = self.artifacts_dir / component / str(self.execution_id)
        out.mkdir(parents=True, exist_ok=True)
        return out


Resolver = Callable[[schema.Config, metadata.Store, dict], dict[str, metadata.Artifact | None]]


def always(cfg: schema.Config) -> bool:
    return True


@dataclass(frozen=True)
class Component:
    """One node of the DAG.

    inputs: input name -> "Producer.output"; a trailing "?" makes it optional (None when the
    producer is disabled). resolve: inputs found outside the DAG (the previous dataset, the
    production model), also part of the cache key. config_keys: dotted paths of the config the
    component reads, minus config_exclude; only they enter its cache key.
    """

    name: str
    run: Callable[[Context], dict[str, metadata.Artifact]]
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    config_keys: tuple[str, ...] = ()
    config_exclude: tuple[str, ...] = ()
    resolve: Resolver | None = None
    enabled: Callable[[schema.Config], bool] = always

    def config_subset(self, cfg: schema.Config) -> dict:
        dumped = cfg.model_dump(mode="json")
        for key in self.config_exclude:
            head, _, last = key.rpartition(".")
            lookup(dumped, head, copy=False).pop(last)
        return {key: lookup(dumped, key) for key in self.config_keys}

    def cache_key(self, config_hash: str, inputs: dict[str, metadata.Artifact | None]) -> str:
        fingerprints = {name: a.fingerprint if a else None for name, a in sorted(inputs.items())}
        return digest(
            {"component": self.name, "code": CODE_VERSION, "config": config_hash, **fingerprints}
        )


def lookup(tree: dict, dotted: str, copy: bool = True):
    value = tree
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"config key {dotted!r} does not exist (stopped at {part!r})")
        value = value[part]
    return json.loads(json.dumps(value)) if copy else value


def digest(payload) -> str:
    """A short, stable hash of any JSON-able value."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(artifact: metadata.Artifact) -> str:
    """What identifies an artifact's content for caching: its type, location and properties."""
    return digest({"type": artifact.type, "uri": artifact.uri, "properties": artifact.properties})
