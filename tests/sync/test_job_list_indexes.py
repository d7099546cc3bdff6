"""GET /v1/sync/jobs pages come from an index in their own order, never from sorting every matching job
(issue 18: at 1.2 million jobs a page of ?state=pending sorted 400,000 rows, 150 ms; now 0.25 ms)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from sync.ops.selectors import jobs_query

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "job_changed_idx"),
        ({"state": ["pending"]}, "job_state_changed_idx"),
    ],
)
@pytest.mark.parametrize("ordering", [("-updated_at", "-id"), ("updated_at", "id")])
def test_a_page_of_jobs_is_read_from_an_index_in_its_order(
    filters: dict[str, object], index: str, ordering: tuple[str, str]
) -> None:
    page = jobs_query(filters).order_by(*ordering)[:101]
    sql, params = page.query.sql_with_params()
    with connection.cursor() as cursor:
        # An empty test table would be read whole: ask whether the index can serve the order at all.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert index in plan and "Sort" not in plan, plan
    # (A target filter joins on the connection's name: on empty tables the planner may sort a handful of rows,
    # so its index, job_target_changed_idx, is measured at scale instead: docs/BENCHMARKS.md.)


@pytest.mark.django_db(transaction=True)
def test_no_step_of_a_claim_and_a_batch_reads_every_job(live_server, api):
    """At a million finished jobs, a query that no index serves reads them all on every batch: two such (the
    lease owner alone) cut the drain to a third (docs/BENCHMARKS.md). Every statement on the jobs table that a
    claim and a batch run make must be servable by an index."""
    import json

    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from sync.delivery import engine
    from tests.conftest import mock_salesforce

    salesforce = mock_salesforce(live_server.url)
    body = [
        {"operation": "create", "record_id": f"i-{n}", "object_type": "Contact", "data": {"LastName": "L"}}
        for n in range(3)
    ]
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202

    with CaptureQueriesContext(connection) as captured:
        for ids in engine.batches_claim(connection=salesforce, now=timezone.now(), force=True):
            engine.batch_run(job_ids=ids)

    statements = [
        q["sql"]
        for q in captured.captured_queries
        if "sync_syncjob" in q["sql"] and q["sql"].lstrip().upper().startswith(("SELECT", "UPDATE"))
    ]
    assert statements
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            for sql in statements:
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
                plan = cursor.fetchone()[0]
                assert not list(whole_scans(plan[0]["Plan"])), f"{sql}\n{json.dumps(plan, indent=1)}"
        finally:
            cursor.execute("SET enable_seqscan = on")


# Indexes of a few rows only (their WHERE): read whole, they still read only those.
PARTIAL = {"job_due_lane_idx", "job_open_idx", "job_error_changed_idx"}


def whole_scans(node: dict[str, Any]) -> Iterator[str]:
    """Scans of the jobs table that read all of it: a sequential scan, or (sequential scans turned off, so
    the planner walks an index end to end instead) an index scan with no condition on the index."""
    if node.get("Relation Name") == "sync_syncjob":
        kind = node["Node Type"]
        if kind == "Seq Scan" or (
            kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node and node["Index Name"] not in PARTIAL
        ):
            yield f"{kind} {node.get('Index Name', '')}"
    for child in node.get("Plans", []):
        yield from whole_scans(child)
