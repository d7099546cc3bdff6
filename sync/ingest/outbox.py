"""The two bulk writes of an ingest: the events (append-only) and the job upsert.

Both are written per database. PostgreSQL gets COPY for large event batches and one
`unnest()`-fed upsert (ten array parameters instead of thousands of placeholders, which psycopg
would re-scan on every call); SQLite gets multi-row VALUES. The ORM cannot express the upsert's
"version = version + 1, keep in_flight/held", and its bulk insert spends most of a 500-event request
building parameter lists (docs/BENCHMARKS.md). The upsert's SQL is the arrival transition of
transitions.py, which owns every change of a job's state; this module binds its parameters.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from sync import transitions
from sync.models import Lane, SyncEvent, SyncJob

logger = logging.getLogger("recordsync.sync")

JobKey = tuple[str, str, str, int]  # record_id, object_type, source, target id
COPY_FROM = 20  # events per request from which COPY beats INSERT
SQLITE_CHUNK = 500

_TABLE = SyncJob._meta.db_table


def events_insert(events: Sequence[SyncEvent]) -> None:
    if connection.vendor == "postgresql" and len(events) >= COPY_FROM:
        _events_copy(events)
    else:
        SyncEvent.objects.bulk_create(events)


def _events_copy(events: Sequence[SyncEvent]) -> None:
    fields = SyncEvent._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {SyncEvent._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for event in events:
            copy.write_row([f.get_db_prep_save(getattr(event, f.attname), connection) for f in fields])


def jobs_upsert(
    rows: dict[JobKey, tuple[int, SyncEvent]], now: datetime, lane: Lane = Lane.LIVE
) -> dict[JobKey, tuple[str, datetime]]:
    """Insert or bump one job per key (`bumps` events each, pointing at the latest) in `lane`; returns each
    job's state."""
    ordered = sorted(rows.items())  # one lock order for every writer: concurrent batches never deadlock
    if connection.vendor == "postgresql":
        answers = _fetch(transitions.arrival_unnest_sql(), _unnest_params(ordered, now, lane))
    else:
        answers = []
        for start in range(0, len(ordered), SQLITE_CHUNK):
            chunk = ordered[start : start + SQLITE_CHUNK]
            answers += _fetch(transitions.arrival_values_sql(len(chunk)), _values_params(chunk, now, lane))
    return _states(answers)


def one_statement_available() -> bool:
    return connection.vendor == "postgresql" and connection.get_autocommit()


def events_and_jobs_write(
    events: Sequence[SyncEvent], rows: dict[JobKey, tuple[int, SyncEvent]], now: datetime, lane: Lane = Lane.LIVE
) -> dict[JobKey, tuple[str, datetime]] | None:
    """PostgreSQL: events and the job upsert in one statement, atomic on its own; only for records
    never seen. If any of them already has a job, the statement writes nothing and this returns None:
    such a change may be late, conflicting or of a deleted record, checks the caller makes in a
    transaction. Asked inside the statement, it costs no round trip of its own.

    A data-modifying CTE always runs to completion; the job -> event foreign key is deferred,
    so it is checked when the statement commits, with the events in place.
    """
    fields = SyncEvent._meta.concrete_fields
    single = len(events) == 1
    columns = [[f.get_db_prep_save(getattr(e, f.attname), connection) for e in events] for f in fields]
    # One event: its values and its record bound as they are. Each array psycopg binds is scanned to find its
    # element type: 21 of them were a tenth of a single event's request.
    event_params = [column[0] for column in columns] if single else columns
    records: Any = events[0].record_id if single else sorted({event.record_id for event in events})
    ordered = sorted(rows.items())
    if not ordered:
        with connection.cursor() as cursor:
            cursor.execute(_one_statement_sql(with_jobs=False, single=single), [records, *event_params])
            return {} if cursor.rowcount else None
    if single:  # its jobs take the event's columns from the inserted row, and only their targets as an array
        jobs_params = [now, now, int(lane), [target_id for (_, _, _, target_id), _ in ordered]]
    else:
        jobs_params = _unnest_params(ordered, now, lane)
    answers = _fetch_bound(
        _one_statement_sql(with_jobs=True, single=single), [records, *event_params, *jobs_params], prepare=single
    )
    return _states(answers) if answers else None


