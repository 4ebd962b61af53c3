"""Which hosts a download may reach: public addresses only, unless the operator allows more.

A link is checked twice. :meth:`NetPolicy.check_url` resolves its host before anything is
fetched, for a quick and clear refusal. :func:`guarded` then checks every connection made
while the download runs, at the moment it is made and against the address actually
connected to, so a redirect to an internal address, or a DNS answer that changes between
the first check and the connection (rebinding), is refused too.

The connect-time check is a Python audit hook on ``socket.connect``. Every Python socket
passes it, whichever HTTP library yt-dlp picks: its preferred ``requests`` handler connects
through urllib3's own ``create_connection``, its ``urllib`` and websocket handlers through
yt-dlp's helper, so hooking one of those would miss the others, and no library is patched.
The hook acts only while :func:`guarded` has put a guard in the current context (a context
variable), so connections made elsewhere in the process (other threads, other requests)
are left alone. During a guarded download the hook also refuses to start a program that
is handed a network address (yt-dlp passes some streams to ffmpeg), because that program's
own connections could not be checked.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import os
import re
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from core.errors import InvalidInput

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_FLAG = "--allow-private-urls"
SCHEMES = ("http", "https")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CLASSES = (
    ("unspecified", "is_unspecified"),
    ("loopback", "is_loopback"),
    ("link-local", "is_link_local"),
    ("multicast", "is_multicast"),
    ("reserved", "is_reserved"),
    ("private", "is_private"),
    ("site-local", "is_site_local"),
)
_NETWORK_ARGUMENT = re.compile(r"(?<![\w+.-])(?!file:)[a-z][\w+.-]*://", re.IGNORECASE)
_ADVICE = (
    "Links to loopback, link-local, private, multicast, reserved and other non-public addresses are "
    f"refused unless the studio is started with {ALLOW_FLAG}."
)


class RefusedConnection(PermissionError):
    """A connection the policy refused.

    An ``OSError``, so that the network libraries between the socket and yt-dlp treat it
    as a failed connection; the :class:`Guard` keeps its message for the user.
    """


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64 or 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_class(address: IPAddress) -> str | None:
    """What kind of non-public address this is ("loopback", "private", ...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        address = inner
    for name, attribute in _CLASSES:
        if getattr(address, attribute, False):
            return name
    return None if address.is_global else "special-purpose"


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to; none when it does not resolve (nothing can connect then)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        log.info("%s does not resolve (%s); the download will say so", host, exc)
        return []
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))


@dataclass(frozen=True)
class NetPolicy:
    """Where downloads may connect.

    ``treat_as_public`` names addresses to take as public hosts: it lets a test stand a
    loopback server in for a web site, since no real public host is reachable from a test.
    """

    allow_private: bool = False
    treat_as_public: frozenset[IPAddress] = field(default_factory=frozenset)

    def refused_class(self, address: IPAddress) -> str | None:
        """The kind of address that makes a connection to ``address`` refused, or None when allowed."""
        if self.allow_private or address in self.treat_as_public:
            return None
        return address_class(address)

    def check_url(self, url: str) -> None:
        """Refuse ``url`` unless it is an http(s) link whose host resolves to allowed addresses only.

        A host that does not resolve passes: the download then fails on its own, and any
        address it does reach is checked when it connects.
        """
        parts = urllib.parse.urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise InvalidInput(f"'{url}' is not a web link (it should start with http:// or https://).")
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise InvalidInput(f"'{url}' is not a valid link ({exc}).") from exc
        if not host:
            raise InvalidInput(f"'{url}' names no host.")
        if self.allow_private:
            return
        for address in _resolve(host, port or (443 if scheme == "https" else 80)):
            if kind := self.refused_class(address):
                where = f"{host} is {address}" if host != str(address) else str(address)
                raise InvalidInput(f"Refused {url}: {where}, {_a(kind)} address. {_ADVICE}")


PUBLIC_ONLY = NetPolicy()


@dataclass
class Guard:
    """The policy of one guarded download, and the refusals it made."""

    policy: NetPolicy
    refused: list[str] = field(default_factory=list)

    def check(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            self._check_connect(args[1])
        elif event == "subprocess.Popen":
            self._check_program(args[0], args[1])

    def _check_connect(self, sockaddr: object) -> None:
        host = sockaddr[0] if isinstance(sockaddr, tuple) and sockaddr else sockaddr
        try:
            address = ipaddress.ip_address(str(host))
        except ValueError:
            self._refuse(f"a connection to {host!r} was refused: only a resolved IP address can be checked")
        if kind := self.policy.refused_class(address):
            self._refuse(f"a connection to {address} was refused: it is {_a(kind)} address")

    def _check_program(self, executable: object, arguments: Any) -> None:
        listed = [arguments] if isinstance(arguments, str | bytes | os.PathLike) else list(arguments or [])
        if any(_NETWORK_ARGUMENT.search(os.fsdecode(argument)) for argument in listed):
            program = os.path.basename(os.fsdecode(executable or listed[0]))
            self._refuse(f"it needs {program} to fetch a stream, and {program}'s own connections cannot be checked")

    def _refuse(self, reason: str) -> NoReturn:
        message = f"{reason}. {_ADVICE}"
        self.refused.append(message)
        raise RefusedConnection(message)


_active: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("net_policy_guard", default=None)
_hook_lock = threading.Lock()
_hook_installed = threading.Event()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" or event == "subprocess.Popen":
        guard = _active.get()
        if guard is not None:
            guard.check(event, args)


def _install_hook() -> None:
    """Add the audit hook once per process (audit hooks cannot be removed; it idles outside guards)."""
    with _hook_lock:
        if not _hook_installed.is_set():
            sys.addaudithook(_audit)
            _hook_installed.set()


@contextmanager
def guarded(policy: NetPolicy) -> Iterator[Guard]:
    """Check every connection this context makes inside the block against ``policy``.

    Threads started inside the block do not inherit the guard, so the code run here must
    connect from this thread (yt-dlp does unless asked for concurrent fragment downloads).
    """
    guard = Guard(policy)
    if policy.allow_private:
        yield guard
        return
    _install_hook()
    token = _active.set(guard)
    try:
        yield guard
    finally:
        _active.reset(token)
