"""The search space: `tuning.space` checked against the config, as KerasTuner HyperParameters."""

import copy
import difflib
import json
import math
from dataclasses import dataclass
from typing import Any

import keras_tuner
import pydantic

# Parent conditions are not exported by KerasTuner: its conditional_scope only nests scopes,
# which cannot express a key conditional on two keys declared side by side.
from keras_tuner.src.engine import conditions as keras_tuner_conditions

from configs import loader, schema

# Keys a trial must not change: the search's own settings and where runs are written.
FIXED_KEYS = ("tuning", "train.run_id", "train.runs_dir")
# Where inside a numeric range the one interior value checked lies (an irrational fraction: not
# a round number that a bound happens to allow).
INTERIOR_FRACTION = 1 / math.pi


@dataclass(frozen=True)
class Param:
    """One key of the space. `encoded` choices travel through KerasTuner as JSON strings."""

    key: str
    spec: schema.SpaceSpec
    encoded: bool = False

    @property
    def kind(self) -> str:
        return self.spec.kind

    def encode(self, value: Any) -> Any:
        return json.dumps(value) if self.encoded else value

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value


def check(cfg: schema.Config, base: dict | None = None) -> list[Param]:
    """The space of `cfg.tuning`, parents before the keys conditional on them.

    Every key path must exist in the resolved config (`base`: the trial base, default the
    config as a dict) and every value the space can give must be valid there: each choice, both
    ends of a range and one value inside it are validated with the rest of the config at its
    base values. A value the key's own field rejects is an error naming the key. One rejected
    only by a rule across keys (a backbone that needs bigger images) is an error too, unless the
    space also tunes another key: then a trial that draws a bad combination fails and is recorded.
    """
    tuning = cfg.tuning
    if not tuning.space:
        raise loader.ConfigError(
            "tuning.space is empty: declare the keys to search, e.g. "
            "tuning.space: {optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}}"
        )
    base = base if base is not None else loader.to_dict(cfg)
    for key, spec in tuning.space.items():
        check_key(key, base)
        current = get_path(base, key)
        if tuning.algorithm == "hyperband" and key == "train.epochs":
            raise loader.ConfigError(
                f"tuning.space.{key}: hyperband sets train.epochs of every trial itself "
                "(from tuning.max_epochs); remove train.epochs from the space"
            )
        if spec.kind in ("uniform", "log_uniform") and is_integer(current):
            low, high = getattr(spec, spec.kind)
            raise loader.ConfigError(
                f"tuning.space.{key}: {key} takes whole numbers (it is {current}), so "
                f"{spec.kind} would draw fractions; use int: [{low:g}, {high:g}] or a choice"
            )
        for value in candidate_values(spec):
            check_value(key, value, base, several_keys=len(tuning.space) > 1)
    return ordered_params(tuning.space)


def check_key(key: str, base: dict) -> None:
    if any(key == fixed or key.startswith(f"{fixed}.") for fixed in FIXED_KEYS):
        raise loader.ConfigError(
            f"tuning.space.{key}: this key cannot be tuned ({', '.join(FIXED_KEYS)} are set by "
            "the search itself)"
        )
    node, walked = base, []
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            where = ".".join(walked) or "the config"
            if isinstance(node, dict):
                close = difflib.get_close_matches(part, list(node), n=1, cutoff=0.5)
                hint = (
                    f" (did you mean {'.'.join([*walked, close[0]])}?)"
                    if close
                    else f"; keys of {where}: {', '.join(map(str, node))}"
                )
            elif isinstance(node, list):
                hint = f"; {where} is a list of {len(node)}: use an index 0..{len(node) - 1}"
            else:
                hint = f"; {where} is a value, not a section"
            raise loader.ConfigError(f"tuning.space.{key}: unknown config key{hint}")
        walked.append(part)


