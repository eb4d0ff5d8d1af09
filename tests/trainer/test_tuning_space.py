"""trainer.tuning.space: tuning.space as KerasTuner hyperparameters, checked before any search."""

from pathlib import Path

import keras_tuner
import pytest

from configs import loader, schema
from trainer.tuning import space


def load(space_yaml: str, *overrides: str) -> schema.Config:
    return loader.load(None, [f"tuning.space={space_yaml}", *overrides])


def hyperparameters(space_yaml: str, *overrides: str):
    params = space.check(load(space_yaml, *overrides))
    return params, space.build_hyperparameters(params)


# --- every kind of spec -> the KerasTuner hyperparameter it must become ---

KIND_CASES = {
    "choice of names": (
        "{optimizer.name: {choice: [adam, sgd]}}",
        keras_tuner.engine.hyperparameters.Choice,
        {"values": ["adam", "sgd"], "ordered": False},
    ),
    "choice of integers": (
        "{data.batch_size: {choice: [16, 32, 64]}}",
        keras_tuner.engine.hyperparameters.Choice,
        {"values": [16, 32, 64], "ordered": True},
    ),
    "choice of integers and floats": (
        "{model.head.dropout: {choice: [0, 0.25]}}",
        keras_tuner.engine.hyperparameters.Choice,
        {"values": [0.0, 0.25]},
    ),
    "uniform": (
        "{model.head.dropout: {uniform: [0.0, 0.5]}}",
        keras_tuner.engine.hyperparameters.Float,
        {"min_value": 0.0, "max_value": 0.5, "step": None, "sampling": "linear"},
    ),
    "uniform with a step": (
        "{model.head.dropout: {uniform: [0.0, 0.5], step: 0.1}}",
        keras_tuner.engine.hyperparameters.Float,
        {"min_value": 0.0, "max_value": 0.5, "step": 0.1, "sampling": "linear"},
    ),
    "log_uniform": (
        "{optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}}",
        keras_tuner.engine.hyperparameters.Float,
        {"min_value": 1e-4, "max_value": 1e-1, "step": None, "sampling": "log"},
    ),
    "log_uniform with a factor": (
        "{optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1], step: 10}}",
        keras_tuner.engine.hyperparameters.Float,
        {"step": 10, "sampling": "log"},
    ),
    "int with a step": (
        "{data.batch_size: {int: [16, 64], step: 16}}",
        keras_tuner.engine.hyperparameters.Int,
        {"min_value": 16, "max_value": 64, "step": 16, "sampling": "linear"},
    ),
    "int": (
        "{train.epochs: {int: [1, 5]}}",
        keras_tuner.engine.hyperparameters.Int,
        {"min_value": 1, "max_value": 5, "step": 1},
    ),
}


@pytest.mark.parametrize("case", KIND_CASES)
def test_each_kind_of_spec_becomes_its_keras_tuner_hyperparameter(case):
    space_yaml, expected_type, attributes = KIND_CASES[case]
    params, hp = hyperparameters(space_yaml)
    [declared] = hp.space
    assert type(declared) is expected_type
    assert declared.name == params[0].key
    for name, value in attributes.items():
        actual = getattr(declared, name)
        assert (list(actual) if name == "values" else actual) == value, name


def test_int_values_with_a_step_are_the_grid_of_the_range():
    _, hp = hyperparameters("{data.batch_size: {int: [16, 64], step: 16}}")
    assert list(hp.space[0].values) == [16, 32, 48, 64]


@pytest.mark.parametrize(
    "choices",
    [[[16, 16], [32, 32]], [None, "imagenet"], [True, False], [1, "two"]],
    ids=["lists", "null", "booleans", "mixed"],
)
def test_choices_keras_tuner_cannot_hold_travel_as_json_and_decode_to_the_values(choices):
    spec = schema.SpaceSpec(choice=choices)
    param = space.Param("data.image_size", spec, space.needs_encoding(spec))
    assert param.encoded
    hp = space.build_hyperparameters([param])
    assert all(isinstance(value, str) for value in hp.space[0].values)
    decoded = [space.config_values([param], {param.key: v})[param.key] for v in hp.space[0].values]
    assert decoded == choices


