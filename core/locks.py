"""Locks that hold across studio processes (replicas) sharing one data folder.

Several studio processes, one per GPU or per machine, may write the same voice library,
projects, runs and caches (on a local disk or NFS). A rename makes one write atomic, but a
check followed by a write ("is this name free? then take it") needs a lock that every
process sees: :class:`FileLock` takes ``fcntl.flock`` on a lock file beside the data, after a
thread lock, so threads of one process queue in the process and processes queue on the file.
It is re-entrant per thread, waits at most ``timeout`` seconds and then raises :class:`InUse`
naming what was busy. Linux NFS clients map ``flock`` onto NFS byte-range locks, so the
same lock holds across machines on a shared NFS folder.

:func:`try_hold` takes a lock without waiting, for state that lives as long as some work
does (the one training of all replicas, a checkpoint loaded in an engine); the returned
:class:`Hold` may be released from any thread and its descriptor handed to a child process,
which then keeps the lock while it lives. ``shared=True`` takes a shared lock: many holders,
and an exclusive :func:`try_hold` fails while any of them holds it. That marks a file in use:
an engine holds its checkpoint's :func:`in_use_marker` shared, and a delete takes it with :func:`claim`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from core.errors import StudioError

DEFAULT_TIMEOUT_S = 60.0
_POLL_S = (0.005, 0.1)  # first and longest pause between attempts


class InUse(StudioError):
    """Another studio process (or thread) holds the lock for longer than the caller may wait."""


class Hold:
    """An open lock file with an ``flock`` on it; :meth:`release` unlocks and closes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def close_only(self) -> None:
        """Close this process's descriptor without unlocking: a child that inherited it keeps the lock."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_once(path: Path, operation: int) -> int | None:
    """Open ``path`` (creating it) and flock it without blocking; the fd, or ``None`` if it is held.

    A lock file may be unlinked by its last holder (see :func:`discard`); a lock taken on a file
    that no longer has that name is dropped and taken again on the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # unlinked (or replaced) while we waited: lock the file that has the name now


def try_hold(path: Path, *, shared: bool = False) -> Hold | None:
    """The lock on ``path`` if it is free now (no waiting), else ``None``."""
    fd = _lock_once(path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    return None if fd is None else Hold(path, fd)


def hold(path: Path, *, what: str, timeout: float = DEFAULT_TIMEOUT_S, shared: bool = False) -> Hold:
    """The lock on ``path``, waiting up to ``timeout`` seconds; :class:`InUse` naming ``what`` after that."""
    deadline = time.monotonic() + timeout
    pause = _POLL_S[0]
    while True:
        found = try_hold(path, shared=shared)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise InUse(
                f"The {what} is busy in another studio process (waited {timeout:.0f} s for {path.name}). "
                "Try again in a moment."
            )
        time.sleep(pause)
        pause = min(pause * 2, _POLL_S[1])


def discard(held: Hold) -> None:
    """Unlink the lock file while still holding it, then release: for one-off lock files (staging)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(held.path)
    held.release()


def in_use_marker(path: Path) -> Path:
    """The hidden lock file beside ``path`` that every process using it holds shared (see :func:`claim`)."""
    return path.with_name(f".{path.name}.in-use")


def claim(paths: list[Path], *, refusal: str) -> list[Hold]:
    """Exclusive holds on the in-use markers of ``paths`` (to delete them), or :class:`InUse` with
    ``refusal`` formatted with ``{name}`` when any is in use in some process."""
    held: list[Hold] = []
    for path in paths:
        found = try_hold(in_use_marker(path))
        if found is None:
            for taken in held:
                taken.release()
            raise InUse(refusal.format(name=path.name))
        held.append(found)
    return held


class FileLock:
    """A lock on ``path`` shared by every thread and process; re-entrant per thread.

    Every :class:`FileLock` for one path in a process shares one thread lock and one file lock,
    so two objects for the same file never deadlock the process against itself.
    """

    _registry: ClassVar[dict[Path, _Shared]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, *, what: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(os.path.abspath(path))
        self.what = what
        self.timeout = timeout
        with FileLock._registry_lock:
            self._shared = FileLock._registry.setdefault(self.path, _Shared())

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock (again, from the thread that holds it); :class:`InUse` after ``timeout`` s."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        shared = self._shared
        if not shared.thread_lock.acquire(timeout=max(wait, 0.0)):
            raise InUse(f"The {self.what} is busy (waited {wait:.0f} s); try again in a moment.")
        try:
            if shared.depth == 0:
                shared.hold = hold(self.path, what=self.what, timeout=max(deadline - time.monotonic(), 0.0))
            shared.depth += 1
        except BaseException:
            shared.thread_lock.release()
            raise

    def release(self) -> None:
        shared = self._shared
        shared.depth -= 1
        if shared.depth == 0 and shared.hold is not None:
            held, shared.hold = shared.hold, None
            held.release()
        shared.thread_lock.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextlib.contextmanager
    def try_hold(self) -> Iterator[bool]:
        """Hold the lock in the block if it is free now; yields whether it was taken."""
        try:
            self.acquire(timeout=0)
        except InUse:
            yield False
            return
        try:
            yield True
        finally:
            self.release()


class _Shared:
    """One process's state of one lock file: the thread lock, how deep it is held, the file lock."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.hold: Hold | None = None
