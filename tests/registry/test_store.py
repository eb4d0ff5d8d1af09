"""Model store: versions, labels, models.config, names, and pushes that race or die midway."""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from core import errors as config_errors
from core import signatures
from registry import errors, store
from tests.conftest import export_dense_model

REPO = Path(__file__).resolve().parents[2]
MODEL = "digits"
WORKERS = 8
BIG_FILE_BYTES = 256 << 20  # sparse at the source; copying it takes a good fraction of a second


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real SavedModel (Input (4, 4, 1) -> Dense(2)), exported once for the module."""
    return export_dense_model(tmp_path_factory.mktemp("template"), 4, 1, ["a", "b"])


@pytest.fixture
def make_run(template: Path, tmp_path: Path):
    """make_run(run_id, blessed=True|False|None) -> runs/<run_id>/ holding export/1/."""

    def make(run_id: str, blessed: bool | None = True) -> Path:
        run_dir = tmp_path / "runs" / run_id
        version_dir = run_dir / "export" / "1"
        shutil.copytree(template, version_dir)
        (version_dir / signatures.METADATA_DIR / signatures.METADATA_FILE).write_text(
            json.dumps(
                {
                    "class_names": ["a", "b"],
                    "run_id": run_id,
                    "dataset_version": f"ds-{run_id}",
                    "config": {"name": "tiny"},
                }
            )
        )
        # The evaluator's figures; the registry records three of them.
        evaluated = {"accuracy": 0.5, "macro_f1": 0.4, "num_examples": 10, "split": "test"}
        (run_dir / "metrics.json").write_text(json.dumps(evaluated))
        if blessed is not None:
            (run_dir / "blessing.json").write_text(json.dumps({"blessed": blessed}))
        return run_dir

    return make


def read_config(store_dir: Path) -> model_server_config_pb2.ModelServerConfig:
    text = (store_dir / "models.config").read_text()
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def served(store_dir: Path) -> dict[str, tuple[list[int], dict[str, int]]]:
    """{name: (versions, labels)} as TF Serving would read them from models.config."""
    return {
        entry.name: (list(entry.model_version_policy.specific.versions), dict(entry.version_labels))
        for entry in read_config(store_dir).model_config_list.config
    }


def test_push_numbers_versions_and_records_the_run(make_run, tmp_path):
    store_dir = tmp_path / "store"
    first = store.push(store_dir, make_run("run-a"), MODEL)
    second = store.push(store_dir, make_run("run-b", blessed=None) / "export", MODEL)
    assert (first.version, second.version) == (1, 2)
    for pushed, run_id in [(first, "run-a"), (second, "run-b")]:
        version_dir = store_dir / MODEL / str(pushed.version)
        assert pushed.path == version_dir
        source = tmp_path / "runs" / run_id / "export" / "1"
        for name in ("saved_model.pb", "variables/variables.index", "assets.extra/imgclf.json"):
            assert (version_dir / name).read_bytes() == (source / name).read_bytes()
        record = json.loads((version_dir / "registry.json").read_text())
        assert record["version"] == pushed.version
        assert record["run_id"] == run_id
        assert record["source"] == str(source)
        assert record["dataset_version"] == f"ds-{run_id}"
        assert record["metrics"] == {"accuracy": 0.5, "macro_f1": 0.4, "num_examples": 10}
        assert record["status"] == "active"
        created = datetime.datetime.fromisoformat(record["created"])
        assert created.utcoffset() == datetime.timedelta(0)
        assert abs(datetime.datetime.now(datetime.UTC) - created).total_seconds() < 60
    assert json.loads((first.path / "registry.json").read_text())["blessing"] == {"blessed": True}
    assert first.blessed and not second.blessed and second.blessing is None
    listed = store.list_versions(store_dir, MODEL)
    assert [(v.version, v.run_id, v.status) for v in listed] == [
        (1, "run-a", "active"),
        (2, "run-b", "active"),
    ]


def test_an_export_of_before_metrics_json_records_the_metrics_in_its_metadata(make_run, tmp_path):
    run_dir = make_run("run-old")
    (run_dir / "metrics.json").unlink()
    metadata_path = run_dir / "export" / "1" / signatures.METADATA_DIR / signatures.METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["metrics"] = {"accuracy": 0.75, "macro_f1": 0.7, "num_examples": 8}
    metadata_path.write_text(json.dumps(metadata))
    pushed = store.push(tmp_path / "store", run_dir, MODEL)
    assert pushed.metrics == {"accuracy": 0.75, "macro_f1": 0.7, "num_examples": 8}


def test_models_config_serves_active_versions_and_labels(make_run, tmp_path):
    store_dir = tmp_path / "store"
    store.push(store_dir, make_run("run-a"), MODEL)
    store.push(store_dir, make_run("run-b"), "other")
    store.push(store_dir, make_run("run-c"), MODEL)
    store.promote(store_dir, MODEL, 2, "production")
    store.promote(store_dir, MODEL, 1, "canary-1")
    entries = {e.name: e for e in read_config(store_dir).model_config_list.config}
    assert sorted(entries) == [MODEL, "other"]
    entry = entries[MODEL]
    assert entry.base_path == str(store_dir / MODEL) and os.path.isabs(entry.base_path)
    assert entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"production": 2, "canary-1": 1}
    assert served(store_dir)["other"] == ([1], {})


def test_promote_then_roll_back_production(make_run, tmp_path):
    store_dir = tmp_path / "store"
    for run_id in ("run-a", "run-b"):
        store.push(store_dir, make_run(run_id), MODEL)
    store.promote(store_dir, MODEL, 1, "production")
    assert served(store_dir)[MODEL][1] == {"production": 1}
    promoted = store.promote(store_dir, MODEL, 2, "production")
    assert promoted.labels == ("production",)
    assert served(store_dir)[MODEL][1] == {"production": 2}
    restored = store.rollback(store_dir, MODEL)
    assert (restored.version, restored.labels) == (1, ("production",))
    assert served(store_dir)[MODEL][1] == {"production": 1}
    assert [v.labels for v in store.list_versions(store_dir, MODEL)] == [("production",), ()]
    with pytest.raises(errors.NothingToRollBack, match="no earlier version"):
        store.rollback(store_dir, MODEL)
    with pytest.raises(errors.NothingToRollBack, match="promote a version first"):
        store.rollback(store_dir, MODEL, "staging")


@pytest.mark.parametrize("blessed", [False, None], ids=["blessed-false", "no-blessing"])
def test_production_takes_an_unblessed_version_only_with_force(make_run, tmp_path, blessed):
    store_dir = tmp_path / "store"
    store.push(store_dir, make_run("run-a", blessed=blessed), MODEL)
    with pytest.raises(errors.NotBlessed, match="--force") as raised:
        store.promote(store_dir, MODEL, 1, "production")
    assert isinstance(raised.value, config_errors.UserError)
    assert "bless it" in str(raised.value)
    assert served(store_dir)[MODEL][1] == {}
    store.promote(store_dir, MODEL, 1, "staging")  # other labels need no blessing
    store.promote(store_dir, MODEL, 1, "production", force=True)
    assert served(store_dir)[MODEL][1] == {"production": 1, "staging": 1}
    state = json.loads((store_dir / "state.json").read_text())
    assert state["models"][MODEL]["history"]["production"][-1]["forced"] is True


def test_archive_leaves_the_served_set_but_not_while_labelled(make_run, tmp_path):
    store_dir = tmp_path / "store"
    for run_id in ("run-a", "run-b"):
        store.push(store_dir, make_run(run_id), MODEL)
    store.promote(store_dir, MODEL, 2, "production")
    with pytest.raises(errors.VersionLabelled, match="production"):
        store.archive(store_dir, MODEL, 2)
    assert served(store_dir)[MODEL][0] == [1, 2]
    assert (store_dir / MODEL / "2" / "saved_model.pb").is_file()
    store.promote(store_dir, MODEL, 1, "production")
    archived = store.archive(store_dir, MODEL, 2)
    assert archived.status == "archived"
    assert served(store_dir)[MODEL] == ([1], {"production": 1})
    assert not (store_dir / MODEL / "2").exists()
    record = json.loads((store_dir / MODEL / ".archive" / "2" / "registry.json").read_text())
    assert record["status"] == "archived"
    listed = store.list_versions(store_dir, MODEL)
    assert [(v.version, v.status) for v in listed] == [(1, "active"), (2, "archived")]
    with pytest.raises(errors.RegistryError, match="archived"):
        store.promote(store_dir, MODEL, 2, "staging")
    with pytest.raises(errors.RegistryError, match="archived"):
        store.rollback(store_dir, MODEL)  # production's previous version is the archived 2
    # An archived number is never handed out again.
    assert store.push(store_dir, make_run("run-c"), MODEL).version == 3


BAD_NAMES = ["../x", "a/b", ".hidden", "..", "", "a..b", "/abs", "models.config", "x" * 65]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_model_names_are_refused_before_touching_disk(make_run, tmp_path, name):
    run_dir = make_run("run-a")
    store_dir = tmp_path / "deep" / "store"
    with pytest.raises(errors.InvalidName, match="model name") as raised:
        store.push(store_dir, run_dir, name)
    assert isinstance(raised.value, config_errors.UserError)
    assert repr(name) in str(raised.value)
    assert not (tmp_path / "deep").exists()
    store.push(store_dir, run_dir, MODEL)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(errors.InvalidName):
        store.promote(store_dir, name, 1, "production")
    with pytest.raises(errors.InvalidName):
        store.list_versions(store_dir, name)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("label", ["../x", "a/b", ".hidden", "Production", "1st", ""])
def test_bad_labels_are_refused(make_run, tmp_path, label):
    store_dir = tmp_path / "store"
    store.push(store_dir, make_run("run-a"), MODEL)
    with pytest.raises(errors.InvalidName, match="label"):
        store.promote(store_dir, MODEL, 1, label)
    assert served(store_dir)[MODEL][1] == {}


def test_push_refuses_sources_without_a_model_or_with_a_bad_blessing(make_run, tmp_path):
    with pytest.raises(errors.ExportNotFound, match="holds no SavedModel"):
        store.push(tmp_path / "store", tmp_path, MODEL)
    run_dir = make_run("run-a")
    (run_dir / "blessing.json").write_text('{"blessed": "yes"}')
    with pytest.raises(errors.InvalidBlessing, match='"blessed": true or false'):
        store.push(tmp_path / "store", run_dir, MODEL)
    assert not (tmp_path / "store").exists()
    with pytest.raises(errors.NotFound, match="no model store"):
        store.list_versions(tmp_path / "store")
    (run_dir / "blessing.json").unlink()
    store.push(tmp_path / "store", run_dir, MODEL)
    with pytest.raises(errors.NotFound, match=r"no version 7 .*\(versions: \[1\]\)"):
        store.promote(tmp_path / "store", MODEL, 7, "staging")
    with pytest.raises(errors.NotFound, match="no model 'other'"):
        store.list_versions(tmp_path / "store", "other")


# Each worker pushes its own run, then points `staging` and its own label at what it pushed:
# a lost update shows as a missing label, a missing history entry or a reused version.
WORKER = """
import sys, time
from pathlib import Path
from registry import store
store_dir, run_dir, index, go = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
Path(f"{go}.ready-{index}").touch()
while not go.exists():
    time.sleep(0.001)
