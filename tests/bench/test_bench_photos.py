"""bench/bench_photos.py's report: per-contender accuracy spread and seconds, the comparisons with
plain Keras and the peer (the peer's time bar holds only at its accuracy), contenders that could
not run left out; the pretrained backbone reaches imgclf through a weights mirror on 127.0.0.1."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # the benchmarks import their siblings
    try:
        import bench_photos
        import photo_peer
        import photo_pretrain
        import report
        from harness import comparison

        yield bench_photos, photo_peer, photo_pretrain, report, comparison
    finally:
        sys.path.remove(str(BENCH))


def summaries(bench_photos, accuracies: dict[str, list[float]], seconds: dict[str, float]):
    return {
        name: bench_photos.summary(
            [bench_photos.Sample(seed, a, seconds[name]) for seed, a in enumerate(values)]
        )
        for name, values in accuracies.items()
    }


def test_summary_has_mean_spread_and_median_seconds(bench):
    bench_photos = bench[0]
    samples = [bench_photos.Sample(0, 0.9, 10.0), bench_photos.Sample(1, 1.0, 30.0)]
    summary = bench_photos.summary([*samples, bench_photos.Sample(2, 0.95, 12.0)])
    assert summary["holdout_accuracy_mean"] == pytest.approx(0.95)
    assert summary["holdout_accuracy_std"] == pytest.approx(np.std([0.9, 1.0, 0.95]))
    assert (summary["holdout_accuracy_min"], summary["holdout_accuracy_max"]) == (0.9, 1.0)
    assert summary["seconds_median"] == 12.0
    assert [s["seed"] for s in summary["samples"]] == [0, 1, 2]


def test_comparisons_against_fit_and_the_peer(bench):
    bench_photos, _, _, report, comparison = bench
    found = bench_photos.comparisons(
        summaries(
            bench_photos,
            {
                "imgclf_cnn": [1.0, 0.98],
                "keras_cnn": [0.9, 0.92],
                "peer": [0.97, 0.98],
                "imgclf_mobilenet": [0.96, 0.96],
                "keras_mobilenet": [0.97, 0.99],
            },
            {
                "imgclf_cnn": 60.0,
                "keras_cnn": 90.0,
                "peer": 75.0,
                "imgclf_mobilenet": 50.0,
                "keras_mobilenet": 80.0,
            },
        ),
        seeds=2,
    )
    by_key = {c.key: c for c in found}
    assert sorted(by_key) == sorted(
        f"photos.{figure}.{pair}"
        for figure in ("holdout_accuracy", "seconds")
        for pair in ("cnn_vs_fit", "mobilenet_vs_fit", "cnn_vs_peer", "mobilenet_vs_peer")
    )
    cnn = by_key["photos.holdout_accuracy.cnn_vs_fit"]
    assert (cnn.imgclf, cnn.baseline, cnn.target_met) == (0.99, 0.91, True)
    assert "imgclf 0.980-1.000, baseline 0.900-0.920" in cnn.what
    assert by_key["photos.holdout_accuracy.mobilenet_vs_fit"].target_met is False
    assert by_key["photos.seconds.cnn_vs_fit"].ratio == pytest.approx(1.5)  # 90 s / 60 s
    # Faster than the peer counts only at the peer's accuracy or better.
    assert by_key["photos.seconds.cnn_vs_peer"].target_met is True
    assert by_key["photos.seconds.mobilenet_vs_peer"].imgclf < 75.0
    assert by_key["photos.seconds.mobilenet_vs_peer"].target_met is False

    comparison.print_table(found)  # renders without error
    markdown = report.render_markdown(
        {
            "photos": {
                "measured": "now",
                "machine": {
                    "cpu": "x",
                    "cpu_count": 2,
                    "gpus": 0,
                    "platform": "p",
                    "python": "3",
                    "tensorflow": "t",
                    "keras": "k",
                },
                "comparisons": [{**c.__dict__} for c in found if c.key.endswith("cnn_vs_peer")],
            }
        }
    )
    assert "| small CNN vs peer: seconds to the trained model, median | s | 60.00 |" in markdown


def test_a_contender_that_did_not_run_leaves_only_its_comparisons_out(bench):
    bench_photos = bench[0]
    found = bench_photos.comparisons(
        summaries(
            bench_photos,
            {"imgclf_cnn": [1.0], "keras_cnn": [0.9], "keras_mobilenet": [0.9], "peer": [0.9]},
            {"imgclf_cnn": 1.0, "keras_cnn": 1.0, "keras_mobilenet": 1.0, "peer": 1.0},
        ),
        seeds=1,
    )
    assert {c.key.rsplit(".", 1)[1] for c in found} == {"cnn_vs_fit", "cnn_vs_peer"}


def test_peer_layout_links_train_and_holdout_and_reads_epoch_times(bench, tmp_path):
    photo_peer = bench[1]
    task = tmp_path / "task"
    for split in ("train", "holdout"):
        (task / split / "moon").mkdir(parents=True)
    data = photo_peer.layout(task, tmp_path / "work")
    assert (data / "train").resolve() == (task / "train").resolve()
    assert (data / "val").resolve() == (task / "holdout").resolve()
    assert photo_peer.layout(task, tmp_path / "work") == data  # reused
    csv = tmp_path / "results.csv"
    csv.write_text("epoch, time, train/loss\n1, 5.5, 1.2\n2, 11.25, 0.8\n")
    assert photo_peer.epoch_seconds(csv) == [5.5, 11.25]


@pytest.mark.slow
def test_imgclf_builds_the_locally_pretrained_backbone_from_the_mirror(
    bench, tmp_path, monkeypatch
):
    """The saved no-top .h5, served as Keras' ImageNet file, loads into imgclf's mobilenet_v2."""
    photo_pretrain = bench[2]
    from configs import loader
    from trainer import models

    _, backbone = photo_pretrain.build(classes=3)
    root = tmp_path / "mirror"
    photo_pretrain.save_no_top(backbone, photo_pretrain.weights_path(root))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    size = photo_pretrain.IMAGE_SIZE
    cfg = loader.load(
        None,
        [
            "model.backbone=mobilenet_v2",
            "model.weights=imagenet",
            f"data.image_size=[{size},{size}]",
        ],
    )
    with photo_pretrain.serve(root) as url:
        monkeypatch.setenv("IMGCLF_WEIGHTS_MIRROR", url)
        keras.utils.set_random_seed(1)  # other initial weights than the saved ones
        model = models.build_model(cfg.model, (size, size, 3), 3)
    cached = tmp_path / "keras-home" / "models" / photo_pretrain.weights_name()
    assert cached.is_file()
    loaded = model.get_layer(models.BACKBONE)
    saved = {w.path: np.asarray(w) for w in backbone.weights}
    compared = 0
    for weight in loaded.weights:
        if weight.path in saved:
            np.testing.assert_array_equal(np.asarray(weight), saved[weight.path])
            compared += 1
    assert compared == len(saved)
