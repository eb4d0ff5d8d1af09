"""tracking.listing and `imgclf runs list`: filters, sorting, limits and finding one run."""

import pytest

import cli
from tests.tracking.runs_data import write_run
from tracking import listing, records


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "digits-aaa111", accuracy=0.95, started="2026-01-01T10:00:00+00:00")
    write_run(
        root, "digits-bbb222", accuracy=0.85, learning_rate=0.001,
        started="2026-01-02T10:00:00+00:00",
    )  # fmt: skip
    write_run(
        root, "flowers-ccc333", accuracy=0.90, backbone="mobilenet_v2",
        started="2026-01-03T10:00:00+00:00", training={"epochs_run": 7, "train_seconds": 30.5},
    )  # fmt: skip
    write_run(root, "digits-ddd444", status=records.FAILED, started="2026-01-04T10:00:00+00:00")
    (root / "not-a-run").mkdir()  # no run.json, no config: skipped
    return root


def ids(selected: list[dict]) -> list[str]:
    return [record["run_id"] for record in selected]


def select(runs_dir, filters=(), sort=listing.DEFAULT_SORT, limit=None):
    parsed = [listing.parse_filter(text) for text in filters]
    return ids(listing.select(listing.find_runs(runs_dir), parsed, sort, limit))


def test_default_order_is_newest_first(runs_dir):
    assert select(runs_dir) == ["digits-ddd444", "flowers-ccc333", "digits-bbb222", "digits-aaa111"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["accuracy>0.9"], ["digits-aaa111"]),
        (["accuracy>=0.9"], ["flowers-ccc333", "digits-aaa111"]),
        (["accuracy < 0.9"], ["digits-bbb222"]),
        (["status=completed", "model.backbone=cnn"], ["digits-bbb222", "digits-aaa111"]),
        (["status=failed"], ["digits-ddd444"]),
        (["status!=completed"], ["digits-ddd444"]),
        (["name=flow*"], ["flowers-ccc333"]),
        (["optimizer.learning_rate==0.001"], ["digits-bbb222"]),
        (["dataset=v1", "id=digits-a*"], ["digits-aaa111"]),
        (["calibration.ece<0.2", "macro_f1>0.9"], ["digits-aaa111"]),
        (["epochs_run>5", "train_seconds<60"], ["flowers-ccc333"]),  # run.json's training
        (["no.such.key=1"], []),
    ],
)
def test_filters(runs_dir, filters, expected):
    assert select(runs_dir, filters) == expected


def test_sort_by_metric_both_ways_runs_without_it_last(runs_dir):
    assert select(runs_dir, sort="accuracy") == [
        "digits-bbb222", "flowers-ccc333", "digits-aaa111", "digits-ddd444"
    ]  # fmt: skip
    descending = ["digits-aaa111", "flowers-ccc333", "digits-bbb222", "digits-ddd444"]
    assert select(runs_dir, sort="-accuracy") == descending
    assert select(runs_dir, sort="accuracy:desc") == descending
    assert select(runs_dir, sort="started", limit=2) == ["digits-aaa111", "digits-bbb222"]


@pytest.mark.parametrize("text", ["accuracy", "accuracy~0.9", ">0.9"])
def test_a_filter_without_an_operator_is_a_user_error(text):
    with pytest.raises(listing.BadQuery, match="KEY OP VALUE"):
        listing.parse_filter(text)


def test_resolve_by_path_id_or_unique_part(runs_dir):
    assert listing.resolve("digits-aaa111", runs_dir) == runs_dir / "digits-aaa111"
    assert listing.resolve("bbb2", runs_dir) == runs_dir / "digits-bbb222"
    assert listing.resolve(str(runs_dir / "flowers-ccc333"), "elsewhere") == (
        runs_dir / "flowers-ccc333"
    )
    with pytest.raises(listing.RunNotFound, match="matches 3 runs"):
        listing.resolve("digits", runs_dir)
    with pytest.raises(listing.RunNotFound, match="close matches: digits-aaa111"):
        listing.resolve("digits-aaa112", runs_dir)


def test_runs_list_prints_a_table_and_a_summary(runs_dir, capsys):
    code = cli.main(
        ["runs", "list", "--runs-dir", str(runs_dir), "--filter", "status=completed",
         "--sort=-accuracy", "--filter", "optimizer.learning_rate>0"]
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    header, *rows, summary = lines
    assert header.split()[:4] == ["run", "id", "status", "started"]
    assert "optimizer.learning_rate" in header  # a filtered key gets a column
    assert [row.split()[0] for row in rows] == ["digits-aaa111", "flowers-ccc333", "digits-bbb222"]
    assert "0.9500" in rows[0] and "1m05s" in rows[0] and "mobilenet_v2" in rows[1]
    assert summary.startswith(f"runs list: 3 of 4 run(s) in {runs_dir}")


def test_runs_list_of_a_missing_folder_is_one_error_line(tmp_path, capsys):
    assert cli.main(["runs", "list", "--runs-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: runs folder") and len(err.splitlines()) == 1


def test_runs_show_of_an_unknown_run_names_close_matches(runs_dir, capsys):
    assert cli.main(["runs", "show", "digits-aab111", "--runs-dir", str(runs_dir)]) == 2
    assert "close matches: digits-aaa111" in capsys.readouterr().err


def test_runs_show_prints_the_record(runs_dir, capsys):
    assert cli.main(["runs", "show", "ddd444", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "status: failed" in out and "reason: TrainingError: boom" in out
    assert "\n  optimizer: {learning_rate: 0.003}\n" in out  # the config, as YAML
    assert out.splitlines()[-1].startswith("runs show: digits-ddd444 failed after 1m05s")
