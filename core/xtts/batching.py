"""Dynamic batching in front of the device slot: chunks that arrive close together run as one batch.

A chunk that finds the batcher idle (nothing waiting, nothing running) starts at once, so a
lone request's first audio comes as soon as it did without batching. A chunk that arrives
while others wait or run joins the queue and waits at most the window (counted from the
oldest waiting chunk) for more to gather; a batch never holds more rows than the device
owner's memory estimate allows. One worker thread takes each batch into the device slot and
hands every caller its own row's result as soon as it is made (or the batch's error). A caller
that already holds the slot (a render inside a borrowed checkpoint) runs its chunk inline, alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.device import DeviceScheduler
from core.xtts.batch_decode import Deliver, Row, RowResult

log = logging.getLogger(__name__)

RunRows = Callable[[Sequence[Row], Deliver], list[RowResult]]


@dataclass
class _Job:
    row: Row
    arrived: float
    may_wait: bool  # others were waiting or running when it arrived
    done: threading.Event = field(default_factory=threading.Event)
    result: RowResult | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """What the batcher ran: batches, rows in them, the largest batch, and how many of each size."""

    batches: int = 0
    rows: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int) -> None:
        self.batches += 1
        self.rows += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


class Batcher:
    """Gathers rows for ``run`` (called inside the device slot for ``job``) and routes the results back.

    ``window_s`` 0 turns batching off: every row runs alone in the caller's thread, as it would
    without a batcher. ``max_rows`` is asked for the bound each time a batch is formed.
    """

    def __init__(
        self,
        scheduler: DeviceScheduler,
        run: RunRows,
        *,
        job: str,
        window_s: float,
        max_rows: Callable[[], int],
    ) -> None:
        self.scheduler = scheduler
        self.window_s = window_s
        self.stats = BatchStats()
        self._run = run
        self._job = job
        self._max_rows = max_rows
        self._pending: list[_Job] = []
        self._running = 0
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def load(self) -> tuple[int, int]:
        """Rows waiting for a batch, and rows in the batch running now."""
        with self._cond:
            return len(self._pending), self._running

    def submit(self, row: Row) -> RowResult:
        """Run ``row`` (alone or in a batch) and return its result; the batch's error is raised here."""
        if not self.enabled or self.scheduler.holds_slot():
            with self.scheduler.slot(self._job):
                self.stats.record(1)
                return self._run([row], lambda _index, _result: None)[0]
        with self._cond:
            job = _Job(row, time.monotonic(), may_wait=bool(self._pending) or self._running > 0)
            self._pending.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="xtts-batcher", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _next_batch(self) -> list[_Job]:
        """Wait for work, then for the window when the oldest row may wait; take up to the bound."""
        with self._cond:
            while not self._pending:
                self._cond.wait()
            limit = max(1, self._max_rows())
            oldest = self._pending[0]
            if oldest.may_wait:
                deadline = oldest.arrived + self.window_s
                while len(self._pending) < limit and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
            batch, self._pending = self._pending[:limit], self._pending[limit:]
            self._running = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()

            def deliver(index: int, result: RowResult, batch: list[_Job] = batch) -> None:
                batch[index].result = result
                batch[index].done.set()  # its caller goes on while the rest of the batch is vocoded

            try:
                with self.scheduler.slot(self._job):
                    self.stats.record(len(batch))
                    self._run([job.row for job in batch], deliver)
            except BaseException as exc:  # every row of a failed batch not yet handed back hears why
                log.debug("batch of %d failed: %s", len(batch), exc)
                for job in batch:
                    if not job.done.is_set():
                        job.error = exc
            finally:
                with self._cond:
                    self._running = 0
                for job in batch:
                    job.done.set()
