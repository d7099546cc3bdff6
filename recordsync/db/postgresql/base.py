"""Django's PostgreSQL backend, with a health check that costs no round trip for a connection in use, and
cursors binding on the server kept for the life of a connection.

With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before the first query of every request: one more round trip
to the server, a quarter of a worker's time in a single-event ingest under load (docs/BENCHMARKS.md). Here a
connection that answered within the last `DB_HEALTH_CHECK_IDLE_SECONDS`, is idle outside a transaction and has
nothing waiting on its socket is taken as alive without asking. When the server ends a session (a restart,
`pg_terminate_backend`, a crash of the backend, `idle_session_timeout`), it writes an error or closes the socket,
so the socket is readable and the full check runs and reconnects. What the socket cannot show is a connection
a middlebox dropped in silence; that happens to idle connections, and a connection idle for longer than the
bound always gets the full `SELECT 1`.
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base

clock = time.monotonic  # swappable in tests


class PlannedEachTime(psycopg.Cursor[Any]):
    """Bound on the server like a prepared statement, but planned for each run (PostgreSQL's unnamed statement)."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None, **options: Any) -> Any:
        return super().execute(query, params, prepare=False, **options)


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered_at: float | None = None  # when the connection last finished a request's work unharmed
        self._bound: dict[bool, psycopg.Cursor[Any]] = {}

    def bound_cursor(self, *, prepare: bool) -> Any:
        """A cursor that binds its values on the server (Django's bind on the client), wrapped as Django wraps its
        own: its errors, its execute wrappers and, in DEBUG, its query log. `prepare`: the statement is prepared on
        its first run on the connection (prepare_threshold 0, set in settings.py); otherwise planned each time.

        One is kept per connection and kind, never closed by its user: psycopg picks each value's adapter anew for
        every new cursor, and for the single-event statement's 22 values that was a tenth of the request
        (docs/BENCHMARKS.md). A kept cursor running the same statement text keeps its adapters."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        kept = self._bound.get(prepare)
        if kept is None or kept.closed or kept.connection is not self.connection:
            kept = (psycopg.Cursor if prepare else PlannedEachTime)(self.connection)
            self._bound[prepare] = kept
        return self._prepare_cursor(kept)  # type: ignore[attr-defined]  # Django's, untyped in django-stubs

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled  # type: ignore[attr-defined]  # Django's, untyped in django-stubs
            and not self.health_check_done  # type: ignore[has-type]  # set by Django's __init__, untyped
            and self._seems_alive()
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def close_if_unusable_or_obsolete(self) -> None:
        used = self.health_check_done  # a cursor was taken since the last check: the connection did work
        super().close_if_unusable_or_obsolete()
        if self.connection is not None and used and not self.errors_occurred:
            self.answered_at = clock()

    def connect(self) -> None:
        super().connect()
        self.answered_at = clock()

    def _seems_alive(self) -> bool:
        idle_limit: float = settings.DB_HEALTH_CHECK_IDLE_SECONDS
        if self.answered_at is None or clock() - self.answered_at > idle_limit:
            return False
        conn: psycopg.Connection[Any] = self.connection
        if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        try:
            poller = select.poll()
            poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)  # anything waiting (an error, a notice, the end of the stream): ask
        except (OSError, psycopg.Error):
            return False
