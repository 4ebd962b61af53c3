"""Exceptions that core raises; each message says what is wrong and what to do.

Tabs turn :class:`StudioError` into ``gr.Error`` without a traceback. Anything
else reaching a tab is a bug and is logged with its traceback server-side.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class: the message is meant for the user as it stands."""


class InvalidInput(StudioError):
    """The request itself is wrong (empty text, unknown voice, bad name...)."""


class UnknownVoice(InvalidInput):
    """The request names a voice that does not exist."""


class ModelUnavailable(StudioError):
    """Model files are missing and could not be fetched."""


class OutOfMemory(StudioError):
    """The device ran out of memory; the message says what to lower."""


class Cancelled(StudioError):
    """The user stopped the work; whatever was finished is kept."""


class Busy(StudioError):
    """Too many requests are already waiting for the GPU; try again shortly."""