version = store.push(store_dir, run_dir, "digits", lock_timeout_s=30).version
store.promote(store_dir, "digits", version, "staging", lock_timeout_s=30)
store.promote(store_dir, "digits", version, f"w{index}", lock_timeout_s=30)
print(version)
"""


def test_concurrent_pushes_and_promotions_lose_nothing(make_run, tmp_path):
    store_dir = tmp_path / "store"
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store_dir), str(make_run(f"run-{i}")), str(i), go],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("go.ready-*"))) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    # Readers during the race see whole files and versions appearing in order.
    reads = 0
    while any(worker.poll() is None for worker in workers):
        if (store_dir / "models.config").exists():
            [(name, (versions, _))] = served(store_dir).items()
            assert name == MODEL and versions == list(range(1, len(versions) + 1))
            json.loads((store_dir / "state.json").read_text())
            numbers = [v.version for v in store.list_versions(store_dir)]
            assert numbers == list(range(1, len(numbers) + 1))
            reads += 1
        time.sleep(0.002)
    outputs = [worker.communicate(timeout=30) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    pushed = {f"w{i}": int(out.strip()) for i, (out, _) in enumerate(outputs)}
    assert sorted(pushed.values()) == list(range(1, WORKERS + 1))
    assert reads > 0

    listed = store.list_versions(store_dir, MODEL)
    assert [v.version for v in listed] == list(range(1, WORKERS + 1))
    for version in listed:
        [worker] = [label for label, number in pushed.items() if number == version.version]
        assert version.run_id == f"run-{worker[1:]}"
    versions, labels = served(store_dir)[MODEL]
    assert versions == list(range(1, WORKERS + 1))
    assert {k: v for k, v in labels.items() if k != "staging"} == pushed
    state = json.loads((store_dir / "state.json").read_text())
    history = [entry["version"] for entry in state["models"][MODEL]["history"]["staging"]]
    assert sorted(history) == list(range(1, WORKERS + 1))
    assert labels["staging"] == history[-1]
    assert state["models"][MODEL]["last_version"] == WORKERS
    assert list((store_dir / ".staging").iterdir()) == []
    assert not list(store_dir.glob(".*.tmp"))


KILLED_PUSH = """
import sys
from registry import store
store.push(sys.argv[1], sys.argv[2], "digits")
"""


def test_push_killed_while_copying_leaves_no_version(make_run, tmp_path):
    store_dir = tmp_path / "store"
    store.push(store_dir, make_run("run-a"), MODEL)
    config_before = (store_dir / "models.config").read_bytes()
    big_run = make_run("run-big")
    with open(big_run / "export" / "1" / "assets.extra" / "big.bin", "wb") as big:
        big.truncate(BIG_FILE_BYTES)
    pusher = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUSH, str(store_dir), str(big_run)],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    partial = []
    while not partial and time.monotonic() < deadline and pusher.poll() is None:
        partial = [
            p for p in store_dir.glob(".staging/*/assets.extra/big.bin") if p.stat().st_size > 0
        ]
    pusher.send_signal(signal.SIGKILL)
    pusher.wait(timeout=10)
    assert pusher.returncode == -signal.SIGKILL, pusher.stderr.read().decode()[-3000:]
    assert partial, "the push never started copying big.bin"
    assert partial[0].stat().st_size < BIG_FILE_BYTES, "killed only after the copy finished"

    assert sorted(p.name for p in (store_dir / MODEL).iterdir()) == ["1"]
    assert [v.version for v in store.list_versions(store_dir)] == [1]
    assert (store_dir / "models.config").read_bytes() == config_before
    # The kernel dropped the dead push's locks: the next push neither waits nor fails.
    after = store.push(store_dir, make_run("run-c"), MODEL, lock_timeout_s=5)
    assert after.version == 2 and after.run_id == "run-c"
    assert served(store_dir)[MODEL][0] == [1, 2]
    assert list((store_dir / ".staging").iterdir()) == []
