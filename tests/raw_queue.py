"""Gradio's queue protocol spoken by hand, as a hostile client would: any event, any payload.

``gradio_client`` only calls named endpoints with well-formed values; a browser's page or a
script with httpx can also fire private events (a table's select) with whatever data it likes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx


def event_index(base_url: str, *, elem_id: str, trigger: str, headers: dict[str, str] | None = None) -> tuple[int, int]:
    """``(fn_index, component id)`` of the event ``trigger`` on the component with ``elem_id``."""
    config = httpx.get(base_url + "config", headers=headers, timeout=30).json()
    component = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    for index, dependency in enumerate(config["dependencies"]):
        if [component["id"], trigger] in [list(t) for t in dependency["targets"]]:
            return dependency.get("id", index), component["id"]
    raise LookupError(f"no {trigger} event on #{elem_id}")


def default_inputs(base_url: str, fn_index: int, headers: dict[str, str] | None = None, **values: Any) -> list[Any]:
    """The event's inputs at the values the page starts with, some replaced by label: ``Text="Hi"``."""
    config = httpx.get(base_url + "config", headers=headers, timeout=30).json()
    components = {c["id"]: c.get("props", {}) for c in config["components"]}
    dependency = next(d for i, d in enumerate(config["dependencies"]) if d.get("id", i) == fn_index)
    return [values.get(components[i].get("label"), components[i].get("value")) for i in dependency["inputs"]]


def join(
    base_url: str, fn_index: int, data: list[Any], *, trigger_id: int | None = None,
    event_data: dict[str, Any] | None = None, session_hash: str | None = None, headers: dict[str, str] | None = None,
) -> str:  # fmt: skip
    """Put an event in the queue; returns the session hash to read its messages with."""
    session_hash = session_hash or uuid.uuid4().hex[:12]
    body = {"data": data, "fn_index": fn_index, "trigger_id": trigger_id, "event_data": event_data,
            "session_hash": session_hash}  # fmt: skip
    response = httpx.post(base_url + "gradio_api/queue/join", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return session_hash


def completed(base_url: str, session_hash: str, *, headers: dict[str, str] | None = None, timeout: float = 120) -> dict:
    """Read the session's message stream until its event completes; returns that message."""
    with httpx.stream(
        "GET", base_url + "gradio_api/queue/data", params={"session_hash": session_hash}, headers=headers,
        timeout=timeout,
    ) as stream:  # fmt: skip
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event never completed")


def call(base_url: str, fn_index: int, data: list[Any], **kwargs: Any) -> dict:
    """Join and wait: the ``process_completed`` message (``success``, ``output``)."""
    headers = kwargs.get("headers")
    return completed(base_url, join(base_url, fn_index, data, **kwargs), headers=headers)


def files_in(value: Any) -> list[str]:
    """Every file path a Gradio payload hands to the client (FileData dicts anywhere inside)."""
    if isinstance(value, dict):
        found = [value["path"]] if isinstance(value.get("path"), str) else []
        return found + [p for v in value.values() for p in files_in(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in files_in(v)]
    return []
