"""recordsync.db.postgresql: the health check asks the server only after idleness or a sign of trouble, and the
cursors binding on the server are kept for the life of a connection."""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
import pytest
from django.db import close_old_connections, connections

from recordsync.db.postgresql import base

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def db() -> Any:
    """The default connection as a request leaves it: it did its work and the request ended."""
    wrapper = connections["default"]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    close_old_connections()  # what request_finished runs (the test client disconnects it)
    assert wrapper.connection is not None
    return wrapper


@pytest.fixture
def asked(monkeypatch, db) -> list[int]:
    """Each full health check (`SELECT 1`) made from now on."""
    calls: list[int] = []
    usable = type(db).is_usable

    def spy(self: Any) -> bool:
        calls.append(1)
        return bool(usable(self))

    monkeypatch.setattr(type(db), "is_usable", spy)
    return calls


def backend_pid(db: Any) -> int:
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def test_a_connection_that_just_answered_starts_a_request_without_asking(db, asked):
    pid = db.connection.info.backend_pid

    assert backend_pid(db) == pid  # the next request's first query, on the same session
    assert asked == []


def test_a_connection_idle_longer_than_the_bound_is_asked_first(db, asked, monkeypatch, settings):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 10
    later = time.monotonic() + 11
    monkeypatch.setattr(base, "clock", lambda: later)

    backend_pid(db)

    assert asked == [1]


def test_a_bound_of_zero_asks_before_every_request(db, asked, settings):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 0
    time.sleep(0.01)

    backend_pid(db)
    close_old_connections()
    backend_pid(db)

    assert asked == [1, 1]


def test_a_session_the_server_ended_is_replaced_before_the_request_uses_it(db, asked, settings):
    """Without the look at the socket, the request's first query would fail on the dead session (a 503)."""
    pid = db.connection.info.backend_pid
    given = db.settings_dict
    where = {"host": given["HOST"], "port": given["PORT"] or 5432, "user": given["USER"], "dbname": given["NAME"]}
    with psycopg.connect(**where, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    poller = select.poll()
    poller.register(db.connection.pgconn.socket, select.POLLIN)
    assert poller.poll(5000), "the server's goodbye never reached the socket"

    new_pid = backend_pid(db)

    assert new_pid != pid
    assert asked == [1]  # the socket had something to say: the full check ran, failed, and the session was replaced


def test_a_connection_inside_a_transaction_is_asked(db, asked):
    db.connection.execute("BEGIN")  # left open by code outside Django's atomic blocks
    try:
        backend_pid(db)
    finally:
        db.connection.execute("ROLLBACK")

    assert asked == [1]


def test_the_bound_cursor_is_kept_for_the_connection_and_replaced_with_it(db):
    first = db.bound_cursor(prepare=True).cursor
    again = db.bound_cursor(prepare=True).cursor
    planned = db.bound_cursor(prepare=False).cursor

    assert first is again and first is not planned
    assert isinstance(planned, base.PlannedEachTime)
    db.close()
    replaced = db.bound_cursor(prepare=True).cursor
    assert replaced is not first and replaced.connection is db.connection
    replaced.execute("SELECT %s::int", [7])
    assert replaced.fetchall() == [(7,)]
