"""A config as flat hyperparameters: the dotted keys and plain values TensorBoard's HParams table
and MLflow's params record for a run."""

import hashlib
import json
from typing import Any

# A value is one cell of the HParams table, and the full config is in the run's config.yaml
# anyway: longer text (a model.cnn layer list is ~700 characters as JSON) would make the table
# unreadable, so it is cut, keeping a hash of the whole so that runs that differ only past the
# cut still show different values.
MAX_VALUE_CHARS = 200

HParamValue = bool | int | float | str


def flatten_hparams(config_dict: dict[str, Any]) -> dict[str, HParamValue]:
    """Nested config (as from `loader.to_dict`) -> {"optimizer.learning_rate": 0.001, ...}.

    Values become what the HParams plugin can store: None -> "null", lists -> JSON text
    (`[32, 32]` -> "[32, 32]"; lists of dicts such as model.cnn compactly), text over
    MAX_VALUE_CHARS cut. An empty dict stays as "{}" so its key is in every run's table.
    """
    flat: dict[str, HParamValue] = {}
    _flatten_into(flat, config_dict, prefix="")
    return flat


def _flatten_into(flat: dict[str, HParamValue], value: Any, prefix: str) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten_into(flat, item, f"{prefix}.{key}" if prefix else str(key))
        return
    if not prefix:
        raise TypeError(f"config_dict must be a non-empty dict (received {value!r})")
    flat[prefix] = _hparam_value(prefix, value)


def _hparam_value(key: str, value: Any) -> HParamValue:
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _cap(value)
    if isinstance(value, dict):  # only the empty dict gets here
        return "{}"
    if isinstance(value, list | tuple):
        nested = any(isinstance(item, dict | list | tuple) for item in value)
        separators = (",", ":") if nested else (", ", ": ")
        return _cap(json.dumps(value, separators=separators))
    raise TypeError(
        f"{key}: expected bool, int, float, str, None, list or dict "
        f"(received {type(value).__name__} {value!r})"
    )


def _cap(text: str) -> str:
    if len(text) <= MAX_VALUE_CHARS:
        return text
    suffix = "…#" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return text[: MAX_VALUE_CHARS - len(suffix)] + suffix
