"""Who may use the studio: UI logins and API keys, checked in constant time.

The UI signs in on the studio's own login page (user and password from --auth, or any
user name with an API key as the password) and gets a random session token in a
cookie; API clients send ``Authorization: Bearer KEY``. Both work for the Gradio API
and the OpenAI-compatible routes alike. Secrets are never logged.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

SESSION_COOKIE = "xtts_studio_session"
SESSION_TTL_S = 14 * 24 * 3600


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass
class Authenticator:
    """Checks credentials and keeps the login sessions of this process."""

    users: dict[str, str] = field(default_factory=dict)
    api_keys: tuple[str, ...] = ()
    _sessions: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.api_keys)

    def key_is_valid(self, key: str | None) -> bool:
        # compare against every key so the time taken does not reveal which one matched
        return bool(key) and sum(_same(key, known) for known in self.api_keys) > 0  # type: ignore[arg-type]

    def bearer_is_valid(self, header: str | None) -> bool:
        scheme, _, key = (header or "").partition(" ")
        return scheme.lower() == "bearer" and self.key_is_valid(key.strip())

    def login(self, user: str, password: str) -> str | None:
        """A new session token for valid credentials, else ``None``."""
        known = self.users.get(user)
        ok = (known is not None and _same(password, known)) or self.key_is_valid(password)
        if not ok:
            return None
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
