"""The recorder's bounded queue: work beyond it is dropped and counted, never waited for."""

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from configs import schema
from monitoring import recorder
from serving.server import metrics

CLASSES = np.array([[b"a", b"b"]] * 2, dtype=object)
SCORES = np.array([[0.9, 0.1], [0.4, 0.6]], np.float32)


def test_a_full_queue_drops_sampled_images_and_counts_them():
    server_metrics = metrics.ServerMetrics()
    cfg = schema.MonitoringConfig(queue_size=1, dir=None, input_sample_rate=1.0)
    # Not started: nothing drains the queue, as when the measuring thread falls behind.
    monitor = recorder.Recorder(cfg, observer=server_metrics)
    images = np.array([b"first", b"second"], dtype=object)
    monitor.record("m", 1, SCORES, CLASSES, images)
    monitor.record("m", 1, SCORES, CLASSES, images)
    counts = monitor.summary("m", None, 0)["stats"]
    assert (counts["predictions"], counts["dropped"], counts["inputs"]) == (4, 2, 0)
    assert counts["classes"] == {"a": 2, "b": 2}
    body, _ = server_metrics.exposition()
    dropped = {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "imgclf_monitoring_dropped_total"
    }
    assert dropped == {"input": 2}


def test_stopping_writes_the_open_window(tmp_path):
    monitor = recorder.Recorder(schema.MonitoringConfig(dir=str(tmp_path), input_sample_rate=1.0))
    monitor.start()
    monitor.record("m", 3, SCORES, CLASSES)
    monitor.stop()
    (written,) = (tmp_path / "m" / "3" / "windows").glob("*.json")
    assert '"predictions": 2' in written.read_text()
    assert monitor.summary("m", 3, 0)["windows"] == 1