@functools.cache
def _one_statement_sql(*, with_jobs: bool, single: bool) -> str:
    """The statement of events_and_jobs_write, built once a process: it is the same for every request, and
    asking each field for its column type took 0.4 ms of a 5 ms single-event request. `single`: one event,
    bound as values (its record, then its fields); otherwise an array of records and one array per field."""
    fields = SyncEvent._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    if single:
        known = f"known AS (SELECT EXISTS (SELECT 1 FROM {_TABLE} WHERE record_id = %s::text) AS hit)"  # noqa: S608
        rows = "SELECT " + ", ".join(f"%s::{f.db_type(connection)}" for f in fields)
    else:
        # One index probe per record, a lateral LIMIT 1: the statement is planned once for every array
        # (prepared), and that plan of `record_id = ANY(%s)` scanned every job.
        known = (
            f"known AS (SELECT EXISTS (SELECT 1 FROM unnest(%s::text[]) AS k(record_id), "  # noqa: S608
            f"LATERAL (SELECT 1 FROM {_TABLE} AS j WHERE j.record_id = k.record_id LIMIT 1) AS one) AS hit)"
        )
        rows = "SELECT * FROM unnest(" + ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields) + ")"  # noqa: S608 - column types from the model
    fresh_only = "WHERE NOT (SELECT hit FROM known)"
    if not with_jobs:
        return f"WITH {known} INSERT INTO {SyncEvent._meta.db_table} ({columns}) {rows} {fresh_only}"
    if single:  # no row inserted (the record is known), no jobs
        returning = "RETURNING source, object_type, record_id, id, occurred_at"
        return (
            f"WITH {known}, events AS (INSERT INTO {SyncEvent._meta.db_table} ({columns}) "
            f"{rows} {fresh_only} {returning}) " + transitions.arrival_one_event_sql("events")
        )
    return (
        f"WITH {known}, events AS (INSERT INTO {SyncEvent._meta.db_table} ({columns}) "
        f"{rows} {fresh_only}) " + transitions.arrival_unnest_sql(fresh_only)
    )


def _fetch_bound(sql: str, params: list[Any], *, prepare: bool) -> list[tuple[Any, ...]]:
    """`_fetch` for the one statement, its values bound on the server: Django's cursors bind on the client
    (quoting the arrays took 0.5 ms of a request).

    `prepare`: a single event's form is prepared once per connection, so the server neither parses nor plans it
    again (0.3 ms, and half the database's time per event; docs/BENCHMARKS.md). A list's is planned for each
    run: the cached plan of a prepared statement is the plan made for the table as it was, and one made while
    the jobs table held a few pages (a fresh install, a table just emptied and vacuumed) looked each of the
    500 records up with a scan of the whole table, for as long as the table grew without a new ANALYZE: lists
    ran at a third of their rate in the benchmark. Planning once per 500 events costs nothing that shows.
    A pooler in transaction mode needs DB_PREPARED_STATEMENTS=0."""
    if not settings.DB_PREPARED_STATEMENTS:
        return _fetch(sql, params)
    cursor = connection.bound_cursor(prepare=prepare)  # type: ignore[attr-defined]  # recordsync.db.postgresql
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def _states(answers: list[tuple[Any, ...]]) -> dict[JobKey, tuple[str, datetime]]:
    """Each job's state and the time of the newest change it holds: an event older than that was superseded."""
    states: dict[JobKey, tuple[str, datetime]] = {}
    for record_id, object_type, source, target_id, state, version, last_occurred_at in answers:
        if isinstance(last_occurred_at, str):  # SQLite hands back text
            last_occurred_at = datetime.fromisoformat(last_occurred_at)
        if timezone.is_naive(last_occurred_at):
            last_occurred_at = timezone.make_aware(last_occurred_at, UTC)
        states[(record_id, object_type, source, target_id)] = (state, last_occurred_at)
        logger.info(
            "job state",
            extra={
                "record_id": record_id,
                "object_type": object_type,
                "target_id": target_id,
                "state": state,
                "version": version,
            },
        )
    return states


def _fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _unnest_params(ordered: list[tuple[JobKey, tuple[int, SyncEvent]]], now: datetime, lane: Lane) -> list[Any]:
    columns: list[list[Any]] = [[], [], [], [], [], [], []]
    for (record_id, object_type, source, target_id), (bumps, event) in ordered:
        for column, value in zip(
            columns, (source, object_type, record_id, target_id, bumps, event.id, event.occurred_at), strict=True
        ):
            column.append(value)
    return [now, now, int(lane), *columns]


def _values_params(chunk: list[tuple[JobKey, tuple[int, SyncEvent]]], now: datetime, lane: Lane) -> list[Any]:
    ops = connection.ops
    event_pk = SyncEvent._meta.get_field("id")
    stamp = ops.adapt_datetimefield_value(now)
    params: list[Any] = []
    for (record_id, object_type, source, target_id), (bumps, event) in chunk:
        params += [
            source,
            object_type,
            record_id,
            target_id,
            bumps,
            event_pk.get_db_prep_value(event.id, connection),
            ops.adapt_datetimefield_value(event.occurred_at),
            stamp,
            stamp,
            int(lane),
        ]
    return params
