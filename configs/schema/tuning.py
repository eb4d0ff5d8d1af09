"""tuning: `imgclf tune`'s search space, objectives and oracle."""

import builtins
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from configs.schema.base import PathSetting, Section
from configs.schema.history import METRIC_DIRECTIONS

SPACE_KINDS = ("choice", "uniform", "log_uniform", "int")


class SpaceSpec(Section):
    """The values one config key takes in a search: exactly one of choice, uniform,
    log_uniform or int, optionally a step, and `when` to make the key conditional."""

    choice: list[Any] | None = Field(
        None, description="Values tried as they are (any YAML: numbers, names, lists, null)."
    )
    uniform: tuple[float, float] | None = Field(None, description="[low, high], linear scale.")
    log_uniform: tuple[float, float] | None = Field(
        None, description="[low, high] with 0 < low, sampled on a log scale."
    )
    step: float | None = Field(
        None,
        gt=0,
        description="int/uniform: spacing of the values; log_uniform: factor between them (> 1).",
    )
    when: dict[str, Any] | None = Field(
        None,
        description="Only tuned when every named key of the space (a choice) has this value or "
        "one of these values, e.g. {optimizer.name: sgd}; otherwise the key keeps its value.",
    )
    # builtins.int: inside this class body the name `int` is this field.
    int: tuple[builtins.int, builtins.int] | None = Field(
        None, description="[low, high] integers, both included."
    )

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler):
        # {log_uniform: [0.0001, 0.1]} rather than every kind with null beside it.
        dumped = handler(self)
        if self.int is not None and self.step is not None and self.step == round(self.step):
            dumped["step"] = round(self.step)
        order = [self.kind, "step", "when"]
        return {key: dumped[key] for key in order if dumped.get(key) is not None}

    @property
    def kind(self) -> str:
        return next(kind for kind in SPACE_KINDS if getattr(self, kind) is not None)

    @model_validator(mode="after")
    def _one_kind_with_a_valid_range(self):
        given = [kind for kind in SPACE_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(SPACE_KINDS)} "
                f"(received {', '.join(given) if given else 'none'})"
            )
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice needs at least one value (received [])")
            if self.step is not None:
                raise ValueError("step applies to int, uniform and log_uniform, not to choice")
            return self
        low, high = getattr(self, kind)
        if low >= high:
            raise ValueError(f"{kind} needs low < high (received [{low}, {high}])")
        if kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform needs 0 < low (received [{low}, {high}])")
        if kind == "log_uniform" and self.step is not None and self.step <= 1:
            raise ValueError(
                f"log_uniform's step is a factor and must be > 1 (received {self.step})"
            )
        if kind == "int" and self.step is not None and self.step != round(self.step):
            raise ValueError(f"int's step must be a whole number (received {self.step})")
        return self


SPEC_FIELDS = set(SpaceSpec.model_fields)


class ObjectiveSpec(Section):
    """One objective of a search: a history.csv column and whether higher is better."""

    name: str = Field(
        description=f"{', '.join(METRIC_DIRECTIONS)}, or val_<name> of a train.metrics entry."
    )
    direction: Literal["max", "min"] | None = Field(
        None, description="null = the metric's natural one (needed for train.metrics entries)."
    )

    @model_validator(mode="after")
    def _direction_known(self):
        if self.direction is None and self.name not in METRIC_DIRECTIONS:
            raise ValueError(
                f"{self.name!r} needs a direction: {{name: {self.name}, direction: max}} or min"
            )
        return self


def _objective_kind(value) -> str:
    if isinstance(value, str):
        return "name"
    return "list" if isinstance(value, list) else "spec"


# Tagged, so a bad item gets one error (key path tuning.objective.list.<i>.spec), not one per
# alternative.
Objective = Annotated[
    Annotated[str, Tag("name")] | Annotated[ObjectiveSpec, Tag("spec")],
    Discriminator(_objective_kind),
]
Objectives = Annotated[
    Annotated[str, Tag("name")]
    | Annotated[ObjectiveSpec, Tag("spec")]
    | Annotated[list[Objective], Tag("list")],
    Discriminator(_objective_kind),
]


