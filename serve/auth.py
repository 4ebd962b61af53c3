"""Who may use the studio: UI logins and API keys, checked in constant time, failures throttled.

The UI signs in on the studio's own login page (a user and password from --auth or
--auth-file; an API key as the password only with --api-key-login) and gets a random
session token in a cookie; API clients send ``Authorization: Bearer KEY``. Both work for
the Gradio API and the OpenAI-compatible routes alike. An exposed studio started without
any of these gets a generated access token, which works as the password of the user
``studio``, as a Bearer key and as ``/login?token=...``. Secrets are never logged.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

SESSION_COOKIE = "xtts_studio_session"
SESSION_TTL_S = 14 * 24 * 3600
TOKEN_USER = "studio"
MAX_FAILURES = 10
FAILURE_WINDOW_S = 300.0
MAX_TRACKED_CLIENTS = 10_000


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass
class Authenticator:
    """Checks credentials and keeps the login sessions of this process."""

    users: dict[str, str] = field(default_factory=dict)
    api_keys: tuple[str, ...] = ()
    api_key_login: bool = False
    access_token: str | None = field(default=None, repr=False)
    _sessions: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.api_keys or self.access_token)

    @property
    def _keys(self) -> tuple[str, ...]:
        return (*self.api_keys, *([self.access_token] if self.access_token else []))

    def key_is_valid(self, key: str | None) -> bool:
        # compare against every key so the time taken does not reveal which one matched
        return bool(key) and sum(_same(key, known) for known in self._keys) > 0  # type: ignore[arg-type]

    def token_is_valid(self, token: str | None) -> bool:
        return bool(token and self.access_token) and _same(token, self.access_token)  # type: ignore[arg-type]

    def password_is_valid(self, user: str, password: str) -> bool:
        """A UI login: a known user's password, the access token, or (if allowed) an API key."""
        known = self.users.get(user)
        return (
            (known is not None and _same(password, known))
            or self.token_is_valid(password)
            or (self.api_key_login and self.key_is_valid(password))
        )

    def bearer_is_valid(self, header: str | None) -> bool:
        scheme, _, key = (header or "").partition(" ")
        return scheme.lower() == "bearer" and self.key_is_valid(key.strip())

    def login(self, user: str, password: str) -> str | None:
        """A new session token for valid credentials, else ``None``."""
        if not self.password_is_valid(user, password):
            return None
        return self.open_session(user)

    def open_session(self, user: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = (user, time.time() + SESSION_TTL_S)
        return token

    def session_user(self, token: str | None) -> str | None:
        if not token:
            return None
        with self._lock:
            found = self._sessions.get(token)
            if found is None:
                return None
            user, expires = found
            if expires < time.time():
                del self._sessions[token]
                return None
            return user

    def logout(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


class FailureThrottle:
    """Refuses a client for a while after too many failed sign-ins or wrong keys.

    Counted per client address: ``MAX_FAILURES`` failures within ``FAILURE_WINDOW_S`` lock
    that address out of further attempts until the oldest failure ages out of the window.
    """

    def __init__(self, *, limit: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S) -> None:
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(client, []) if now - t < self.window_s]
        if kept:
            self._failures[client] = kept
        else:
            self._failures.pop(client, None)
        return kept

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: it may try now)."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent(client, now)
            if len(recent) < self.limit:
                return 0
            return max(int(recent[-self.limit] + self.window_s - now) + 1, 1)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._failures[client] = [*self._recent(client, now), now]
            if len(self._failures) > MAX_TRACKED_CLIENTS:  # many addresses: forget the ones that aged out
                for stale in [c for c, times in self._failures.items() if now - times[-1] >= self.window_s]:
                    del self._failures[stale]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
