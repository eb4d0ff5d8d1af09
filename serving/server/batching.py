"""Server-side batching: concurrent requests to one model version share one model call."""

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

logger = logging.getLogger(__name__)

Inputs = dict[str, np.ndarray]
RunBatch = Callable[[str, Inputs], Inputs]


class QueueFull(Exception):
    """More requests are waiting than the queue holds: answer 429 / RESOURCE_EXHAUSTED."""


STOP = object()  # queued by close(): the worker stops when it reaches it


class Task:
    def __init__(self, signature_name: str, inputs: Inputs):
        self.signature_name = signature_name
        self.inputs = inputs
        self.size = len(next(iter(inputs.values())))
        self.future: Future = Future()


class Batcher:
    """Collects requests for `max_batch_size` images or `timeout_s`, whichever comes first, and
    runs them as one call of `run_batch(signature_name, inputs)` on one worker thread.

    Batches never mix signatures. A request larger than `max_batch_size` runs on its own. When a
    batch fails (one undecodable image fails the whole call), each request is re-run alone, so
    only the request that caused it sees the error.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int,
        timeout_s: float,
        max_enqueued_batches: int,
        on_batch: Callable[[int], None] | None = None,
        name: str = "batcher",
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue(max_enqueued_batches * max_batch_size)
        self._held = None  # taken from the queue but belonging to the next batch
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, signature_name: str, inputs: Inputs) -> Future:
        task = Task(signature_name, inputs)
        with self._closing:
            closed = self._closed
            if not closed:
                try:
                    self._queue.put_nowait(task)
                except queue.Full:
                    raise QueueFull(
                        f"the batching queue is full ({self._queue.maxsize} requests waiting); "
                        "retry later or raise serving.batching.max_enqueued_batches"
                    ) from None
        if closed:
            # An unloaded version still finishes the requests that already resolved to it, each
            # on its own thread (outside the lock, so they run side by side).
            task.future.set_running_or_notify_cancel()
            self._run([task])
        return task.future

    def close(self) -> None:
        """Runs what is queued, then stops the worker; later requests run unbatched."""
        with self._closing:
            self._closed = True
            self._queue.put(STOP)
        self._thread.join(timeout=60)

    def _next_batch(self) -> list[Task] | None:
        first, self._held = self._held or self._queue.get(), None
        if first is STOP:
            return None
        batch, size = [first], first.size
        deadline = time.monotonic() + self.timeout_s
        while size < self.max_batch_size:
            try:
                task = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if (
                task is STOP
                or task.signature_name != first.signature_name
                or size + task.size > self.max_batch_size
            ):
                self._held = task  # starts the next batch (or stops the worker after this one)
                break
            batch.append(task)
            size += task.size
        return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            batch = [task for task in batch if task.future.set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list[Task]) -> None:
        signature_name = batch[0].signature_name
        inputs = {
            key: np.concatenate([task.inputs[key] for task in batch]) for key in batch[0].inputs
        }
        try:
            outputs = self.run_batch(signature_name, inputs)
        except Exception as error:  # noqa: BLE001 - every error goes back to its requests
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            for task in batch:
                try:
                    task.future.set_result(self.run_batch(signature_name, task.inputs))
                except Exception as task_error:  # noqa: BLE001
                    task.future.set_exception(task_error)
                if self.on_batch:
                    self.on_batch(task.size)
            return
        if self.on_batch:
            self.on_batch(sum(task.size for task in batch))
        start = 0
        for task in batch:
            end = start + task.size
            task.future.set_result({key: value[start:end] for key, value in outputs.items()})
            start = end
