"""Records served predictions and sampled input statistics per model version, off the request path.

The request path only counts top-1 classes and confidences (microseconds) and puts a request's
sampled images on a bounded queue. One background thread measures those images, closes windows and
writes them, and writes the request log. A full queue drops work and counts it, so a slow disk
or a burst of large images never slows an answer.
"""

import collections
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from typing import Protocol

import numpy as np

from configs import schema
from core import image_stats
from monitoring import request_log, stats, storage

logger = logging.getLogger(__name__)

WINDOWS = "windows"  # <dir>/<model>/<version>/windows/<start>-<run id>.json
POLL_SECONDS = 0.5  # how late a window may close when no work arrives
FLUSH_LINES = 1000  # request log lines buffered before they are written early
STOP = object()

Key = tuple[str, int]  # (model, version)


class Observer(Protocol):
    """Where live counts go as well (the server's Prometheus metrics)."""

    def observe_predictions(
        self, model: str, version: int, labels: list[str], confidences: list[float], rate: float
    ) -> None: ...

    def observe_input(self, model: str, version: int, features: dict[str, float]) -> None: ...

    def count_dropped(self, model: str, version: int, kind: str, count: int) -> None: ...


def windows_dir(root: str, model: str, version: int) -> str:
    return os.path.join(root, model, str(version), WINDOWS)


class Recorder:
    """Windows of counts per model version; `start()` runs the background thread."""

    def __init__(self, cfg: schema.MonitoringConfig, observer: Observer | None = None):
        self.cfg = cfg
        self.observer = observer
        self.run_id = uuid.uuid4().hex[:8]
        self._queue: queue.Queue = queue.Queue(cfg.queue_size)
        self._lock = threading.Lock()
        self._current: dict[Key, stats.Window] = {}
        self._closed: dict[Key, collections.deque] = {}
        self._log = (
            request_log.RequestLog(cfg.request_log, self.run_id)
            if cfg.request_log.enabled
            else None
        )
        self._random = random.Random()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="monitoring", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finishes queued work, then writes every open window and the log."""
        if self._thread is not None:
            self._queue.put(STOP)
            self._thread.join(timeout=30)
            self._thread = None
        self._rotate(float("inf"))
        if self._log is not None:
            self._log.flush(time.time())

    # --- the request path ---

    def record(
        self,
        model: str,
        version: int,
        scores: np.ndarray,
        classes: np.ndarray,
        images: np.ndarray | None = None,
    ) -> None:
        """Counts one answered request: scores and classes [N, C]; its encoded images if any."""
        now = time.time()
        top = np.argmax(scores, axis=1)
        confidences = scores[np.arange(len(top)), top].astype(float).tolist()
        labels = [classes[row, column].decode("utf-8", "replace") for row, column in enumerate(top)]
        key = (model, version)
        with self._lock:
            window = self._window(key, now)
            window.add_predictions(labels, confidences)
            rate = window.low_confidence_rate
        if self.observer is not None:
            self.observer.observe_predictions(model, version, labels, confidences, rate)
        if images is not None and self.cfg.input_sample_rate > 0:
            rate = self.cfg.input_sample_rate
            sampled = (
                list(images) if rate >= 1 else [i for i in images if self._random.random() < rate]
            )
            if sampled and not self._put(("input", key, sampled)):
                with self._lock:
                    self._window(key, now).dropped += len(sampled)
                self._count_dropped(key, "input", len(sampled))
        log = self._log
        if log is not None and self._random.random() < log.cfg.sample_rate:
            logged = list(images) if images is not None and log.cfg.log_images else None
            if not self._put(("log", key, now, scores, classes, logged)):
                self._count_dropped(key, "log", len(scores))

    def _put(self, item: tuple) -> bool:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def _count_dropped(self, key: Key, kind: str, count: int) -> None:
        if self.observer is not None:
            self.observer.count_dropped(*key, kind, count)

    def _window(self, key: Key, now: float) -> stats.Window:
        """The open window of `key` (under the lock); the worker closes it once it is over."""
        window = self._current.get(key)
        if window is None:
            start = stats.window_start(now, self.cfg.window_seconds)
            window = stats.Window(
                start, start + self.cfg.window_seconds, self.cfg.low_confidence_threshold
            )
            self._current[key] = window
        return window

    # --- the background thread ---

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                item = None
            try:
                self._rotate(time.time())
                if item is STOP:
                    return
                if item is not None:
                    self._handle(item)
            except Exception:  # noqa: BLE001 - monitoring must never stop; serving goes on
                logger.exception("monitoring: could not record or write statistics")

    def _handle(self, item: tuple) -> None:
        if item[0] == "input":
            _, key, images = item
            for image in images:
                try:
                    features = stats.image_features(image)
                except ValueError:
                    continue  # answered anyway by the model; nothing to measure
                with self._lock:
                    self._window(key, time.time()).add_input(features)
                if self.observer is not None:
                    self.observer.observe_input(*key, features)
        else:
            _, key, when, scores, classes, images = item
            self._log.add(*key, when, scores, classes, images)
            if self._log.pending() >= FLUSH_LINES:
                self._log.flush(time.time())

    def _rotate(self, now: float) -> None:
        """Closes the windows that are over: kept in memory for `summary`, and written."""
        with self._lock:
            over = [key for key, window in self._current.items() if now >= window.end]
            closed = [(key, self._current.pop(key)) for key in over]
            for key, window in closed:
                history = self._closed.setdefault(
                    key, collections.deque(maxlen=self.cfg.memory_windows)
                )
                history.append(window)
        for key, window in closed:
            self._write(key, window)
        if closed and self._log is not None:
            self._log.flush(time.time())

    def _write(self, key: Key, window: stats.Window) -> None:
        if self.cfg.dir is None:
            return
        path = os.path.join(
            windows_dir(self.cfg.dir, *key), f"{request_log.stamp(window.start)}-{self.run_id}.json"
        )
        # A full disk, an unreachable bucket or missing credentials (botocore's errors are not
        # OSErrors) cost this window's file, never serving or the other windows.
        try:
            storage.write_file(path, (json.dumps(window.to_json()) + "\n").encode())
        except Exception as error:  # noqa: BLE001
            logger.error("monitoring: could not write %s: %s", path, error)

    # --- reading ---

    def summary(self, model: str, version: int | None, since: float) -> dict | None:
        """Merged counts of `model` (one version or all) over windows ending after `since`;
        None when nothing was recorded for it."""
        with self._lock:
            keys = {
                key
                for key in (*self._current, *self._closed)
                if key[0] == model and version in (None, key[1])
            }
            windows = [
                window
                for key in keys
                for window in (*self._closed.get(key, ()), self._current.get(key))
                if window is not None and window.end > since
            ]
        if not keys:
            return None
        merged = stats.merge_all(windows)
        return {
            "model": model,
            "versions": sorted(key[1] for key in keys),
            "since": since,
            "window_seconds": self.cfg.window_seconds,
            "windows": len(windows),
            "bins": image_stats.bins(),
            "stats": merged.to_json() if merged is not None else None,
        }
