"""One bounded queue in front of the GPU, shared by the UI and the HTTP API.

The engine's lock serialises GPU work; this gate only bounds how many requests may be
running or waiting for it, so a burst gets a quick "busy" instead of piling up.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from core.errors import Busy


class AdmissionGate:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._depth = 0
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

    def leave(self) -> None:
        with self._lock:
            self._depth = max(self._depth - 1, 0)

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()
