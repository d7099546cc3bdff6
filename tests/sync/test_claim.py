"""The dispatcher's claim: one statement that claims a batch of due jobs, never one job twice, and on
PostgreSQL never waits for another dispatcher's rows nor walks every pending job to find its batch."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crms.models import Connection
from sync import transitions
from sync.models import JobClaim, JobState, SyncJob

pytestmark = pytest.mark.django_db(transaction=True)


def _pending(target: Connection, count: int, **fields: Any) -> list[int]:
    """`count` jobs, returned oldest first: the newest row is the oldest job (ids and age in opposite orders)."""
    now = timezone.now()
    jobs = [
        SyncJob(
            source="system_a",
            object_type="Contact",
            record_id=f"r-{n}",
            target=target,
            last_occurred_at=now,
            updated_at=now - timedelta(seconds=n),
            **fields,
        )
        for n in range(count)
    ]
    return [job.pk for job in SyncJob.objects.bulk_create(jobs)][::-1]


def _due(target: Connection, *, unclaimed: bool = True) -> Any:
    due = SyncJob.objects.filter(target=target, state__in=transitions.DUE, lane=0, object_type="Contact")
    due = transitions.unclaimed(due, now=timezone.now()) if unclaimed else due
    return due.order_by("updated_at", "id")


def _claim(target: Connection, size: int, owner: str, *, unclaimed: bool = True, **lease: Any) -> list[int]:
    now = timezone.now()
    until = now + timedelta(**(lease or {"minutes": 5}))
    return transitions.claim(_due(target, unclaimed=unclaimed), size=size, owner=owner, lease_until=until, now=now)


def _claims() -> dict[int, str]:
    return dict(JobClaim.objects.values_list("job_id", "owner"))


def test_a_claim_takes_the_oldest_due_jobs_and_returns_them(connections):
    target = connections["salesforce"]
    ids = _pending(target, 5)
    SyncJob.objects.filter(pk=ids[1]).update(state=JobState.SYNCED)  # not due: not taken

    claimed = _claim(target, 3, "owner-a")

    assert claimed == sorted([ids[0], ids[2], ids[3]])
    assert _claims() == dict.fromkeys(claimed, "owner-a")
    # The jobs themselves do not change: still pending, no lease of their own until a worker starts them.
    assert set(SyncJob.objects.filter(pk__in=claimed).values_list("state", "lease_owner")) == {("pending", "")}
    assert _claim(target, 3, "owner-b") == [ids[4]]
    assert _claim(target, 3, "owner-c") == []


def test_a_live_claim_is_never_taken_over_and_an_expired_one_is(connections):
    """The claim's key is the job: whatever the caller's filter saw, a job a live claim holds is not claimed
    again; once that claim has expired (its dispatcher died, its task was lost) the next claim takes the job."""
    target = connections["salesforce"]
    ids = _pending(target, 3)
    assert _claim(target, 2, "owner-a", seconds=-1) == sorted(ids[:2])  # expired at once
    assert _claim(target, 1, "owner-b") == [ids[0]]  # the oldest, its claim expired

    # A caller that did not leave the claimed jobs out: the live claim stays owner-b's, the rest are taken.
    assert _claim(target, 3, "owner-c", unclaimed=False) == sorted(ids[1:])
    assert _claims() == {ids[0]: "owner-b", ids[1]: "owner-c", ids[2]: "owner-c"}


def test_a_worker_starts_only_jobs_still_claimed_and_due(connections):
    """Starting a batch deletes its claims and moves the jobs still due in flight; a second worker given the
    same task finds no claim and takes nothing; a job held since its claim is not started."""
    target = connections["salesforce"]
    ids = _pending(target, 3)
    claimed = _claim(target, 3, "owner-a")
    SyncJob.objects.filter(pk=ids[2]).update(state=JobState.HELD)
    now = timezone.now()

    taken = transitions.start(claimed, owner="worker-1", lease_until=now + timedelta(minutes=2), now=now)
    again = transitions.start(claimed, owner="worker-2", lease_until=now + timedelta(minutes=2), now=now)

    assert (taken, again, _claims()) == (2, 0, {})
    states = dict(SyncJob.objects.values_list("pk", "state"))
    assert [states[pk] for pk in ids] == ["in_flight", "in_flight", "held"]
    assert set(SyncJob.objects.filter(pk__in=ids[:2]).values_list("lease_owner", flat=True)) == {"worker-1"}


@pytest.mark.postgres
def test_two_dispatchers_claiming_at_once_take_different_jobs_without_waiting(connections):
    """The first holds its batch locked, uncommitted; the second skips those rows and takes the rest at once
    (a lock wait would end in the lock_timeout's error)."""
    target = connections["salesforce"]
    ids = _pending(target, 5)
    first: list[int] = []
    held, done = threading.Event(), threading.Event()

    def dispatcher_a() -> None:
        try:
            with transaction.atomic():
                first.extend(_claim(target, 3, "owner-a"))
                held.set()
                done.wait(10)
        finally:
            held.set()
            connection.close()

    thread = threading.Thread(target=dispatcher_a)
    thread.start()
    try:
        assert held.wait(10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            second = _claim(target, 3, "owner-b")
    finally:
        done.set()
        thread.join(10)

    assert first == sorted(ids[:3]) and second == sorted(ids[3:])
    owners = _claims()
    assert [owners[pk] for pk in ids] == ["owner-a"] * 3 + ["owner-b"] * 2


@pytest.mark.postgres
def test_a_claim_finds_its_batch_by_the_due_index_however_stale_the_statistics(connections):
    """Statistics taken while no job was pending (a burst arrived since): the UPDATE filtered on the due
    conditions alone walked every pending job of the target to find its 200 (15 ms at 20,000 pending, growing
    with the backlog). The batch comes from the due index, in order, and the jobs table is read no other way."""
    target = connections["salesforce"]
    _pending(target, 50, state=JobState.SYNCED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sync_syncjob")
    now = timezone.now()
    SyncJob.objects.bulk_create(
        SyncJob(source="system_a", object_type="Contact", record_id=f"p-{n}", target=target, last_occurred_at=now)
        for n in range(300)
    )

    with CaptureQueriesContext(connection) as captured:
        claimed = _claim(target, 200, "owner-a")
    claims = JobClaim._meta.db_table
    (insert,) = [q["sql"] for q in captured.captured_queries if f"INSERT INTO {claims}" in q["sql"].replace('"', "")]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {insert}")
        plan = cursor.fetchone()[0][0]["Plan"]
        transaction.set_rollback(True)

    assert len(claimed) == 200
    jobs = [node for node in _nodes(plan) if node.get("Relation Name") == SyncJob._meta.db_table]
    scans = {(node["Node Type"], node.get("Index Name"), "Index Cond" in node) for node in jobs}
    assert scans == {("Index Scan", "job_due_lane_idx", True)}, json.dumps(plan, indent=1)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def test_the_jobs_table_keeps_no_index_that_a_state_change_writes_for_nothing(connections):
    """Each change of a job's state writes a new entry in every index of the table (migration sync/0029): the
    target's own index, the dispatcher's and the leases' were dropped, their queries served by other indexes."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, SyncJob._meta.db_table)

    target_alone = [name for name, index in found.items() if index["index"] and index["columns"] == ["target_id"]]
    assert target_alone == [] and not {"job_dispatch_idx", "job_lease_idx"} & set(found)


def test_the_dispatcher_visits_each_enabled_connection_with_a_due_job(connections):
    from sync.delivery import engine

    salesforce, outreach, system_a = connections["salesforce"], connections["outreach"], connections["system_a"]
    _pending(salesforce, 3)
    _pending(outreach, 2, state=JobState.SYNCED)
    _pending(system_a, 2)
    Connection.objects.filter(pk=system_a.pk).update(enabled=False)
    assert engine.targets_due() == [salesforce.pk]

    SyncJob.objects.filter(target=outreach, record_id="r-0").update(state=JobState.RETRYING)
    SyncJob.objects.filter(target=salesforce).update(state=JobState.IN_FLIGHT)  # started already: not due
    assert engine.targets_due() == [outreach.pk]


@pytest.mark.postgres
def test_the_dispatchers_pass_reads_one_due_job_per_connection_however_long_the_backlog(connections):
    """A DISTINCT over the due jobs read all of them on every pass, four times a second (5.8 ms a pass with
    20,000 pending and a million finished jobs). EXISTS stops at the first due job of each connection."""
    from sync.delivery import engine

    _pending(connections["salesforce"], 500)
    _pending(connections["outreach"], 300)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sync_syncjob")
    with CaptureQueriesContext(connection) as captured:
        assert engine.targets_due() == sorted([connections["salesforce"].pk, connections["outreach"].pk])
    (query,) = [q["sql"] for q in captured.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}")
        plan = cursor.fetchone()[0][0]["Plan"]

    job_scans = [n for n in _nodes(plan) if n.get("Relation Name") == "sync_syncjob"]
    assert job_scans, json.dumps(plan, indent=1)
    for scan in job_scans:
        assert scan["Actual Rows"] <= 1, json.dumps(plan, indent=1)


@pytest.mark.postgres
def test_the_dispatcher_keeps_the_claims_table_from_filling_with_dead_claims(connections):
    """Each batch's claims are inserted, then deleted as a worker starts it; until a VACUUM, their pages stay,
    and every claim's reads of the few live claims scan them all (autovacuum comes at most once a minute)."""
    from django.core.management import call_command

    from sync.delivery import leases

    target = connections["salesforce"]
    ids = _pending(target, 2000)
    now = timezone.now()
    for _ in range(len(ids) // 200):
        batch = _claim(target, 200, "owner-a")
        assert transitions.start(batch, owner="worker", lease_until=now + timedelta(minutes=2), now=now) == 200
    table = JobClaim._meta.db_table

    def pages() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_relation_size(%s) / current_setting('block_size')::int", [table])
            return int(cursor.fetchone()[0])

    before = pages()
    with transaction.atomic():
        assert leases.claims_vacuum() is False  # VACUUM cannot run in a transaction: skipped, not failed
    call_command("sync_dispatch", "--once")  # a pass vacuums them: every page was dead, so the table is empty

    assert before >= 10 and pages() == 0
