"""Where the service's outbound calls may go (issue 15): never to this host, its network or the cloud's metadata
service by default, whatever a staff-set URL, a redirect or a pagination link says.

Every outbound HTTP call goes through crms/http.py, which asks `check` before each request and before following
each redirect. A host is refused when any address it resolves to is not a public one (loopback, private,
link-local such as 169.254.169.254, CGNAT, multicast, reserved, unspecified), unless EGRESS_ALLOWED_HOSTS names
the host or EGRESS_ALLOWED_NETWORKS holds the address (`make run` allows loopback, for its own mock CRMs).
The addresses are resolved here and again by the HTTP library when it connects; a DNS answer that changes in
between (rebinding) is not caught: allow only what you need.

Written with the standard library's `ipaddress`: advocate, the one library for this, is unmaintained since 2020.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from crms.base import ConnectorError

Resolver = Callable[..., list[Any]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(ConnectorError):
    """A call to an address the egress policy does not allow: nothing was sent. The connection's config is wrong
    (or the policy too tight), so the connection pauses rather than failing record after record."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="EGRESS_REFUSED", permanent=True, pause_connection=True)


def _system_resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
    return socket.getaddrinfo(host, port, **kwargs)


# The resolver `check` uses unless given one: the system's. The test suite swaps in one that never leaves the
# machine (tests/conftest.py): CRM host names in tests are fakes that must not become DNS queries.
default_resolver: Resolver = _system_resolve

# Hosts found allowed, for a short while: a connector calls the same host again and again, and each check would
# otherwise be one more DNS lookup per call. Keyed by the policy too, so a changed setting is obeyed at once.
ALLOWED_FOR_SECONDS = 30.0
_allowed: dict[tuple[Any, ...], float] = {}


def check(url: str, *, resolve: Resolver | None = None) -> None:
    """Raise EgressRefused unless every address `url`'s host resolves to is allowed. A host that does not
    resolve is left to the HTTP library, which reports it as the transport error it is."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise EgressRefused(f"{parts.scheme or '(no scheme)'}:// URLs are not called: use https://")
    host = (parts.hostname or "").lower()
    if not host:
        raise EgressRefused(f"{url[:200]!r} names no host")
    if host in {h.lower() for h in settings.EGRESS_ALLOWED_HOSTS}:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return  # a bad port: the HTTP library refuses it with its own message
    chooser = resolve or default_resolver
    key = (host, port, chooser, tuple(settings.EGRESS_ALLOWED_NETWORKS))
    if _allowed.get(key, 0.0) > time.monotonic():
        return
    try:
        found = chooser(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return
    for address in sorted({str(info[4][0]) for info in found}):
        why = refusal(ipaddress.ip_address(address.split("%")[0]))
        if why:
            raise EgressRefused(
                f"{host} resolves to {address}, {why}: outbound calls there are refused. If it is meant, set "
                f"EGRESS_ALLOWED_HOSTS={host} or EGRESS_ALLOWED_NETWORKS to a network holding {address}."
            )
    if len(_allowed) > 1000:
        _allowed.clear()
    _allowed[key] = time.monotonic() + ALLOWED_FOR_SECONDS


def refusal(address: IPAddress) -> str:
    """Why calls to `address` are refused ("" when allowed)."""
    if any(address in network for network in allowed_networks()):
        return ""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        return refusal(mapped)
    checks = (
        ("is_unspecified", "the unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address (cloud metadata lives there)"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    )
    for test, what in checks:
        if getattr(address, test):
            return what
    return "" if address.is_global else "not a public address"


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(network, strict=False) for network in settings.EGRESS_ALLOWED_NETWORKS]
