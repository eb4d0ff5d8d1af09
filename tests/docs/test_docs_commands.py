"""docs/*.md and docs/workflows/retrain.yml: every imgclf command they show is checked against the
real CLI, and the workflow's re-training command runs for real on the bundled digits."""

import argparse
import contextlib
import io
import json
import re
import shlex
import types
import typing
from pathlib import Path

import pydantic
import pytest
import yaml

import cli
from configs import schema
from registry import store as registry_store
from tests.conftest import DIGITS_CONFIG, digits_subset

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
WORKFLOW = DOCS / "workflows" / "retrain.yml"
PAGES = [
    "data.md",
    "training.md",
    "tuning.md",
    "evaluation.md",
    "tracking.md",
    "export.md",
    "serving.md",
    "monitoring.md",
    "registry.md",
    "pipeline.md",
    "deployment.md",
    "notebooks.md",
    "architecture.md",
    "benchmarks.md",
    "configuration.md",
    "kubernetes.md",
    "vertex_ai.md",
    "sagemaker.md",
    "beam_runners.md",
    "cicd.md",
    "weights.md",
    "photos.md",
]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
# Keys whose list value is an `imgclf` argv: Vertex AI's containerSpec, SageMaker's job spec.
ARGV_KEYS = ("args", "ContainerArguments")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return [(match[1], match[2]) for match in FENCE.finditer(text)]


def imgclf_lines(script: str) -> list[str]:
    """The `imgclf ...` commands of a shell script, continuations joined."""
    joined = re.sub(r"\\\n", " ", script)
    # A command may head a pipe or an `if` ("if imgclf registry list ... | grep -q x; then").
    found = (re.match(r"\s*(?:if\s+)?(imgclf\s[^|;]*)", line) for line in joined.splitlines())
    return [match[1].strip() for match in found if match]


def argv_lists(tree) -> list[list[str]]:
    """Every list of strings under an ARGV_KEYS key, anywhere in a YAML/JSON document."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ARGV_KEYS and isinstance(value, list):
                found.append([str(item) for item in value])
            else:
                found.extend(argv_lists(value))
    elif isinstance(tree, list):
        for item in tree:
            found.extend(argv_lists(item))
    return found


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def workflow_steps() -> list[dict]:
    [job] = workflow()["jobs"].values()
    return job["steps"]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv without 'imgclf') for every imgclf command of the docs and the workflow."""
    commands = []
    for page in PAGES:
        for language, body in fenced_blocks((DOCS / page).read_text()):
            if language in ("bash", "sh", "shell", ""):
                for line in imgclf_lines(body):
                    commands.append((page, shlex.split(line, comments=True)[1:]))
            elif language in ("yaml", "json"):
                document = yaml.safe_load(body) if language == "yaml" else json.loads(body)
                commands.extend((page, argv) for argv in argv_lists(document))
    for step in workflow_steps():
        for line in imgclf_lines(step.get("run", "")):
            commands.append((WORKFLOW.name, shlex.split(line, comments=True)[1:]))
    return commands


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def split_command(argv: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """(the sub-command path, e.g. ['registry', 'push'], and its parser)."""
    parser, path = cli.build_parser(), []
    for token in argv:
        choices = sub_parsers(parser)
        if token not in choices:
            break
        parser, path = choices[token], [*path, token]
    assert not sub_parsers(parser), f"imgclf {' '.join(argv)}: no sub-command after {path}"
    return path, parser


def config_key_exists(key: str) -> bool:
    """Whether `key` (a --set key path) names a field of configs.schema.Config."""
    model: type[pydantic.BaseModel] | None = schema.Config
    for part in key.split("."):
        if model is None:
            return False
        field = model.model_fields.get(part)
        if field is None:
            return False
        model = nested_model(field.annotation)
    return True


def nested_model(annotation) -> type[pydantic.BaseModel] | None:
    candidates = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, pydantic.BaseModel):
            return candidate
    return None


def test_the_docs_and_the_workflow_show_the_commands_they_are_about():
    mentioned = {" ".join(split_command(argv)[0]) for _, argv in documented_commands()}
    assert {
        "ingest",
        "train",
        "evaluate",
        "data digits",
        "pipeline run",
        "pipeline status",
        "predict",
        "registry push",
        "registry promote",
        "registry list",
        "registry serving-config",
    } <= mentioned


@pytest.mark.parametrize(
    "where,argv",
    documented_commands(),
    ids=lambda value: value if isinstance(value, str) else " ".join(value[:2]),
)
def test_every_documented_command_exists_with_the_flags_it_uses(where, argv, capsys):
    path, parser = split_command(argv)
    with pytest.raises(SystemExit) as help_exit:
        cli.main([*path, "--help"])
    assert help_exit.value.code == 0
    help_text = capsys.readouterr().out
    flags = {token.split("=", 1)[0] for token in argv[len(path) :] if token.startswith("--")}
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), (
            f"{where}: imgclf {' '.join(path)} --help does not list {flag}"
        )
    # The whole line parses: required arguments present, choices and types accepted.
    parsed = cli.build_parser().parse_args(argv)
    for override in getattr(parsed, "overrides", None) or []:
        key = override.split("=", 1)[0]
        assert config_key_exists(key), f"{where}: --set {key}: no such config key"


def test_files_named_in_the_docs_exist():
    """(Their links are checked by test_links.py.)"""
    for page in [*PAGES, "workflows/retrain.yml"]:
        text = (DOCS / page).read_text()
        for named in re.findall(r"`((?:tests|deploy|configs|docs)/[\w./-]+)`", text):
            assert (REPO / named).exists(), f"{page}: {named}"


