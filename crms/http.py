"""The one outbound HTTP seam: every connector call goes through HttpClient.

It sets timeouts and the user agent, logs each call without secrets, and turns transport
failures into ConnectorErrors, so tests fake one place (with `responses`) and the throttle
has one place to sit: `gate` runs before every request, `observe` sees every answer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings

from recordsync.metrics import CRM_CALL_SECONDS, CRM_CALLS, call_outcome

logger = logging.getLogger("recordsync.http")

USER_AGENT = "recordsync/0.1 (+https://github.com/recordsync)"
# When the call this process is making began (epoch seconds), while it is under way. A stop in the
# middle of it (SIGTERM, a task timeout) leaves it set: the engine then fences the batch's jobs until
# that call can no longer land (sync.delivery.engine.batch_run).
_call_started: ContextVar[float | None] = ContextVar("crm_call_started", default=None)


def interrupted_call() -> float | None:
    """The start of an outbound call a stop cut off in this process, or None; asking clears it."""
    started = _call_started.get()
    _call_started.set(None)
    return started


class TransportError(Exception):
    """The call never got an HTTP answer (timeout, refused, DNS). Always worth retrying."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


# Request fields whose values are credentials, in headers, query, form or JSON bodies.
CREDENTIAL_NAME = re.compile(r"secret|token|password|assertion|api[-_]?key|authorization|signature", re.I)
MIN_SECRET_CHARS = 6  # shorter values would redact ordinary words
MAX_REMEMBERED = 32


class _CheckedSession(requests.Session):
    """Every redirect target passes the egress policy too, before it is followed."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        from crms import egress  # here: crms.base, which egress needs, imports this module

        target = super().get_redirect_target(resp)
        if target:
            egress.check(urljoin(resp.url, target))
        return target


class HttpClient:
    def __init__(
        self,
        *,
        connection_name: str,
        timeout: tuple[float, float] | None = None,
        gate: Callable[[], Callable[[], None]] | None = None,
        observe: Callable[[requests.Response], None] | None = None,
        secret_path: bool = False,
    ) -> None:
        self.connection_name = connection_name
        # The URL's path is itself a secret (a Slack webhook): logs and errors show the host only.
        self.secret_path = secret_path
        self.timeout = timeout or (settings.CRM_HTTP_CONNECT_TIMEOUT, settings.CRM_HTTP_READ_TIMEOUT)
        # Called before every request: the engine passes its throttle here, so pushes, lookups,
        # polls and logins all count against the connection's allowance. What it answers is called
        # once the request is over: the call has reached the target by then, whatever the outcome.
        self.gate = gate
        # Called with every answer: the throttle reads the target's own rate-limit headers there.
        self.observe = observe
        self.session = _CheckedSession()
        # Credentials this client has sent (bearer tokens, client secrets, assertions): `redact` takes them out
        # of any text kept afterwards, since an error body may echo the request (issue 15).
        self.sensitive: dict[str, None] = {}  # ordered: the newest last
        self.session.headers["User-Agent"] = USER_AGENT

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
    ) -> requests.Response:
        from crms import egress  # here: crms.base, which egress needs, imports this module

        egress.check(url)  # before anything leaves (or takes a place in the throttle): never this host or network
        self._remember_credentials(headers, params, json, data)
        settle = self.gate() if self.gate is not None else None
        try:
            return self._send(method, url, headers=headers, params=params, json=json, data=data)
        finally:
            if settle is not None:
                settle()

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Any,
    ) -> requests.Response:
        started = time.perf_counter()
        in_flight = _call_started.set(time.time())
        try:
            response = self.session.request(
                method, url, headers=dict(headers or {}), params=params, json=json, data=data, timeout=self.timeout
            )
        except requests.Timeout as exc:
            _call_started.reset(in_flight)
            self._log(method, url, None, started, "timeout")
            raise TransportError(f"{method} {self._where(url)} timed out", code="timeout") from exc
        except requests.ConnectionError as exc:
            _call_started.reset(in_flight)
            self._log(method, url, None, started, "connection_error")
            raise TransportError(f"{method} {self._where(url)} could not connect", code="connection_error") from exc
        except Exception:
            _call_started.reset(in_flight)
            raise
        # Only a BaseException (the worker stopping mid-call) gets past without this: the mark stays for the engine.
        _call_started.reset(in_flight)
        self._log(method, url, response.status_code, started)
        if self.observe is not None:
            self.observe(response)
        return response

    def _remember_credentials(self, *parts: Any) -> None:
        for part in parts:
            if not isinstance(part, Mapping):
                continue
            for name, value in part.items():
                if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
                    continue
                if str(name).lower() == "authorization":
                    value = value.partition(" ")[2] or value  # the credentials, without "Bearer "
                elif not CREDENTIAL_NAME.search(str(name)):
                    continue
                self.sensitive.pop(value, None)
                self.sensitive[value] = None
        while len(self.sensitive) > MAX_REMEMBERED:  # tokens rotate: keep the newest few
            del self.sensitive[next(iter(self.sensitive))]

    def redact(self, text: str, extra: Iterable[str] = ()) -> str:
        """`text` without any credential this client sent (or `extra`, e.g. the connection's own secrets)."""
        for secret in sorted({*self.sensitive, *extra}, key=len, reverse=True):
            if len(secret) >= MIN_SECRET_CHARS and secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    def _log(self, method: str, url: str, status: int | None, started: float, error: str = "") -> None:
        elapsed = time.perf_counter() - started
        CRM_CALLS.labels(self.connection_name, call_outcome(status, error)).inc()
        CRM_CALL_SECONDS.labels(self.connection_name).observe(elapsed)
        logger.info(
            "crm call",
            extra={
                "connection": self.connection_name,
                "method": method,
                "url": self._where(url),  # no query string: it can carry ids, filters or tokens
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

    def _where(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]  # never credentials in the authority
        return f"{parts.scheme}://{host}/…" if self.secret_path else f"{parts.scheme}://{host}{parts.path}"


def server_time(response: requests.Response) -> float | None:
    """The target's clock at its answer (the Date header), for cursors that must not run ahead of it."""
    try:
        return parsedate_to_datetime(response.headers.get("Date", "")).timestamp()
    except (TypeError, ValueError):
        return None
