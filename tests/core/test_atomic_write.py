"""Files written whole or not at all (core/atomic_write.py)."""

import json
import threading

import pytest

from core import atomic_write


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    assert atomic_write.write_json(path, {"b": 1, "a": [1, 2]}, sort_keys=True) == path
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_write_that_fails_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "state.json"
    atomic_write.write_json(path, {"version": 1}, durable=True)

    class Unwritable:
        def __str__(self):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write.write_json(path, {"version": Unwritable()})
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_concurrent_writers_never_leave_half_a_file(tmp_path):
    path = tmp_path / "record.json"
    payloads = [{"writer": n, "data": "x" * 50_000} for n in range(8)]
    threads = [
        threading.Thread(target=atomic_write.write_json, args=(path, payload))
        for payload in payloads
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert json.loads(path.read_text()) in payloads
    assert not list(tmp_path.glob(f".*{atomic_write.TEMP_SUFFIX}"))


def test_a_rename_that_fails_removes_its_temporary(tmp_path):
    occupied = tmp_path / "models.config"
    occupied.mkdir()  # a folder where the file should go: the rename over it fails
    (occupied / "inside").write_text("kept")
    with pytest.raises(OSError):
        atomic_write.write_text(occupied, "model_config_list {}", durable=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]
    assert (occupied / "inside").read_text() == "kept"
