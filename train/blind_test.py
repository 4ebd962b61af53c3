"""Blind A/B listening: two models speak the same sentence, the listener votes before knowing which is which.

A trial's renders and its hidden order live in ``<root>/trials/<id>/``; a vote is appended to
the votes file of the run the compared checkpoints belong to (``outputs/runs/<run>/votes.json``,
or ``<root>/votes.json`` when neither belongs to a run), so votes survive restarts and go
with their run.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import fs
from core.errors import InvalidInput
from train.checkpoints import CheckpointCatalog, Entry

CHOICES = ("A", "B", "tie")
KEEP_TRIALS = 50
_TRIAL_ID = re.compile(r"^[0-9a-f]{16}$")
Render = Callable[[str, Path], Path]  # (checkpoint id, output wav) -> the wav


class BlindTests:
    def __init__(self, root: Path, catalog: CheckpointCatalog) -> None:
        self.root = root
        self.catalog = catalog
        fs.recover(root / "trials")  # a trial whose renders a crash cut short is removed

    def _trial_dir(self, trial: str) -> Path:
        if not _TRIAL_ID.match(trial or ""):
            raise InvalidInput("That blind test is unknown; render a new pair.")
        folder = self.root / "trials" / trial
        if not (folder / "trial.json").is_file():
            raise InvalidInput("That blind test is gone (the studio keeps the last 50); render a new pair.")
        return folder

    def create(self, first: str, second: str, sentence: str, render: Render) -> dict[str, Any]:
        """Render both models into a new trial, in random order; returns the trial id and the A/B files."""
        a_entry, b_entry = self.catalog.get(first), self.catalog.get(second)
        if a_entry.id == b_entry.id:
            raise InvalidInput("Pick two different models to compare.")
        trial = secrets.token_hex(8)
        final = self.root / "trials" / trial
        with fs.staged_folder(final) as staging:
            order = [a_entry, b_entry]
            random.SystemRandom().shuffle(order)
            files = {
                slot: render(entry.id, staging.path / f"{slot}.wav") for slot, entry in zip("AB", order, strict=True)
            }
            fs.write_json(staging.path / "trial.json", {
                "sentence": sentence, "created": time.time(),
                "models": {slot: {"checkpoint": e.id, "label": e.label, "run": _run_of(e)}
                           for slot, e in zip("AB", order, strict=True)},
            })  # fmt: skip
        self._forget_old()
        return {"trial": trial, "A": str(final / files["A"].name), "B": str(final / files["B"].name)}

    def vote(self, trial: str, choice: str) -> dict[str, Any]:
        """Record the vote and reveal which model was A and which was B."""
        if choice not in CHOICES:
            raise InvalidInput(f"Vote A, B or tie (not '{choice}').")
        folder = self._trial_dir(trial)
        record = json.loads((folder / "trial.json").read_text(encoding="utf-8"))
        if record.get("voted"):
            raise InvalidInput("This pair already has a vote; render a new pair to vote again.")
        models = record["models"]
        winner = None if choice == "tie" else models[choice]["checkpoint"]
        vote = {"time": time.time(), "trial": trial, "sentence": record["sentence"], "choice": choice,
                "winner": winner, "a": models["A"], "b": models["B"]}  # fmt: skip
        target = self._votes_file(models["A"].get("run") or models["B"].get("run"))
        votes = _read_votes(target)
        votes.append(vote)
        fs.write_json(target, votes)
        record["voted"] = choice
        fs.write_json(folder / "trial.json", record)
        return {"choice": choice, "A": models["A"]["label"], "B": models["B"]["label"],
                "winner": None if winner is None else models[choice]["label"]}  # fmt: skip

    def _votes_file(self, run: str | None) -> Path:
        if run:
            return self.catalog.runs.folder(run) / "votes.json"
        return self.root / "votes.json"

    def votes(self) -> list[dict[str, Any]]:
        files = [self.root / "votes.json"]
        if self.catalog.runs.root.is_dir():
            files += sorted(self.catalog.runs.root.glob("*/votes.json"))
        return [v for f in files for v in _read_votes(f)]

    def tally(self) -> list[dict[str, Any]]:
        """Per model: comparisons, wins, losses, ties and win rate, most wins first."""
        table: dict[str, dict[str, Any]] = {}
        for vote in self.votes():
            for side in ("a", "b"):
                model = vote[side]
                row = table.setdefault(
                    model["checkpoint"], {"model": model["label"], "votes": 0, "wins": 0, "losses": 0, "ties": 0}
                )
                row["votes"] += 1
                if vote["winner"] is None:
                    row["ties"] += 1
                elif vote["winner"] == model["checkpoint"]:
                    row["wins"] += 1
                else:
                    row["losses"] += 1
        for row in table.values():
            row["win_rate"] = round(row["wins"] / row["votes"], 3) if row["votes"] else 0.0
        return sorted(table.values(), key=lambda r: (-r["wins"], r["losses"], r["model"]))

    def _forget_old(self) -> None:
        trials = sorted((p for p in (self.root / "trials").iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: p.stat().st_mtime)  # fmt: skip
        for old in trials[:-KEEP_TRIALS]:
            fs.remove_folder(old)


def _run_of(entry: Entry) -> str | None:
    return entry.source if entry.kind == "run" else None


def _read_votes(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []
