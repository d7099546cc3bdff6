"""History for bench/scale.py: N finished records (an event, a synced job, a success attempt and a link each),
written server-side by PostgreSQL (`INSERT … SELECT generate_series`), which loads a million of each in about
a minute on the 2-core machine, as fast as COPY from a client and with nothing crossing the socket.

The rows look like what the pipeline writes: the same columns, spread over the last 30 days, events older
than their job's last change, every job synced to one target (the one the drains then write to).
"""

from __future__ import annotations

import psycopg

# One statement per table; %(n)s rows, %(target)s the connection id, %(days)s of history before now.
EVENTS = """
INSERT INTO sync_syncevent (id, idempotency_key, request_hash, source, operation, object_type, record_id,
                            payload, occurred_at, received_at, request_id, routing, response)
SELECT v7.id, 'auto:' || v7.id, md5(i::text), 'system_a', 'create', 'Contact', 'hist-' || i,
       jsonb_build_object('LastName', 'L' || i, 'Email', 'hist-' || i || '@example.com'),
       at.received - interval '1 second', at.received, '', '{}'::jsonb, '{}'::jsonb
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT now() - make_interval(secs => (i::float / %(n)s) * %(days)s * 86400 + 59) AS received) AS at,
     -- The id as the pipeline makes it (UUIDv7, RFC 9562): the millisecond received, version 7, the variant
     -- bits, random bits; its made-up idempotency key is 'auto:' and the id.
     LATERAL (SELECT md5('hist-event-' || i) AS h) AS r,
     LATERAL (SELECT (lpad(to_hex((extract(epoch FROM at.received) * 1000)::bigint), 12, '0') || '7'
                      || substr(r.h, 1, 3) || '8' || substr(r.h, 4, 15))::uuid AS id) AS v7
"""
JOBS = """
INSERT INTO sync_syncjob (source, object_type, record_id, target_id, state, lane, attempts, version, last_event_id,
                          last_occurred_at, next_attempt_at, lease_expires_at, lease_owner, fence_until,
                          last_error_code, last_error_message, last_error_permanent, created_at, updated_at, synced_at)
SELECT 'system_a', 'Contact', e.record_id, %(target)s, 'synced', 0, 0, 1, e.id,
       e.occurred_at, NULL, NULL, '', NULL,
       '', '', NULL,
       e.received_at, e.received_at + interval '1 second', e.received_at + interval '1 second'
FROM sync_syncevent AS e WHERE e.record_id LIKE 'hist-%%'
"""
ATTEMPTS = """
INSERT INTO sync_syncattempt (job_id, version, started_at, finished_at, outcome, http_status, error_code,
                              error_message, permanent, duration_ms)
SELECT id, 1, updated_at - interval '1 second', updated_at, 'success', 200, '', '', NULL, 40
FROM sync_syncjob WHERE record_id LIKE 'hist-%%'
"""
LINKS = """
INSERT INTO sync_recordlink (object_type, record_id, system_id, external_object, external_id, last_values,
                             last_hash, synced_at, created_at)
SELECT 'Contact', 'hist-' || i, %(target)s, 'Contact', '003' || lpad(to_hex(i), 15, '0'),
       jsonb_build_object('LastName', 'L' || i, 'Email', 'hist-' || i || '@example.com'), '',
       now() - make_interval(secs => (i::float / %(n)s) * %(days)s * 86400 + 58),
       now() - make_interval(secs => (i::float / %(n)s) * %(days)s * 86400 + 58)
FROM generate_series(1, %(n)s) AS i
"""


def load_history(db_url: str, *, rows: int, target_id: int, days: int = 30) -> dict[str, int]:
    """Write the history and ANALYZE the tables (as autovacuum would soon), so plans are those of a live system."""
    params = {"n": rows, "target": target_id, "days": days}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in (EVENTS, JOBS, ATTEMPTS, LINKS):
            conn.execute(statement, params)
        conn.execute("ANALYZE sync_syncevent, sync_syncjob, sync_syncattempt, sync_recordlink")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM sync_syncevent), (SELECT count(*) FROM sync_syncjob), "
            "(SELECT count(*) FROM sync_syncattempt), (SELECT count(*) FROM sync_recordlink)"
        ).fetchone()
    assert counts is not None
    return dict(zip(("events", "jobs", "attempts", "links"), (int(c) for c in counts), strict=True))
