"""`imgclf registry`: every action through cli.main, checked against the store."""

import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import cli
from core import signatures
from registry import models_config
from tests.conftest import export_dense_model

MODEL = "digits"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_dense_model(tmp_path_factory.mktemp("template"), 4, 1, ["a", "b"])


@pytest.fixture
def make_run(template: Path, tmp_path: Path):
    """make_run(run_id, blessed=True|False|None, accuracy) -> runs/<run_id>/ with export/1/."""

    def make(run_id: str, blessed: bool | None = True, accuracy: float = 0.9) -> Path:
        run_dir = tmp_path / "runs" / run_id
        version_dir = run_dir / "export" / "1"
        shutil.copytree(template, version_dir)
        metadata = version_dir / signatures.METADATA_DIR / signatures.METADATA_FILE
        metadata.write_text(
            json.dumps(
                {
                    "class_names": ["a", "b"],
                    "run_id": run_id,
                    "dataset_version": f"ds-{run_id}",
                    "metrics": {"accuracy": accuracy, "macro_f1": 0.8, "num_examples": 10},
                }
            )
        )
        if blessed is not None:
            (run_dir / "blessing.json").write_text(
                json.dumps({"blessed": blessed, "reason": "accuracy below 0.95"})
            )
        return run_dir

    return make


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["registry", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def served(store_dir: Path) -> dict[str, tuple[list[int], dict[str, int]]]:
    config = models_config.read(store_dir / "models.config")
    return {
        e.name: (list(e.model_version_policy.specific.versions), dict(e.version_labels))
        for e in config.model_config_list.config
    }


def test_push_and_list(make_run, tmp_path, capsys):
    store_dir = tmp_path / "store"
    run_a = make_run("run-a")
    code, out, err = run(
        capsys,
        "push",
        str(run_a),
        "--model",
        MODEL,
        "--label",
        "production",
        "--store",
        str(store_dir),
    )
    assert code == 0, err
    assert out.strip().splitlines()[-1] == (
        f"registry: pushed {run_a} as {MODEL} version 1, labelled production "
        f"-> {store_dir / MODEL / '1'}"
    )
    run_b = make_run("run-b", blessed=None, accuracy=0.875)
    code, out, err = run(
        capsys, "push", str(run_b / "export"), "--model", MODEL, "--store", str(store_dir)
    )
    assert code == 0, err
    assert f"as {MODEL} version 2 -> {store_dir / MODEL / '2'}" in out
    assert (store_dir / MODEL / "2" / "saved_model.pb").is_file()
    assert served(store_dir) == {MODEL: ([1, 2], {"production": 1})}

    code, out, err = run(capsys, "list", "--store", str(store_dir))
    assert code == 0, err
    header, first, second, summary = out.strip().splitlines()
    assert header.split()[:7] == ["model", "version", "status", "labels", "blessed", "run", "id"]
    assert "accuracy" in header and "macro F1" in header and "created" in header
    assert first.split()[:7] == [MODEL, "1", "active", "production", "yes", "run-a", "ds-run-a"]
    assert first.split()[7:9] == ["0.9000", "0.8000"]
    assert second.split()[:8] == [MODEL, "2", "active", "-", "no", "run-b", "ds-run-b", "0.8750"]
    assert summary == f"registry: 2 version(s) of 1 model(s) in {store_dir}"


def test_promote_rollback_archive(make_run, tmp_path, capsys):
    store_dir = tmp_path / "store"
    for run_id in ("run-a", "run-b", "run-c"):
        code, _, err = run(
            capsys, "push", str(make_run(run_id)), "--model", MODEL, "--store", str(store_dir)
        )
        assert code == 0, err
    for version in (1, 3):
        code, out, err = run(
            capsys,
            "promote",
            MODEL,
            str(version),
            "--label",
            "production",
            "--store",
            str(store_dir),
        )
        assert code == 0, err
    assert out.strip() == f"registry: {MODEL} production -> version 3 -> {store_dir / MODEL / '3'}"
    code, _, err = run(
        capsys, "promote", MODEL, "2", "--label", "canary", "--store", str(store_dir)
    )
    assert code == 0, err
    assert served(store_dir)[MODEL] == ([1, 2, 3], {"production": 3, "canary": 2})

    code, out, err = run(capsys, "rollback", MODEL, "--store", str(store_dir))
    assert code == 0, err
    assert out.strip() == (
        f"registry: rolled {MODEL} production back from version 3 to version 1 "
        f"-> {store_dir / MODEL / '1'}"
    )
    assert served(store_dir)[MODEL][1] == {"production": 1, "canary": 2}
    code, _, err = run(capsys, "rollback", MODEL, "--store", str(store_dir))
    assert code == 2 and "no earlier version" in err

    code, _, err = run(capsys, "archive", MODEL, "2", "--store", str(store_dir))
    assert code == 2 and "canary" in err and "Traceback" not in err
    code, out, err = run(capsys, "archive", MODEL, "3", "--store", str(store_dir))
    assert code == 0, err
    archived = store_dir / MODEL / ".archive" / "3"
    assert out.strip() == f"registry: archived {MODEL} version 3 (no longer served) -> {archived}"
    assert (archived / "saved_model.pb").is_file()
    assert served(store_dir)[MODEL] == ([1, 2], {"production": 1, "canary": 2})


@pytest.mark.parametrize("blessed", [False, None], ids=["blessed-false", "no-blessing"])
def test_unblessed_production_needs_force(make_run, tmp_path, capsys, blessed):
    store_dir = tmp_path / "store"
    run_dir = make_run("run-a", blessed=blessed)
    push = ["push", str(run_dir), "--model", MODEL, "--store", str(store_dir)]
    code, out, err = run(capsys, *push, "--label", "production")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "--force" in err
    assert out == "" and not store_dir.exists()  # refused before anything was copied

    code, _, err = run(capsys, *push)
    assert code == 0, err
    code, _, err = run(
        capsys, "promote", MODEL, "1", "--label", "production", "--store", str(store_dir)
    )
    assert code == 2 and "--force" in err
    assert served(store_dir)[MODEL] == ([1], {})

    code, out, err = run(capsys, *push, "--label", "production", "--force")
    assert code == 0, err
    assert "version 2, labelled production" in out
    assert served(store_dir)[MODEL] == ([1, 2], {"production": 2})
    state = json.loads((store_dir / "state.json").read_text())
    assert state["models"][MODEL]["history"]["production"][-1]["forced"] is True
    code, out, err = run(
        capsys, "promote", MODEL, "1", "--label", "production", "--force", "--store", str(store_dir)
    )
    assert code == 0, err
    assert "forced, not blessed" in out
    assert served(store_dir)[MODEL][1] == {"production": 1}


def test_serving_config_rebases_base_paths(make_run, tmp_path, capsys):
    store_dir = tmp_path / "store"
    for run_id, model, label in [("run-a", MODEL, "production"), ("run-b", "flowers", "staging")]:
        code, _, err = run(
            capsys,
            "push",
            str(make_run(run_id)),
            "--model",
            model,
            "--label",
            label,
            "--store",
            str(store_dir),
        )
        assert code == 0, err
    code, out, err = run(capsys, "serving-config", "--root", "/models", "--store", str(store_dir))
    assert code == 0, err
    config = text_format.Parse(out, model_server_config_pb2.ModelServerConfig())
    entries = {e.name: e for e in config.model_config_list.config}
    assert sorted(entries) == [MODEL, "flowers"]
    assert entries[MODEL].base_path == f"/models/{MODEL}"
    assert entries["flowers"].base_path == "/models/flowers"
    assert dict(entries[MODEL].version_labels) == {"production": 1}
    assert dict(entries["flowers"].version_labels) == {"staging": 1}
    assert list(entries[MODEL].model_version_policy.specific.versions) == [1]
    assert err.strip().startswith("registry: serving config for 2 model(s)")  # not in the config
    # The store's own config keeps the host paths.
    assert served(store_dir)[MODEL][1] == {"production": 1}
    host_paths = models_config.read(store_dir / "models.config").model_config_list.config
    assert [e.base_path for e in host_paths] == [str(store_dir / MODEL), str(store_dir / "flowers")]

    out_file = store_dir / "serving.config"
    code, out, err = run(
        capsys,
        "serving-config",
        "--root",
        "/srv/store/",
        "--out",
        str(out_file),
        "--store",
        str(store_dir),
    )
    assert code == 0, err
    assert out.strip().endswith(f"-> {out_file}")
    written = models_config.read(out_file)
    assert [e.base_path for e in written.model_config_list.config] == [
        f"/srv/store/{MODEL}",
        "/srv/store/flowers",
    ]

    code, out, err = run(capsys, "serving-config", "--root", "models", "--store", str(store_dir))
    assert code == 2 and "absolute path" in err and out == ""
    for bad_out in (store_dir, tmp_path / "missing" / "serving.config"):
        code, _, err = run(
            capsys,
            "serving-config",
            "--root",
            "/models",
            "--out",
            str(bad_out),
            "--store",
            str(store_dir),
        )
        assert code == 2 and "must name a file in an existing folder" in err


BAD_NAME = "../x"


@pytest.mark.parametrize(
    "argv",
    [
        ["push", "RUN", "--model", BAD_NAME],
        ["push", "RUN", "--model", BAD_NAME, "--label", "production"],
        ["list", BAD_NAME],
        ["promote", BAD_NAME, "1", "--label", "staging"],
        ["rollback", BAD_NAME],
        ["archive", BAD_NAME, "1"],
    ],
    ids=lambda argv: argv[0] + ("-label" if "--label" in argv else ""),
)
def test_bad_model_name_is_a_clear_error(make_run, tmp_path, capsys, argv):
    store_dir = tmp_path / "store"
    run_dir = make_run("run-a", blessed=False)
    code, _, err = run(capsys, "push", str(run_dir), "--model", MODEL, "--store", str(store_dir))
    assert code == 0, err
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    argv = [str(run_dir) if arg == "RUN" else arg for arg in argv]
    code, out, err = run(capsys, *argv, "--store", str(store_dir))
    assert code == 2
    assert err == f"error: {err[7:].strip()}\n" and "model name" in err and repr(BAD_NAME) in err
    assert "Traceback" not in err and out == ""
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_store_and_model_default_from_the_config(make_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = make_run("run-a")
    code, out, err = run(capsys, "push", "runs/run-a", "--set", "serving.model_name=flowers")
    assert code == 0, err
    assert (
        out.strip() == "registry: pushed runs/run-a as flowers version 1 -> model_store/flowers/1"
    )
    config_file = tmp_path / "imgclf.yaml"
    config_file.write_text("registry: {store: elsewhere}\nserving: {model_name: digits}\n")
    code, out, err = run(capsys, "push", str(run_dir), "--config", str(config_file))
    assert code == 0, err
    assert out.strip().endswith("as digits version 1 -> elsewhere/digits/1")
    code, out, _ = run(capsys, "list", "--set", "registry.store=elsewhere")
    assert out.splitlines()[1].split()[:2] == ["digits", "1"]
    code, _, err = run(capsys, "list", "--set", "registry.stor=x")
    assert code == 2 and "did you mean registry.store" in err
    code, _, err = run(capsys, "list", "--store", "nowhere")
    assert code == 2 and "no model store" in err
    code, _, err = run(capsys, "push", "runs", "--model", MODEL)
    assert code == 2 and "holds no SavedModel" in err
    code, _, err = run(capsys, "push", "runs/run-a", "--model", MODEL, "--force")
    assert code == 2 and "--force only applies with --label" in err
