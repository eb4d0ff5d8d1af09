"""notebooks/*.ipynb executed headless on the .venv's kernel against real digits data and a run."""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import DIGITS_CONFIG

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
RESULT_PREFIX = "IMGCLF_RESULT "


def execute(name: str, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    """Runs notebooks/<name> from the notebooks folder, as Jupyter would, with `env` set (the
    kernel inherits this process's environment); raises CellExecutionError on any cell error."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def result(notebook: nbformat.NotebookNode) -> dict:
    """The notebook's one IMGCLF_RESULT line, parsed."""
    lines = [
        line.removeprefix(RESULT_PREFIX)
        for output in outputs(notebook)
        if output.get("output_type") == "stream"
        for line in output["text"].splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    assert len(lines) == 1, f"expected one {RESULT_PREFIX!r} line, found {len(lines)}"
    return json.loads(lines[0])


def images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for output in outputs(notebook))


def set_env(overrides: list[str]) -> str:
    return ";".join(overrides)


@pytest.mark.parametrize("name", ["exploration.ipynb", "results.ipynb"])
def test_committed_notebooks_have_no_outputs_and_read_their_paths_from_the_environment(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    parameters = code[0]
    assert "parameters" in parameters.metadata.get("tags", [])
    assert "os.environ.get(" in parameters.source
    variable = "IMGCLF_DATASET_DIR" if name == "exploration.ipynb" else "IMGCLF_RUN_DIR"
    assert variable in parameters.source
    assert notebook.metadata.kernelspec.name == "python3"


def test_the_kernel_is_this_virtualenvs_python():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # jupyter_client launches a native kernel spec's bare "python" as sys.executable.
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    assert Path(spec.resource_dir).is_relative_to(sys.prefix), spec.resource_dir


@pytest.mark.slow
@pytest.mark.beam
def test_exploration_shows_every_class_and_augments_through_the_pipeline(small_digits, monkeypatch):
    overrides, ingested = small_digits
    info = ingested.dataset
    env = {
        "IMGCLF_CONFIG": str(DIGITS_CONFIG),
        "IMGCLF_DATASET_DIR": str(ingested.path),
        "IMGCLF_SET": set_env(overrides),
        "IMGCLF_SAMPLES_PER_CLASS": "3",
        "IMGCLF_AUGMENTED_COPIES": "4",
    }
    notebook = execute("exploration.ipynb", env, monkeypatch)
    found = result(notebook)

    assert Path(found["kernel"]).resolve() == Path(sys.executable).resolve()
    assert found["dataset_version"] == ingested.version
    assert found["label_map"] == info["label_map"] == [str(d) for d in range(10)]
    assert found["split_counts"] == {s: v["count"] for s, v in info["splits"].items()}
    # The grid: every class of the dataset, each with as many samples as asked (9+ per class
    # in the train split).
    assert found["grid_classes"] == info["label_map"]
    assert found["grid_counts"] == dict.fromkeys(info["label_map"], 3)
    # The augmentation preview: 4 copies of one image per class, at the config's image size,
    # changed by configs/digits.yaml's rotation and translation, still in [0, 1].
    augmented = found["augment"]
    assert augmented["layers"] == ["random_rotation", "random_translation"]
    assert augmented["shape"] == [4, 10, 32, 32, 1]
    assert augmented["changed"] > 0.01
    assert 0.0 <= augmented["min"] and augmented["max"] <= 1.0
    assert images(notebook) == 3  # class counts, sample grid, augmentation grid


@pytest.mark.slow
@pytest.mark.beam
def test_results_notebook_reads_back_the_runs_curves_confusion_matrix_and_mistakes(
    small_digits, small_digits_run, monkeypatch
):
    overrides, run = small_digits_run
    _, ingested = small_digits
    env = {
        "IMGCLF_CONFIG": str(DIGITS_CONFIG),
        "IMGCLF_RUN_DIR": str(run.run_dir),
        "IMGCLF_SET": set_env(overrides),
    }
    notebook = execute("results.ipynb", env, monkeypatch)
    found = result(notebook)

    test_count = ingested.dataset["splits"]["test"]["count"]
    assert found["kernel"] and Path(found["kernel"]).resolve() == Path(sys.executable).resolve()
    assert found["run_id"] == run.run_dir.name and found["status"] == "completed"
    assert found["dataset_version"] == ingested.version
    assert found["epochs"] == 2
    assert found["class_names"] == ingested.dataset["label_map"]
    # The confusion matrix covers exactly the test split; its diagonal is the accuracy.
    assert found["confusion_sum"] == found["num_examples"] == test_count
    assert found["accuracy"] == pytest.approx(found["confusion_trace"] / test_count)
    # predictions.jsonl: one row per test image, the mistakes being what is off the diagonal.
    assert found["predictions"] == test_count
    assert found["misclassified"] == test_count - found["confusion_trace"]
    lines = (run.run_dir / "predictions.jsonl").read_text().splitlines()
    assert found["misclassified"] == sum(not json.loads(line)["correct"] for line in lines)
    # loss and accuracy curves, the confusion matrix, and the misclassified grid if any.
    assert images(notebook) == 3 + (found["misclassified"] > 0)