def test_the_workflow_is_a_weekly_retraining_job():
    spec = workflow()
    triggers = spec.get("on", spec.get(True))  # YAML 1.1 reads a bare `on` as true
    [schedule] = triggers["schedule"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert (day, month) == ("*", "*") and weekday.isdigit() and hour.isdigit()
    assert "workflow_dispatch" in triggers
    assert spec["permissions"] == {"contents": "read"}
    assert spec["concurrency"]["cancel-in-progress"] is False

    steps = workflow_steps()
    uses = [step.get("uses", "") for step in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    assert any("pip install ." in step.get("run", "") for step in steps)
    restore = next(s for s in steps if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save@"))
    assert restore["with"]["path"] == save["with"]["path"] == "state"
    assert uses.index(restore["uses"]) < uses.index(save["uses"]) and save["if"] == "always()"

    retrain = next(step for step in steps if step.get("id") == "retrain")
    assert "if" not in retrain  # the first run (no production yet) takes the same command
    assert uses.index(restore["uses"]) < steps.index(retrain) < uses.index(save["uses"])
    [command] = imgclf_lines(retrain["run"])
    assert command.startswith("imgclf pipeline run --config ")
    assert set(VARIABLE.findall(command)) <= set(spec["env"])
    for variable in ("MODEL_STORE", "PIPELINE_METADATA", "MIN_ACCURACY", "EPOCHS"):
        assert f"${variable}" in command
    assert 'gate.baseline="registry:$MODEL_NAME@production"' in retrain["run"]
    assert "gate.max_accuracy_drop" in retrain["run"]


def retrain_argv(step_id: str, env: dict[str, str]) -> list[list[str]]:
    """The imgclf commands of a workflow step with its variables expanded (`env` over the
    workflow's own), as argv lists without 'imgclf'."""
    values = {**workflow()["env"], **env}
    [step] = [step for step in workflow_steps() if step_id in (step.get("id"), step.get("name"))]
    return [
        shlex.split(VARIABLE.sub(lambda m: values[m[1]], line), comments=True)[1:]
        for line in imgclf_lines(step["run"])
    ]


# Test-only: images small enough to train on in seconds, and batches small enough to give the
# workflow's model 20 steps an epoch. Everything else is the workflow's.
TINY_MODEL = ["--set", "data.image_size=[16, 16]", "--set", "data.batch_size=8"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`imgclf argv` in this process: (exit status, stdout). Not capsys: after a pipeline run its
    teardown failed with "I/O operation on closed file"; redirecting each call does not."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


@pytest.mark.slow
@pytest.mark.beam
@pytest.mark.serving
def test_the_workflow_pushes_a_blessed_model_and_never_promotes_an_unblessed_one(
    digits_dir, tmp_path
):
    assert workflow()["env"]["IMGCLF_CONFIG"] == "configs/digits.yaml"
    env = {
        "IMGCLF_CONFIG": str(REPO / "configs" / "digits.yaml"),
        "IMAGES_DIR": str(digits_subset(digits_dir, tmp_path / "images", 20)),
        "DATA_OUT": str(tmp_path / "state" / "tfrecords"),
        "RUNS_DIR": str(tmp_path / "state" / "runs"),
        "MODEL_STORE": str(tmp_path / "state" / "model_store"),
        "PIPELINE_METADATA": str(tmp_path / "state" / "pipeline" / "metadata.sqlite"),
        # The gate refuses a model near chance whatever MIN_ACCURACY says: 3 epochs reach about
        # 0.9 on the 20 test images (0.1 with 10 images and 1 epoch, as this test had before).
        "EPOCHS": "3",
        "MIN_ACCURACY": "0.0",
    }
    assert Path(env["IMGCLF_CONFIG"]) == DIGITS_CONFIG
    store, model = Path(env["MODEL_STORE"]), workflow()["env"]["MODEL_NAME"]

    # The first run: nothing is labelled production yet, so there is no baseline to compare with.
    [first] = retrain_argv("retrain", env)
    code, told = run_cli([*first, *TINY_MODEL])
    assert code == 0 and f"pusher: {model} version 1 pushed, labelled production" in told
    [pushed] = registry_store.list_versions(store, model)
    assert (pushed.version, pushed.labels) == (1, ("production",))
    [first_run] = list(Path(env["RUNS_DIR"]).iterdir())
    assert pushed.run_id == first_run.name
    first_blessing = json.loads((first_run / "blessing.json").read_text())
    assert first_blessing["blessed"] is True and not first_blessing.get("baseline")

    # Next week: a new candidate (a longer schedule re-runs the Trainer on the cached dataset)
    # that the stricter gate does not bless.
    [second] = retrain_argv("retrain", {**env, "EPOCHS": "2", "MIN_ACCURACY": "1.0"})
    code, told = run_cli([*second, *TINY_MODEL])
    assert code == 0
    assert "ExampleGen       cached" in told
    assert f"pusher: {model} not pushed: not blessed" in told
    [second_run] = [p for p in Path(env["RUNS_DIR"]).iterdir() if p != first_run]
    blessing = json.loads((second_run / "blessing.json").read_text())
    assert blessing["blessed"] is False and "accuracy" in blessing["reason"]
    # It was compared with production (the drop check ran) and failed the absolute threshold.
    assert blessing["baseline"]["spec"] == f"registry:{model}@production"
    [still] = registry_store.list_versions(store, model)
    assert (still.version, still.labels, still.run_id) == (1, ("production",), first_run.name)

    # The Summary step's commands, as the workflow runs them after the pipeline.
    status, listing = retrain_argv("Summary", env)
    (status_code, status_out), (list_code, list_out) = run_cli(status), run_cli(listing)
    assert status_code == list_code == 0
    summary = status_out + list_out
    assert "Pusher" in summary and "completed" in summary
    assert "production" in summary and first_run.name in summary
