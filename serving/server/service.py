"""The predict path shared by REST and gRPC: admission, batching or a worker, and a deadline."""

import asyncio
import concurrent.futures
import threading
import time

import numpy as np

from artifacts import models
from core import signatures
from monitoring import recorder
from serving.server import batching, manager

Inputs = dict[str, np.ndarray]  # input or output arrays by name
# Signatures answering scores and classes. Only the bytes one has images to measure: the float
# one takes already resized pixels, whose statistics would not compare with the dataset's.
MONITORED = (signatures.SERVING_DEFAULT, signatures.PREDICT_IMAGES)


class Overloaded(Exception):
    """Too much work in progress: 429 / RESOURCE_EXHAUSTED, so clients back off and retry."""


class DeadlineExceeded(Exception):
    """The request took longer than serving.request_timeout_s: 504 / DEADLINE_EXCEEDED."""


class PredictService:
    """Runs predict requests on loaded versions with bounded concurrency and a deadline.

    A request that times out is answered at once, but its model call cannot be interrupted: it
    keeps its admission slot until it really finishes, so slow calls cannot pile up unbounded.
    """

    def __init__(
        self,
        models_manager: manager.ModelManager,
        max_concurrent: int,
        timeout_s: float,
        monitor: recorder.Recorder | None = None,
        max_pixels: int | None = None,
    ):
        self.manager = models_manager
        self.max_pixels = max_pixels
        self.monitor = monitor
        self.max_concurrent = max_concurrent
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_concurrent, thread_name_prefix="predict"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(
        self, model: models.ServedModel, signature_name: str, inputs: Inputs
    ) -> concurrent.futures.Future:
        """Starts a request without waiting for it; raises InvalidInputError or Overloaded."""
        # Checked here, once: a bad request never takes a slot, and the model runs what passed.
        checked = model.check_inputs(signature_name, inputs, self.max_pixels)
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                f"the server is at its limit of {self.max_concurrent} requests in progress; "
                "retry shortly (serving.max_concurrent_requests)"
            )
        metrics = self.manager.metrics
        metrics.in_flight.inc()

        def release(_: concurrent.futures.Future | None) -> None:
            metrics.in_flight.dec()
            self._slots.release()

        try:
            batcher = self.manager.batcher(model)
            if batcher is not None:
                future = batcher.submit(signature_name, checked)
            else:
                future = self._executor.submit(model.run_checked, signature_name, checked)
        except batching.QueueFull as error:
            release(None)
            raise Overloaded(str(error)) from None
        except BaseException:
            release(None)
            raise
        future.add_done_callback(release)
        if self.monitor is not None and signature_name in MONITORED:
            future.add_done_callback(lambda done: self.record(model, checked, done))
        return future

    def record(
        self, model: models.ServedModel, inputs: Inputs, done: concurrent.futures.Future
    ) -> None:
        """Counts an answered request's predictions and queues its images for measuring."""
        if done.cancelled() or done.exception() is not None:
            return
        outputs = done.result()
        self.monitor.record(
            model.name,
            model.version,
            outputs[signatures.SCORES],
            outputs[signatures.CLASSES],
            inputs.get(signatures.IMAGE_BYTES),
        )

    def deadline_exceeded(self, model: models.ServedModel) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{model.name} version {model.version} did not answer within "
            f"{self.timeout_s:g}s (serving.request_timeout_s); send fewer images per request"
        )

    def predict(self, model: models.ServedModel, signature_name: str, inputs: Inputs) -> Inputs:
        """Blocking; raises InvalidInputError, Overloaded or DeadlineExceeded."""
        future = self.submit(model, signature_name, inputs)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise self.deadline_exceeded(model) from None

    def deadline(self) -> float:
        """A request's deadline (on time.monotonic()) if it starts now, for its calls to share."""
        return time.monotonic() + self.timeout_s

    async def predict_async(
        self,
        model: models.ServedModel,
        signature_name: str,
        inputs: Inputs,
        deadline: float | None = None,
    ) -> Inputs:
        """`predict` for an event loop: awaits the worker instead of blocking a thread on it.
        A request making several calls passes its `deadline()` to each; a lone call has the
        whole timeout."""
        timeout_s = self.timeout_s if deadline is None else deadline - time.monotonic()
        if timeout_s <= 0:
            raise self.deadline_exceeded(model)
        future = self.submit(model, signature_name, inputs)
        try:
            # shield: a timed-out model call cannot be interrupted; it finishes and frees its slot.
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout_s)
        except TimeoutError:
            raise self.deadline_exceeded(model) from None