def test_a_list_valued_key_is_set_from_a_choice_in_the_trial_config():
    params, hp = hyperparameters("{data.image_size: {choice: [[16, 16], [24, 24]]}}")
    values = space.config_values(params, {"data.image_size": hp.space[0].values[1]})
    assert values == {"data.image_size": [24, 24]}


# --- conditions ---


def test_a_conditional_key_is_active_only_under_its_condition():
    params, hp = hyperparameters(
        "{optimizer.name: {choice: [adam, sgd, rmsprop]},"
        " optimizer.momentum: {uniform: [0.5, 0.9], when: {optimizer.name: [sgd, rmsprop]}},"
        " optimizer.nesterov: {choice: [true, false], when: {optimizer.name: sgd}}}"
    )
    assert [p.key for p in params][0] == "optimizer.name"  # parents first
    for name, active in (
        ("adam", set()),
        ("sgd", {"optimizer.momentum", "optimizer.nesterov"}),
        ("rmsprop", {"optimizer.momentum"}),
    ):
        hp.values = {"optimizer.name": name}
        hp.ensure_active_values()  # what the oracle does with every trial's values
        assert set(hp.values) - {"optimizer.name"} == active, name
        assert set(space.config_values(params, hp.values)) - {"optimizer.name"} == active


def test_a_key_with_two_conditions_needs_both():
    params, hp = hyperparameters(
        "{optimizer.name: {choice: [adam, sgd]}, optimizer.schedule: {choice: [cosine, step]},"
        " optimizer.decay_rate: {uniform: [0.1, 0.5],"
        "   when: {optimizer.name: sgd, optimizer.schedule: step}}}"
    )
    decay = next(h for h in hp.space if h.name == "optimizer.decay_rate")
    for name, schedule, active in (
        ("sgd", "step", True),
        ("sgd", "cosine", False),
        ("adam", "step", False),
    ):
        hp.values = {"optimizer.name": name, "optimizer.schedule": schedule}
        assert hp.is_active(decay) is active


def test_a_key_conditional_on_a_conditional_key_is_inactive_when_its_grandparent_is():
    params, hp = hyperparameters(
        "{optimizer.decay_rate: {uniform: [0.1, 0.5], when: {optimizer.schedule: step}},"
        " optimizer.schedule: {choice: [cosine, step], when: {optimizer.name: sgd}},"
        " optimizer.name: {choice: [adam, sgd]}}"
    )
    assert [p.key for p in params] == [
        "optimizer.name",
        "optimizer.schedule",
        "optimizer.decay_rate",
    ]
    hp.values = {"optimizer.name": "adam", "optimizer.schedule": "step"}
    hp.ensure_active_values()
    assert hp.values == {"optimizer.name": "adam"}
    hp.values = {"optimizer.name": "sgd", "optimizer.schedule": "step"}
    hp.ensure_active_values()
    assert set(hp.values) == {"optimizer.name", "optimizer.schedule", "optimizer.decay_rate"}


def test_keras_tuner_samples_a_conditional_key_only_under_its_condition():
    params, hp = hyperparameters(
        "{optimizer.name: {choice: [adam, sgd]},"
        " optimizer.momentum: {uniform: [0.5, 0.9], when: {optimizer.name: sgd}}}"
    )
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=40,
        hyperparameters=hp,
        seed=3,
    )
    seen = set()
    for _ in range(30):
        values = oracle._random_values()  # what populate_space gives each trial
        seen.add(values["optimizer.name"])
        assert ("optimizer.momentum" in values) == (values["optimizer.name"] == "sgd"), values
    assert seen == {"adam", "sgd"}


# --- invalid spaces: rejected before a search, naming the key ---

