"""One bounded queue in front of the GPU, shared by the UI and the HTTP API.

The engine's lock serialises GPU work; this gate only bounds how many requests may be
running or waiting for it, so a burst gets a quick "busy" instead of piling up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from core.errors import Busy


class AdmissionGate:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._depth = 0
        self._last_progress = time.monotonic()
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        """Requests admitted and not finished (running plus waiting)."""
        return self._depth

    def enter(self) -> None:
        with self._lock:
            if self._depth >= self.capacity:
                raise Busy(
                    f"The studio is busy: {self._depth} requests are already queued for the GPU. Try again shortly."
                )
            self._depth += 1
            self._last_progress = time.monotonic()

    def leave(self) -> None:
        with self._lock:
            self._depth = max(self._depth - 1, 0)
            self._last_progress = time.monotonic()

    def progressed(self) -> None:
        """Admitted work reports that it is moving (a chunk made, a step done)."""
        self._last_progress = time.monotonic()

    def stalled_s(self) -> float:
        """Seconds since admitted work last moved; 0 when nothing is admitted."""
        return time.monotonic() - self._last_progress if self._depth else 0.0

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()


def queue_problems(gate: AdmissionGate, *, stall_s: float) -> list[str]:
    """Why the queue is not healthy: full (new work is refused), or admitted work stopped moving."""
    problems = []
    if gate.depth >= gate.capacity:
        problems.append(f"the queue is full ({gate.depth} of {gate.capacity}); new requests are refused")
    if gate.stalled_s() > stall_s:
        problems.append(f"no queued request made progress for {gate.stalled_s():.0f} s")
    return problems
