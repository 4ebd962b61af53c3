"""The typed state of a training run, in two files with one writer each.

``run.json`` holds the :class:`Lifecycle` (state, times, processes, settings): only the
parent (the studio's runner and run store) writes it, and every state change goes through
:meth:`Lifecycle.transition`, which refuses moves the life of a run does not allow.
``progress.json`` holds the :class:`Progress` (step, epoch, elapsed time, the trainer's
folder, and the child's own account of how it ended): only the training child writes it.
The parent turns that account into the lifecycle transition once the child has exited.

Folders trained by earlier versions have only ``run.json``, written by the child with both
kinds of fields mixed; they read as a lifecycle plus the progress found in the same file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from core import fs
from core.errors import InvalidInput, StudioError

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.json"


class RunState(StrEnum):
    QUEUED = "queued"  # the folder exists, the child is being started
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the studio stopped before the child started


ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING})
RESUMABLE = frozenset({RunState.CANCELLED, RunState.FAILED, RunState.INTERRUPTED})
_ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.FAILED, RunState.INTERRUPTED}),
    RunState.RUNNING: frozenset({RunState.COMPLETED, RunState.CANCELLED, RunState.FAILED}),
    RunState.COMPLETED: frozenset(),
    **{state: frozenset({RunState.QUEUED}) for state in RESUMABLE},  # a resume queues the run again
}


class IllegalTransition(StudioError):
    """A state change the life of a run does not allow (e.g. completed -> running)."""

    def __init__(self, source: RunState, target: RunState) -> None:
        super().__init__(f"A training run cannot go from {source} to {target}.")
        self.source, self.target = source, target


class Outcome(StrEnum):
    """How the child says its attempt ended."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


# ---- processes -----------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 on (the name in field 2 may hold spaces); None without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22): a recycled pid has another one."""
    found = _stat_fields(pid)
    return int(found[19]) if found and len(found) > 19 else None


def process_alive(pid: int | None, started: int | None = None, *, cmdline: bytes | None = None) -> bool:
    """True when ``pid`` runs, is no zombie, started at ``started`` (when known) and has ``cmdline`` in its command line."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    found = _stat_fields(pid)
    if found is None:
        return True  # no /proc (not Linux): trust kill(0)
    if found[0] == "Z" or (started is not None and len(found) > 19 and int(found[19]) != started):
        return False
    if cmdline is None:
        return True
    try:
        return cmdline in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pid_alive(pid: int | None, started: int | None = None) -> bool:
    """True when ``pid`` is a live training worker (not a zombie, not a recycled pid)."""
    return process_alive(pid, started, cmdline=b"train.worker")


# ---- the parent's record -------------------------------------------------------------------
@dataclass(frozen=True)
class Lifecycle:
    """What the parent knows and decides about a run; the content of ``run.json``."""

    state: RunState
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    owner_pid: int | None = None  # the studio process that queued the run
    owner_started: int | None = None
    pid: int | None = None  # the training child
    pid_started: int | None = None
    error: str | None = None
    resume_from: str | None = None
    resumes: int = 0
    elapsed_before_s: float = 0.0  # training time of the attempts before this one
    params: dict[str, Any] = field(default_factory=dict)
    preflight: dict[str, Any] = field(default_factory=dict)
    save_step: int = 0
    total_steps: int = 0
    devices: list[str] = field(default_factory=list)  # the current attempt's, one per rank
    world_size: int = 1  # training processes (ranks) of the current attempt
    updated: float = 0.0
    legacy: dict[str, Any] = field(default_factory=dict)  # an old run.json's progress fields, kept as found

    @classmethod
    def queued(cls, **values: Any) -> Lifecycle:
        """A new run, owned by this process until its child runs."""
        pid = os.getpid()
        now = time.time()
        return cls(
            RunState.QUEUED, created=now, owner_pid=pid, owner_started=process_start_time(pid), updated=now, **values
        )

    def transition(self, target: RunState, **changes: Any) -> Lifecycle:
        if target not in _ALLOWED[self.state]:
            raise IllegalTransition(self.state, target)
        return replace(self, state=target, updated=time.time(), **changes)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_started)

    def worker_alive(self) -> bool:
        return pid_alive(self.pid, self.pid_started)

    def record(self) -> dict[str, Any]:
        """The lifecycle's own fields."""
        return {name: getattr(self, name) for name in _LIFECYCLE_FIELDS} | {"state": self.state.value}

    def to_dict(self) -> dict[str, Any]:
        return {**self.legacy, **self.record()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lifecycle:
        known = {k: v for k, v in data.items() if k in _LIFECYCLE_FIELDS}
        try:
            state = RunState(known.pop("state", RunState.QUEUED))
        except ValueError as exc:
            raise InvalidInput(f"run.json names an unknown state: {exc}") from exc
        return cls(state, **known, legacy={k: v for k, v in data.items() if k not in _LIFECYCLE_FIELDS})


_LIFECYCLE_FIELDS = tuple(f.name for f in fields(Lifecycle) if f.name != "legacy")


# ---- the child's record --------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """What the child reports about its training; the content of ``progress.json``."""

    step: int = 0
    epoch: int = 0
    elapsed_s: float = 0.0
    trainer_dir: str | None = None
    attempt: int = 0  # the lifecycle's ``resumes`` when the child started: which attempt this is
    outcome: Outcome | None = None
    error: str | None = None
    finished: float | None = None
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome.value if self.outcome else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        known = {k: v for k, v in data.items() if k in _PROGRESS_FIELDS}
        outcome = known.pop("outcome", None)
        return cls(**known, outcome=Outcome(outcome) if outcome else None)

    def outcome_of(self, lifecycle: Lifecycle) -> Outcome | None:
        """The child's account of the lifecycle's current attempt (an earlier attempt's does not count)."""
        return self.outcome if self.attempt == lifecycle.resumes else None


_PROGRESS_FIELDS = frozenset(f.name for f in fields(Progress))


# ---- the files -----------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"The run {path.parent.name} has an unreadable {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"The run {path.parent.name} has an unreadable {path.name}: not an object.")
    return data


def read_lifecycle(folder: Path) -> Lifecycle:
    return Lifecycle.from_dict(_read_json(folder / RUN_FILE))


def read_progress(folder: Path, lifecycle: Lifecycle | None = None) -> Progress:
    """The child's report; for an old run folder, the progress its run.json carries."""
    path = folder / PROGRESS_FILE
    if path.is_file():
        return Progress.from_dict(_read_json(path))
    return Progress.from_dict((lifecycle or read_lifecycle(folder)).legacy)


def write_lifecycle(folder: Path, lifecycle: Lifecycle) -> Lifecycle:
    """The parent's writer: ``run.json`` only."""
    fs.write_json(folder / RUN_FILE, lifecycle.to_dict())
    return lifecycle


def write_progress(folder: Path, progress: Progress) -> Progress:
    """The child's writer: ``progress.json`` only."""
    progress = replace(progress, updated=time.time())
    fs.write_json(folder / PROGRESS_FILE, progress.to_dict())
    return progress


def view(lifecycle: Lifecycle, progress: Progress) -> dict[str, Any]:
    """The plain dict the tabs and scripts read: the lifecycle's fields with the progress's."""
    return lifecycle.record() | {
        "step": progress.step, "epoch": progress.epoch, "elapsed_s": progress.elapsed_s,
        "trainer_dir": progress.trainer_dir,
    }  # fmt: skip
