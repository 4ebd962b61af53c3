"""Prometheus metrics of one studio process (its own registry, so tests can make several)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.device import AdmissionGate
from core.errors import Busy, StudioError

__all__ = ["CONTENT_TYPE_LATEST", "RequestTracker", "StudioMetrics", "Ticket"]


class StudioMetrics:
    def __init__(self, *, queue_depth: Callable[[], int], gpu_memory: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xtts_studio_requests",
            "Synthesis requests by route, profile and outcome.",
            ["route", "profile", "status"],
            registry=self.registry,
        )
        self.synthesis_seconds = Histogram(
            "xtts_studio_synthesis_seconds",
            "Wall time of synthesis requests.",
            ["route", "profile"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120),
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "xtts_studio_audio_seconds", "Seconds of audio produced.", ["route"], registry=self.registry
        )
        depth = Gauge("xtts_studio_queue_depth", "Requests running or waiting for the GPU.", registry=self.registry)
        depth.set_function(queue_depth)
        memory = Gauge(
            "xtts_studio_gpu_memory_bytes", "GPU memory (free, total, allocated by this process).", ["kind"],
            registry=self.registry,
        )  # fmt: skip
        for kind in ("free", "total", "allocated"):
            memory.labels(kind).set_function(lambda kind=kind: gpu_memory().get(kind, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Ticket:
    """One admitted request: finish it exactly once with its outcome."""

    def __init__(self, tracker: RequestTracker, route: str, profile: str) -> None:
        self._tracker, self.route, self.profile = tracker, route, profile
        self._started = time.perf_counter()
        self._done = False
        self._done_lock = threading.Lock()
        self.audio_seconds = 0.0

    def progressed(self) -> None:
        self._tracker.gate.progressed()

    def finish(self, status: str) -> None:
        """Give the admission slot back and count the outcome; later calls do nothing."""
        with self._done_lock:
            if self._done:
                return
            self._done = True
        metrics = self._tracker.metrics
        self._tracker.gate.leave()
        metrics.requests.labels(self.route, self.profile, status).inc()
        metrics.synthesis_seconds.labels(self.route, self.profile).observe(time.perf_counter() - self._started)
        metrics.audio_seconds.labels(self.route).inc(self.audio_seconds)


class RequestTracker:
    """Admission through the shared gate plus metrics, for UI events and API requests alike."""

    def __init__(self, gate: AdmissionGate, metrics: StudioMetrics) -> None:
        self.gate, self.metrics = gate, metrics

    def start(self, route: str, profile: str) -> Ticket:
        """Admit a request or raise :class:`Busy` (counted as such)."""
        try:
            self.gate.enter()
        except Busy:
            self.metrics.requests.labels(route, profile, "busy").inc()
            raise
        return Ticket(self, route, profile)

    def refuse(self, route: str, profile: str, status: str) -> None:
        """Count a request turned away before admission (bad input)."""
        self.metrics.requests.labels(route, profile, status).inc()

    @contextlib.contextmanager
    def track(self, route: str, profile: str) -> Iterator[Ticket]:
        """Admit, run the block, and finish with ok / client_error / error by how it ended."""
        ticket = self.start(route, profile)
        try:
            yield ticket
        except StudioError:
            ticket.finish("client_error")
            raise
        except BaseException:
            ticket.finish("error")
            raise
        ticket.finish("ok")
