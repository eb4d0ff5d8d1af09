"""What tensorflow_model_server reads in the serving image: its batching and monitoring files,
and the serving.config of a real store, parsed with TF Serving's message classes."""

import fnmatch
import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import cli
from core import signatures
from registry import store
from tests.conftest import export_dense_model
from tests.deploy import dockerfile, serving_protos

REPO = Path(__file__).resolve().parents[2]
SERVING_DIR = REPO / "deploy" / "serving"
ROOT = "/models"  # where the serving image holds the store
MODEL = "digits"


def test_batching_parameters_parse():
    text = (SERVING_DIR / "batching.config").read_text()
    batching = text_format.Parse(text, serving_protos.BatchingParameters())
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches"):
        assert batching.HasField(name), f"{name} is unset: the server would use its own default"
    assert batching.max_batch_size.value >= 1
    assert 0 < batching.batch_timeout_micros.value <= 100_000  # a wait well under a request's
    assert batching.max_enqueued_batches.value >= 1
    assert batching.num_batch_threads.value >= 1
    sizes = list(batching.allowed_batch_sizes)
    if sizes:  # TF Serving's rule: increasing, the last one max_batch_size
        assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value


def test_monitoring_config_enables_prometheus():
    text = (SERVING_DIR / "monitoring.config").read_text()
    monitoring = text_format.Parse(text, serving_protos.MonitoringConfig())
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_the_message_classes_refuse_what_the_server_would_refuse():
    with pytest.raises(text_format.ParseError, match="no field named"):
        text_format.Parse("max_batch_size_typo { value: 8 }", serving_protos.BatchingParameters())
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 8", serving_protos.BatchingParameters())  # a wrapper
    with pytest.raises(text_format.ParseError, match="no field named"):
        text_format.Parse("prometheus_config { port: 1 }", serving_protos.MonitoringConfig())


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store: digits versions 1-3 (2 archived; 3 production, 1 staging) and flowers 1."""
    base = tmp_path_factory.mktemp("deploy-store")
    template = export_dense_model(base / "template", 4, 1, ["a", "b"])
    store_dir = base / "model_store"

    def run_dir(run_id: str) -> Path:
        version_dir = base / "runs" / run_id / "export" / "1"
        shutil.copytree(template, version_dir)
        (version_dir.parent.parent / "blessing.json").write_text(json.dumps({"blessed": True}))
        return version_dir.parent.parent

    for run_id in ("run-a", "run-b", "run-c"):
        store.push(store_dir, run_dir(run_id), MODEL)
    store.push(store_dir, run_dir("run-f"), "flowers")
    store.promote(store_dir, MODEL, 1, "staging")
    store.archive(store_dir, MODEL, 2)
    store.promote(store_dir, MODEL, 3, "production")
    return store_dir


def serving_config(store_dir: Path, capsys) -> model_server_config_pb2.ModelServerConfig:
    out = store_dir / "serving.config"
    argv = ["registry", "serving-config", "--root", ROOT, "--out", str(out)]
    assert cli.main([*argv, "--store", str(store_dir)]) == 0, capsys.readouterr().err
    return text_format.Parse(out.read_text(), model_server_config_pb2.ModelServerConfig())


def test_serving_config_of_a_real_store(model_store, capsys):
    config = serving_config(model_store, capsys)
    entries = {entry.name: entry for entry in config.model_config_list.config}
    assert sorted(entries) == [MODEL, "flowers"]
    for name, entry in entries.items():
        assert entry.base_path == f"{ROOT}/{name}"
        assert entry.model_platform == "tensorflow"
    digits = entries[MODEL]
    assert list(digits.model_version_policy.specific.versions) == [1, 3]  # 2 is archived
    assert dict(digits.version_labels) == {"production": 3, "staging": 1}
    assert dict(entries["flowers"].version_labels) == {}
    # Only the paths moved: the store's own models.config says the same with host paths.
    host = text_format.Parse(
        (model_store / store.CONFIG_FILE).read_text(), model_server_config_pb2.ModelServerConfig()
    )
    for entry in host.model_config_list.config:
        assert entry.base_path == str(model_store / entry.name)
        entry.base_path = f"{ROOT}/{entry.name}"
    assert host == config


def image_files(store_dir: Path, excludes: list[str]) -> set[str]:
    """What `COPY --from=store --exclude=... . /models/` puts under /models, relative paths."""

    def excluded(relative: Path) -> bool:
        prefixes = ["/".join(relative.parts[: i + 1]) for i in range(len(relative.parts))]
        return any(
            fnmatch.fnmatch(prefix, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatch(Path(prefix).name, pattern[3:]))
            for pattern in excludes
            for prefix in prefixes
        )

    return {
        str(path.relative_to(store_dir))
        for path in store_dir.rglob("*")
        if path.is_file() and not excluded(path.relative_to(store_dir))
    }


def test_the_serving_image_holds_every_version_the_config_serves(model_store, capsys):
    config = serving_config(model_store, capsys)
    instructions = dockerfile.read(SERVING_DIR / "Dockerfile")
    copies = [i for i in instructions if i.keyword == "COPY" and i.flags.get("from")]
    [single] = [c for c in copies if c.args[0] != "."]
    [bulk] = [c for c in copies if c.args[0] == "."]
    assert (model_store / single.args[0]).is_file()  # serving.config, as the header makes it
    files = image_files(model_store, bulk.flags["exclude"])
    for entry in config.model_config_list.config:
        folder = entry.base_path.removeprefix(f"{bulk.args[-1]}")
        for version in entry.model_version_policy.specific.versions:
            assert f"{folder}/{version}/saved_model.pb" in files
            assert (
                f"{folder}/{version}/{signatures.METADATA_DIR}/{signatures.METADATA_FILE}" in files
            )
    assert not any(".archive" in f or f.startswith(".staging") for f in files)
    assert store.CONFIG_FILE not in files and "serving.config" in files
    assert any(
        f.startswith(f"{MODEL}/.archive/")
        for f in (str(p.relative_to(model_store)) for p in model_store.rglob("*"))
    )  # the archived version exists in the store, only the image leaves it out