INVALID_SPACES = {
    "unknown key": (
        "{optimizer.learning_rat: {uniform: [0.1, 0.2]}}",
        "tuning.space.optimizer.learning_rat: unknown config key (did you mean "
        "optimizer.learning_rate?)",
    ),
    "unknown section": ("{optimiser.name: {choice: [adam]}}", "tuning.space.optimiser.name"),
    "list index out of range": ("{model.cnn.9.conv.filters: {int: [4, 8]}}", "use an index"),
    "low not below high": ("{model.head.dropout: {uniform: [0.5, 0.1]}}", "low < high"),
    "equal ends": ("{data.batch_size: {int: [16, 16]}}", "tuning.space.data.batch_size"),
    "log_uniform from zero": (
        "{optimizer.learning_rate: {log_uniform: [0.0, 0.1]}}",
        "tuning.space.optimizer.learning_rate: log_uniform needs 0 < low",
    ),
    "log_uniform factor not above 1": (
        "{optimizer.learning_rate: {log_uniform: [1.0e-4, 0.1], step: 0.5}}",
        "tuning.space.optimizer.learning_rate: log_uniform's step is a factor",
    ),
    "choice value the schema rejects": (
        "{optimizer.name: {choice: [adam, adagrad]}}",
        "tuning.space.optimizer.name: 'adagrad' is not a valid optimizer.name",
    ),
    "range end the schema rejects": (
        "{optimizer.learning_rate: {log_uniform: [1.0e-4, 100]}}",
        "tuning.space.optimizer.learning_rate: 100.0 is not a valid",
    ),
    "item inside a list the schema rejects": (
        "{model.cnn.0.conv.filters: {int: [0, 8]}}",
        "tuning.space.model.cnn.0.conv.filters: 0 is not a valid",
    ),
    "fractions for an integer key": (
        "{data.batch_size: {uniform: [16, 64]}}",
        "tuning.space.data.batch_size: data.batch_size takes whole numbers",
    ),
    "when names a key outside the space": (
        "{optimizer.momentum: {uniform: [0.5, 0.9], when: {optimizer.name: sgd}}}",
        "optimizer.momentum.when names 'optimizer.name', which is not a key of tuning.space",
    ),
    "when names a value outside the choices": (
        "{optimizer.name: {choice: [adam, sgd]},"
        " optimizer.momentum: {uniform: [0.5, 0.9], when: {optimizer.name: rmsprop}}}",
        "optimizer.momentum.when: 'rmsprop' is not one of optimizer.name's choices",
    ),
    "when names a range": (
        "{model.head.dropout: {uniform: [0.0, 0.5]},"
        " optimizer.momentum: {uniform: [0.5, 0.9], when: {model.head.dropout: 0.1}}}",
        "optimizer.momentum.when: model.head.dropout must be another key of the space with a "
        "choice",
    ),
    "conditions in a cycle": (
        "{optimizer.name: {choice: [adam, sgd], when: {optimizer.schedule: step}},"
        " optimizer.schedule: {choice: [cosine, step], when: {optimizer.name: sgd}}}",
        "form a cycle",
    ),
    "two kinds": (
        "{model.head.dropout: {uniform: [0.0, 0.5], choice: [0.1]}}",
        "tuning.space.model.head.dropout: give exactly one of",
    ),
    "no kind": ("{model.head.dropout: {step: 0.1}}", "give exactly one of"),
    "step on a choice": ("{optimizer.name: {choice: [adam], step: 1}}", "step applies to int"),
    "a key the search sets": ("{train.run_id: {choice: [a, b]}}", "cannot be tuned"),
    "the tuning section": ("{tuning.max_trials: {int: [1, 3]}}", "cannot be tuned"),
    "empty space": ("{}", "tuning.space is empty"),
    "a value invalid with the rest of the config": (
        "{model.backbone: {choice: [cnn, xception]}}",
        "tuning.space.model.backbone: 'xception' is not a valid model.backbone: model.backbone "
        "'xception' needs images of at least 71x71",
    ),
}