class TuningConfig(Section):
    """`imgclf tune`: a KerasTuner search over config keys, every trial a recorded run."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Search name: trials are runs <name>-trial-<id>; null = <name>-tune.",
    )
    algorithm: Literal["random", "grid", "bayesian", "hyperband"] = Field(
        "random", description="KerasTuner oracle: random, grid, bayesian (GP) or hyperband."
    )
    objective: Objectives = Field(
        "val_accuracy",
        description="Per-epoch metric optimised (its best epoch counts): "
        f"{', '.join(METRIC_DIRECTIONS)}, or {{name: val_<name>, direction: max}} for a "
        "train.metrics entry. A list optimises their sum as KerasTuner does: the min "
        "objectives minus the max ones, unweighted.",
    )
    direction: Literal["max", "min"] | None = Field(
        None,
        description="Of a single named objective: max or min; null = min for losses, max for "
        "accuracies.",
    )
    max_trials: int = Field(10, ge=1, description="Most trials the search runs (any algorithm).")
    executions_per_trial: int = Field(
        1, ge=1, description="Runs per trial (seeds seed, seed+1, ...); the objective is averaged."
    )
    max_epochs: int | None = Field(
        None, ge=1, description="hyperband: most epochs a trial trains; null = train.epochs."
    )
    factor: int = Field(3, ge=2, description="hyperband: reduction factor between rounds.")
    num_initial_points: int | None = Field(
        None, ge=1, description="bayesian: random trials before the GP; null = 3 x parameters."
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=0,
        description="Per-trial early stopping: stop a trial after N epochs without a better "
        "objective (sets train.early_stopping); null = train.early_stopping as configured.",
    )
    time_budget_minutes: float | None = Field(
        None,
        gt=0,
        description="No trial starts after this much search time (running ones finish); "
        "a resumed search counts its earlier time. null = no limit.",
    )
    max_consecutive_failed_trials: int = Field(
        3, ge=1, description="The search stops after this many failed trials in a row."
    )
    seed: int | None = Field(
        None, ge=0, description="Seed of the oracle; null = the config's seed."
    )
    directory: PathSetting | None = Field(
        None,
        description="Search state, results and best.yaml; null = <train.runs_dir>/tuning/<name>.",
    )
    space: dict[str, SpaceSpec] = Field(
        default_factory=dict,
        description="Config key path -> values, e.g. optimizer.learning_rate: "
        "{log_uniform: [1e-4, 1e-1]}, data.batch_size: {choice: [16, 32, 64]}.",
    )

    @field_validator("objective")
    @classmethod
    def _known_objectives(cls, objective):
        items = objective if isinstance(objective, list) else [objective]
        if not items:
            raise ValueError("give at least one objective (received [])")
        names = [item if isinstance(item, str) else item.name for item in items]
        if len(set(names)) != len(names):
            raise ValueError(f"an objective is listed twice (received {names})")
        for name in (item for item in items if isinstance(item, str)):
            if name not in METRIC_DIRECTIONS:
                raise ValueError(
                    f"Input should be {', '.join(repr(n) for n in METRIC_DIRECTIONS)} "
                    f"(received {name!r}); for a train.metrics entry give its direction: "
                    f"{{name: {name}, direction: max}}"
                )
        return objective

    @model_validator(mode="after")
    def _direction_of_one_name(self):
        if self.direction is not None and not isinstance(self.objective, str):
            raise ValueError(
                "tuning.direction applies to a single named objective; give each objective "
                "its own instead, e.g. {name: val_loss, direction: min}"
            )
        return self

    def objectives(self) -> list[ObjectiveSpec]:
        """Every objective, each with its direction."""
        if isinstance(self.objective, str):
            direction = self.direction or METRIC_DIRECTIONS[self.objective]
            return [ObjectiveSpec(name=self.objective, direction=direction)]
        items = self.objective if isinstance(self.objective, list) else [self.objective]
        specs = [ObjectiveSpec(name=item) if isinstance(item, str) else item for item in items]
        return [
            spec.model_copy(update={"direction": spec.direction or METRIC_DIRECTIONS[spec.name]})
            for spec in specs
        ]

    @field_validator("space", mode="before")
    @classmethod
    def _dotted_keys(cls, space):
        """Nested mappings become dotted keys, so `--set tuning.space.optimizer.momentum=...`
        and `space: {optimizer: {momentum: {uniform: [0.5, 0.9]}}}` mean the same."""
        if not isinstance(space, dict):
            return space

        def flatten(tree: dict, prefix: str) -> dict:
            flat = {}
            for key, value in tree.items():
                path = f"{prefix}{key}"
                if isinstance(value, dict) and value and not set(value) & SPEC_FIELDS:
                    flat.update(flatten(value, f"{path}."))
                else:
                    flat[path] = value
            return flat

        return flatten(space, "")

    @field_validator("space")
    @classmethod
    def _conditions_and_grid(cls, space: dict[str, SpaceSpec], info: ValidationInfo):
        for key, spec in space.items():
            for parent, wanted in (spec.when or {}).items():
                if parent not in space:
                    raise ValueError(
                        f"{key}.when names {parent!r}, which is not a key of tuning.space "
                        f"(keys: {', '.join(space)})"
                    )
                if space[parent].choice is None or parent == key:
                    raise ValueError(
                        f"{key}.when: {parent} must be another key of the space with a choice "
                        f"(received {space[parent].kind})"
                    )
                for value in wanted if isinstance(wanted, list) else [wanted]:
                    if value not in space[parent].choice:
                        raise ValueError(
                            f"{key}.when: {value!r} is not one of {parent}'s choices "
                            f"{space[parent].choice}"
                        )
        if info.data.get("algorithm") == "grid":
            for key, spec in space.items():
                if spec.kind in ("uniform", "log_uniform") and spec.step is None:
                    raise ValueError(
                        f"{key}: grid search needs a finite set of values; give {spec.kind} "
                        "a step, or use choice"
                    )
        return space
