"""Resolves a Config in a fixed order: defaults -> YAML -> ${ENV} -> --set overrides."""

import argparse
import difflib
import os
import re
from pathlib import Path
from typing import Any

import pydantic
import yaml

from configs import schema
from core import errors

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(errors.UserError, ValueError):
    """A problem the user can fix in the config; the message names the key path."""


def load(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> schema.Config:
    """Returns the validated config from an optional YAML file and `key.path=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(Path(path))
    raw = interpolate_env(raw)
    for override in overrides:
        apply_override(raw, override)
    return validate(raw)


def yaml_error_line(path: Path, error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where, what, and for tabs the fix."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    text = f"{where} is not valid YAML: {problem}" + (f" ({context})" if context else "")
    if "'\\t'" in problem:
        text += "; indent with spaces, YAML does not allow tabs there"
    return text


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(yaml_error_line(path, error)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top (received {type(raw).__name__})")
    return raw


def interpolate_env(value: Any, key_path: str = "") -> Any:
    """Replaces ${VAR} and ${VAR:-default} in every string value."""
    if isinstance(value, dict):
        return {
            k: interpolate_env(v, f"{key_path}.{k}" if key_path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate_env(v, f"{key_path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{key_path}: environment variable {name} is not set and has no default "
            f"(set it, or write ${{{name}:-default}})"
        )

    substituted = ENV_PATTERN.sub(substitute, value)
    # A whole-value reference takes the YAML type of what it expands to (e.g. a number).
    if ENV_PATTERN.fullmatch(value):
        return yaml.safe_load(substituted) if substituted.strip() else substituted
    return substituted


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Applies one `a.b.c=value` override; the value is parsed as YAML (numbers, lists, null)."""
    key_path, sep, text = override.partition("=")
    if not sep or not key_path.strip():
        raise ConfigError(f"--set expects key.path=value (received {override!r})")
    keys = key_path.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {key_path}: {'.'.join(keys[: depth + 1])} is a value, not a section"
            )
        node = child
    node[keys[-1]] = value


def validate(raw: dict[str, Any]) -> schema.Config:
    try:
        return schema.Config.model_validate(raw)
    except pydantic.ValidationError as error:
        raise ConfigError(format_errors(error)) from None


def format_errors(error: pydantic.ValidationError) -> str:
    lines = []
    for item in error.errors():
        key_path = ".".join(str(part) for part in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            lines.append(f"{key_path}: unknown key{suggest_key(item['loc'])}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        received = item.get("input")
        if item["type"] in ("missing", "value_error") or isinstance(received, dict):
            lines.append(f"{key_path}: {message}")
        else:
            lines.append(f"{key_path}: {message} (received {received!r})")
    if len(lines) == 1:
        return f"invalid config: {lines[0]}"
    return f"invalid config ({len(lines)} problems):\n" + "\n".join(f"  {line}" for line in lines)


def suggest_key(loc: tuple) -> str:
    """' (did you mean X?)' with the closest valid key at the unknown key's level."""
    section: type[pydantic.BaseModel] = schema.Config
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return ""
        section = annotation
    valid = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
    if close:
        return f" (did you mean {'.'.join(str(part) for part in (*loc[:-1], close[0]))}?)"
    return f"; valid keys here: {', '.join(valid)}"


def to_dict(config: schema.Config) -> dict[str, Any]:
    return config.model_dump(mode="json")


def to_yaml(config: schema.Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None, width=100)


def save(config: schema.Config, path: str | os.PathLike) -> None:
    Path(path).write_text(to_yaml(config))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and repeatable `--set key.path=value`, shared by every command."""
    parser.add_argument("--config", help="YAML config file; omitted keys take their defaults")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one config value, e.g. --set train.epochs=5 (repeatable)",
    )