@pytest.mark.parametrize("case", INVALID_SPACES)
def test_an_invalid_space_is_rejected_naming_the_key(case):
    space_yaml, message = INVALID_SPACES[case]
    with pytest.raises(loader.ConfigError) as raised:
        space.check(load(space_yaml))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["tuning.algorithm=grid"],
            "tuning.space: optimizer.learning_rate: grid search needs a finite set of values",
        ),
        (["tuning.algorithm=hyperband"], None),
    ],
)
def test_grid_needs_steps_and_hyperband_owns_the_epochs(overrides, message):
    space_yaml = "{optimizer.learning_rate: {log_uniform: [1.0e-4, 0.1]}}"
    if message:
        with pytest.raises(loader.ConfigError, match=message):
            load(space_yaml, *overrides)
    else:
        space.check(load(space_yaml, *overrides))
        with pytest.raises(loader.ConfigError, match="hyperband sets train.epochs"):
            space.check(load("{train.epochs: {int: [1, 4]}}", *overrides))


def test_a_value_invalid_only_with_the_rest_passes_when_another_key_is_tuned():
    """xception needs 71x71 images: with data.image_size in the space too the combination may be
    valid, so the check leaves it to the trial (which fails and is recorded if it is not)."""
    cfg = load(
        "{model.backbone: {choice: [cnn, xception]},"
        " data.image_size: {choice: [[32, 32], [71, 71]]}}",
        "data.channels=3",
    )
    assert [p.key for p in space.check(cfg)] == ["model.backbone", "data.image_size"]


def test_an_unknown_objective_is_a_config_error_listing_the_accepted_ones():
    with pytest.raises(
        loader.ConfigError, match="tuning.objective: Input should be 'val_accuracy'"
    ):
        loader.load(None, ["tuning.objective=val_f1"])


# --- the space in YAML, --set and config show ---


def test_nested_and_dotted_keys_declare_the_same_space():
    nested = load("{optimizer: {learning_rate: {log_uniform: [1.0e-4, 0.1]}}}")
    dotted = load("{optimizer.learning_rate: {log_uniform: [1.0e-4, 0.1]}}")
    with_set = loader.load(
        None, ["tuning.space.optimizer.learning_rate={log_uniform: [1e-4, 0.1]}"]
    )
    assert nested.tuning.space == dotted.tuning.space == with_set.tuning.space
    assert list(dotted.tuning.space) == ["optimizer.learning_rate"]


def test_a_spec_prints_only_what_was_given_and_reloads_the_same():
    cfg = load(
        "{optimizer.momentum: {uniform: [0.5, 0.9], when: {optimizer.name: sgd}},"
        " optimizer.name: {choice: [adam, sgd]}}"
    )
    dumped = loader.to_dict(cfg)["tuning"]["space"]
    assert dumped == {
        "optimizer.momentum": {"uniform": [0.5, 0.9], "when": {"optimizer.name": "sgd"}},
        "optimizer.name": {"choice": ["adam", "sgd"]},
    }
    assert loader.validate(loader.to_dict(cfg)) == cfg


def test_key_paths_reach_into_lists_by_index():
    tree = {"model": {"cnn": [{"conv": {"filters": 32}}, {"max_pool": {}}]}}
    space.set_path(tree, "model.cnn.0.conv.filters", 8)
    assert space.get_path(tree, "model.cnn.0.conv.filters") == 8
    space.check_key("model.cnn.1.max_pool", tree)
    with pytest.raises(loader.ConfigError, match="model.cnn is a list of 2"):
        space.check_key("model.cnn.2.conv", tree)


# --- the example config ---

TUNING_EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "digits_tune.yaml"


def test_the_tuning_example_declares_a_valid_space():
    cfg = loader.load(TUNING_EXAMPLE)
    params = space.check(cfg)
    assert {p.key for p in params} == set(cfg.tuning.space)
    hp = space.build_hyperparameters(params)
    assert {declared.name for declared in hp.space} == set(cfg.tuning.space)