def candidate_values(spec: schema.SpaceSpec) -> list[Any]:
    """The values checked before a search: every choice, or both ends and one inside."""
    kind = spec.kind
    if kind == "choice":
        return list(spec.choice)
    low, high = getattr(spec, kind)
    if kind == "int":
        return [low, high]
    if kind == "log_uniform":
        return [low, high, low * (high / low) ** INTERIOR_FRACTION]
    return [low, high, low + (high - low) * INTERIOR_FRACTION]


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_value(key: str, value: Any, base: dict, several_keys: bool) -> None:
    raw = set_path(copy.deepcopy(base), key, value)
    try:
        schema.Config.model_validate(raw)
    except pydantic.ValidationError as error:
        parts = tuple(key.split("."))
        problems = [
            item for item in error.errors() if rejects_the_key(tuple(map(str, item["loc"])), parts)
        ]
        if not problems and several_keys:
            return  # a rule across keys: another tuned key may make the combination valid
        message = "; ".join(
            item["msg"].removeprefix("Value error, ") for item in problems or error.errors()
        )
        raise loader.ConfigError(
            f"tuning.space.{key}: {value!r} is not a valid {key}: {message}"
        ) from None


def rejects_the_key(loc: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """True when an error at `loc` is about the key `parts` itself: at the key or inside it, or
    at a field holding it (a list such as model.cnn validates its items). An error at a section
    (a model validator: optimizer, or the whole config) is a rule across keys."""
    if loc[: len(parts)] == parts:
        return True
    if parts[: len(loc)] != loc:
        return False
    section: type[pydantic.BaseModel] = schema.Config
    for part in loc:
        field = section.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return True
        section = annotation
    return False


def ordered_params(space: dict[str, schema.SpaceSpec]) -> list[Param]:
    """Params with every `when` parent before its children (a cycle is an error)."""
    ordered: list[Param] = []
    placed: set[str] = set()
    remaining = dict(space)
    while remaining:
        ready = [k for k, s in remaining.items() if set(s.when or {}) <= placed]
        if not ready:
            raise loader.ConfigError(
                f"tuning.space: the `when` conditions of {', '.join(remaining)} form a cycle"
            )
        for key in ready:
            spec = remaining.pop(key)
            ordered.append(Param(key, spec, needs_encoding(spec)))
            placed.add(key)
    return ordered


def needs_encoding(spec: schema.SpaceSpec) -> bool:
    """KerasTuner's Choice holds one type of str, int or float (its protocol sends bools as
    floats): any other choice list travels as JSON strings."""
    if spec.choice is None:
        return False
    types = {type(value) for value in spec.choice}
    return not (types == {str} or types == {int} or types == {float} or types == {int, float})


def build_hyperparameters(params: list[Param]) -> keras_tuner.HyperParameters:
    """The KerasTuner search space; a key with `when` carries one Parent condition per named
    key (all must hold), so a conditional key may depend on several keys, or on a key that is
    conditional itself (inactive parent: inactive child)."""
    by_key = {param.key: param for param in params}
    hp = keras_tuner.HyperParameters()
    for param in params:
        conditions = [
            keras_tuner_conditions.Parent(parent, [by_key[parent].encode(v) for v in as_list(want)])
            for parent, want in (param.spec.when or {}).items()
        ]
        hp.merge([declare(param, conditions)])
    return hp


def declare(param: Param, conditions: list):
    spec, name = param.spec, param.key
    types = keras_tuner.engine.hyperparameters
    if spec.kind == "choice":
        values = [param.encode(v) for v in spec.choice]
        if {type(v) for v in values} == {int, float}:
            values = [float(v) for v in values]
        return types.Choice(name, values, conditions=conditions)
    if spec.kind == "int":
        low, high = spec.int
        return types.Int(name, low, high, step=int(spec.step or 1), conditions=conditions)
    low, high = getattr(spec, spec.kind)
    sampling = "log" if spec.kind == "log_uniform" else "linear"
    return types.Float(name, low, high, step=spec.step, sampling=sampling, conditions=conditions)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def config_values(params: list[Param], values: dict[str, Any]) -> dict[str, Any]:
    """{key path: config value} of a trial's active hyperparameters (KerasTuner's own
    `tuner/...` entries are left out)."""
    return {p.key: p.decode(values[p.key]) for p in params if p.key in values}


def get_path(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    return tree


def set_path(tree: dict, key: str, value: Any) -> dict:
    """Sets `a.b.0.c` in nested dicts and lists (list parts are indices); returns `tree`."""
    *parents, last = key.split(".")
    node: Any = tree
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return tree
