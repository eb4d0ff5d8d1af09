"""tracking.compare and `imgclf runs compare`: differences, deltas, regressions, the HTML page."""

import base64
import io
import re

import pytest
from PIL import Image

import cli
from tests.tracking.runs_data import write_run
from tracking import compare, compare_html, listing, records


def scores(recall: float, f1: float) -> dict:
    return {"precision": 0.9, "recall": recall, "f1": f1, "support": 10}


def epochs(losses: list[float]) -> list[dict]:
    return [
        {"epoch": i, "loss": loss, "accuracy": 1 - loss / 3, "val_loss": loss + 0.1,
         "val_accuracy": 0.9 - loss / 3}
        for i, loss in enumerate(losses)
    ]  # fmt: skip


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    write_run(
        root, "base", accuracy=0.90, learning_rate=0.003, epochs=epochs([2.0, 1.0, 0.5]),
        per_class={"cat": scores(0.9, 0.9), "dog": scores(0.8, 0.85), "fox": scores(0.7, 0.7)},
    )  # fmt: skip
    write_run(
        root, "lower-lr", accuracy=0.88, learning_rate=0.001, epochs=epochs([2.2, 1.5]),
        per_class={"cat": scores(0.95, 0.91), "dog": scores(0.6, 0.85), "fox": scores(0.7, 0.65)},
    )  # fmt: skip
    write_run(
        root, "bigger", accuracy=0.93, backbone="mobilenet_v2", epochs=epochs([1.8, 0.9, 0.4]),
        per_class={"cat": scores(0.9, 0.95), "dog": scores(0.85, 0.9), "fox": scores(0.7, 0.7)},
    )  # fmt: skip
    return root


def load(runs_dir, *run_ids) -> list[dict]:
    return [records.load(runs_dir / run_id) for run_id in run_ids]


def test_config_differences_only_keys_that_differ(runs_dir):
    result = compare.compare(load(runs_dir, "base", "lower-lr", "bigger"))
    assert result.config == {
        "model.backbone": ["cnn", "cnn", "mobilenet_v2"],
        "name": ["base", "lower", "bigger"],
        "optimizer.learning_rate": [0.003, 0.001, 0.003],
    }


def test_config_differences_inside_lists_and_missing_keys():
    one = {"run_id": "a", "config": {"model": {"cnn": [{"conv": {"filters": 32}}]}, "seed": 1}}
    two = {"run_id": "b", "config": {"model": {"cnn": [{"conv": {"filters": 64}}]}}}
    assert compare.config_differences([one, two]) == {
        "model.cnn": ['[{"conv":{"filters":32}}]', '[{"conv":{"filters":64}}]'],
        "seed": [1, None],
    }


def test_metric_values_per_run_and_verdicts(runs_dir):
    result = compare.compare(load(runs_dir, "base", "lower-lr", "bigger"))
    assert result.metrics["accuracy"] == [0.90, 0.88, 0.93]
    assert result.metrics["calibration.ece"] == [0.1, 0.1, 0.1]
    assert "per_class.cat.recall" not in result.metrics  # per-class scores are apart
    assert compare.verdict("accuracy", 0.90, 0.88) == "worse"
    assert compare.verdict("accuracy", 0.90, 0.93) == "better"
    assert compare.verdict("calibration.ece", 0.1, 0.2) == "worse"  # lower is better
    assert compare.verdict("val_loss", 0.5, 0.4) == "better"
    assert compare.verdict("num_examples", 100, 90) == ""  # bookkeeping, not judged


def test_per_class_regressions_are_recall_or_f1_below_the_first_run(runs_dir):
    result = compare.compare(load(runs_dir, "base", "lower-lr", "bigger"))
    found = {(r.run, r.class_name, r.metric): (r.baseline, r.value) for r in result.regressions}
    assert found == {
        (1, "dog", "recall"): (0.8, 0.6),
        (1, "fox", "f1"): (0.7, 0.65),
    }  # run 2's cat is better, dog's F1 equal; run 3 is nowhere lower
    assert result.is_regression(1, "dog", "recall")
    assert not result.is_regression(1, "dog", "f1")


def test_compare_needs_two_runs(runs_dir):
    with pytest.raises(ValueError, match="at least two runs"):
        compare.compare(load(runs_dir, "base"))


def test_runs_compare_in_the_terminal(runs_dir, capsys):
    code = cli.main(["runs", "compare", "base", "lower-lr", "--runs-dir", str(runs_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"optimizer\.learning_rate\s+0\.0030\s+0\.0010", out)
    assert re.search(r"accuracy\s+0\.9000\s+0\.8800 \(-0\.0200\) ▼", out)
    assert re.search(r"dog\s+0\.8000\s+▼0\.6000\s+0\.8500\s+0\.8500", out)
    assert "▼ dog recall: 0.8000 -> 0.6000 (-0.2000) in run 2" in out
    assert "▼ fox f1: 0.7000 -> 0.6500 (-0.0500) in run 2" in out
    assert out.splitlines()[-1] == (
        "runs compare: 2 runs vs base: 2 config difference(s), 2 per-class regression(s)"
    )


def test_runs_compare_writes_a_self_contained_html_page(runs_dir, tmp_path, capsys):
    out = tmp_path / "reports" / "compare.html"
    code = cli.main(
        ["runs", "compare", str(runs_dir / "base"), str(runs_dir / "lower-lr"),
         str(runs_dir / "bigger"), "--html", str(out)]
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"HTML in {out}")
    page = out.read_text()
    assert 'src="http' not in page and "<script" not in page  # nothing fetched
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1
    curves = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert curves.format == "PNG" and curves.width > 2 * curves.height
    regressions = re.findall(r'<td class="num regression">▼ ([\d.]+)</td>', page)
    assert regressions == ["0.6000", "0.6500"]  # dog recall, fox F1 of run 2
    assert '<td class="num worse">0.8800 (-0.0200)</td>' in page
    assert '<td class="num better">0.9300 (+0.0300)</td>' in page
    assert "2 regression(s)" in page and "mobilenet_v2" in page


def test_curves_overlay_every_run_train_and_validation(runs_dir, monkeypatch):
    plotted = []
    from matplotlib.axes import Axes

    original = Axes.plot

    def spy(self, *args, **kwargs):
        plotted.append((self.get_title() or "?", kwargs["label"], list(args[0]), list(args[1])))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    compare_html.curves_png(load(runs_dir, "base", "lower-lr"))
    labels = [label for _, label, _, _ in plotted]
    assert labels == ["run 1 train", "run 1 val", "run 2 train", "run 2 val"] * 2
    assert plotted[2][2:] == ([1, 2], [2.2, 1.5])  # run 2's train loss, epochs from 1


def test_runs_compare_with_an_unknown_run_lists_close_matches(runs_dir, capsys):
    code = cli.main(["runs", "compare", "base", "lower-lrr", "--runs-dir", str(runs_dir)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: no run 'lower-lrr'") and "close matches: lower-lr" in err


def test_runs_compare_needs_two_runs(runs_dir, capsys):
    assert cli.main(["runs", "compare", "base", "--runs-dir", str(runs_dir)]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert listing.resolve("base", runs_dir).name == "base"
