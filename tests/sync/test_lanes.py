"""Lanes (issue 18): live changes first, then reads and polls, then backfill and reconcile, in the dispatcher's
claim and at the quota owner's one window. The end-to-end proof with a real cluster is in
test_cluster_proofs.py (a backfill at the limit, a live change through on time)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from crms.base import NotSent
from crms.models import Connection
from sync import transitions
from sync.contracts import EventInput
from sync.delivery import engine, leases
from sync.delivery.throttle import DatabaseThrottle, RedisThrottle, gate_for, lane_limit, lane_share
from sync.ingest.services import event_ingest
from sync.models import JobState, Lane, SyncJob
from sync.ops.config_services import config_override_set


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [2_000_000.0]
    monkeypatch.setattr(DatabaseThrottle, "clock", staticmethod(lambda: now[0]))
    return now


def shares(live: int = 20, read: int = 10) -> dict[Lane, float]:
    return {lane: lane_share(lane, live_reserve_percent=live, read_reserve_percent=read) for lane in Lane}


def test_each_lane_sees_the_window_full_sooner_than_the_lane_before_it():
    share = shares()

    assert [lane_limit(10, share[lane]) for lane in Lane] == [10, 8, 7]
    assert [lane_limit(100, share[lane]) for lane in Lane] == [100, 80, 70]
    assert lane_limit(1, share[Lane.BULK]) == 1  # never shut out entirely
    assert [lane_limit(10, s) for s in shares(live=0, read=0).values()] == [10, 10, 10]


def fill(throttle: Any, key: str, lane_share_: float, limit: int = 10, window: float = 10.0) -> int:
    granted = 0
    while throttle.acquire(key, limit, window, share=lane_share_) == 0.0:
        granted += 1
        assert granted <= limit, "a lane was granted more than the whole window"
    return granted


@pytest.mark.django_db
def test_a_backfill_at_its_share_leaves_the_live_reserve_free_in_the_database_window(clock):
    throttle, share = DatabaseThrottle(), shares()

    backfill = fill(throttle, "org-lanes", share[Lane.BULK])
    reads = fill(throttle, "org-lanes", share[Lane.READ])
    live = fill(throttle, "org-lanes", share[Lane.LIVE])

    assert (backfill, reads, live) == (7, 1, 2)
    waited = throttle.acquire("org-lanes", 10, 10.0, share=share[Lane.BULK])
    assert 0 < waited <= 10.0


@pytest.mark.redis
def test_a_backfill_at_its_share_leaves_the_live_reserve_free_in_the_redis_window():
    from django_redis import get_redis_connection

    get_redis_connection("default").delete("recordsync:throttle:org-lanes-redis")
    throttle, share = RedisThrottle(), shares()

    backfill = fill(throttle, "org-lanes-redis", share[Lane.BULK])
    reads = fill(throttle, "org-lanes-redis", share[Lane.READ])
    live = fill(throttle, "org-lanes-redis", share[Lane.LIVE])

    assert (backfill, reads, live) == (7, 1, 2)


@pytest.mark.django_db
def test_the_gate_of_a_backfill_hands_back_where_a_live_gate_still_goes(clock):
    sf = Connection.objects.create(name="sf-lanes", kind="salesforce", quota_owner="org-gate")
    share = shares()
    bulk = gate_for(sf, limit=10, window=30, backend=DatabaseThrottle(), lane=Lane.BULK, share=share[Lane.BULK])
    live = gate_for(sf, limit=10, window=30, backend=DatabaseThrottle(), lane=Lane.LIVE, share=share[Lane.LIVE])

    for _ in range(7):
        bulk()()
    with pytest.raises(NotSent):
        bulk()
    live()()  # the reserve is there


# --- the dispatcher's claim ----------------------------------------------------------------------------


def items(prefix: str, count: int, target: str = "salesforce") -> list[EventInput]:
    return [
        EventInput(
            operation="create",
            object_type="Contact",
            record_id=f"{prefix}{n}",
            source="system_a",
            data={"LastName": f"L{n}", "Email": f"{prefix}{n}@example.com"},
            targets=[target],
            occurred_at=None,
            event_id=None,
            raw={"record_id": f"{prefix}{n}", "lane": "test"},
        )
        for n in range(count)
    ]


def ingest(batch: list[EventInput], lane: Lane) -> None:
    event_ingest(items=batch, idempotency_key=None, is_batch=True, request_id="test", lane=lane)


@pytest.mark.django_db(transaction=True)
def test_a_live_change_to_a_record_a_backfill_queued_moves_its_job_to_the_live_lane(connections):
    ingest(items("r-", 2), Lane.BULK)
    assert set(SyncJob.objects.values_list("lane", flat=True)) == {Lane.BULK}

    ingest(items("r-", 1), Lane.LIVE)
    ingest(items("r-", 1), Lane.BULK)  # a backfill replaying it again does not push it back

    lanes = dict(SyncJob.objects.values_list("record_id", "lane"))
    assert lanes == {"r-0": Lane.LIVE, "r-1": Lane.BULK}


@pytest.mark.django_db(transaction=True)
def test_a_job_that_sent_its_state_takes_the_lane_of_the_next_change(connections):
    ingest(items("s-", 1), Lane.LIVE)
    SyncJob.objects.update(state=JobState.SYNCED)

    ingest(items("s-", 1), Lane.BULK)

    job = SyncJob.objects.get()
    assert (job.state, job.lane) == (JobState.PENDING, Lane.BULK)


@pytest.mark.django_db(transaction=True)
def test_the_dispatcher_claims_live_changes_before_an_older_backfill(connections, monkeypatch):
    config_override_set(values={"batch_size": 5, "flush_interval": 0}, connection="salesforce", actor="test")
    monkeypatch.setattr(leases, "outstanding_limit", lambda now: 2)
    ingest(items("b-", 40), Lane.BULK)
    SyncJob.objects.update(updated_at=timezone.now() - timedelta(minutes=5))  # the backlog is older
    ingest(items("live-", 1), Lane.LIVE)

    batches = engine.batches_claim(connection=connections["salesforce"], now=timezone.now())

    lanes = [set(SyncJob.objects.filter(id__in=ids).values_list("lane", flat=True)) for ids in batches]
    assert lanes[0] == {Lane.LIVE}
    assert all(lane == {Lane.BULK} for lane in lanes[1:])
    assert len(batches) == 2  # the back-pressure limit holds for the backlog


@pytest.mark.django_db(transaction=True)
def test_a_backlog_that_fills_every_place_still_leaves_a_live_change_one(connections, monkeypatch):
    config_override_set(values={"batch_size": 5, "flush_interval": 0}, connection="salesforce", actor="test")
    monkeypatch.setattr(leases, "outstanding_limit", lambda now: 2)
    ingest(items("b-", 40), Lane.BULK)
    first = engine.batches_claim(connection=connections["salesforce"], now=timezone.now())
    assert len(first) == 2  # every place taken by the backfill
    assert engine.batches_claim(connection=connections["salesforce"], now=timezone.now()) == []

    ingest(items("live-", 1), Lane.LIVE)
    live = engine.batches_claim(connection=connections["salesforce"], now=timezone.now())

    assert len(live) == 1
    assert set(SyncJob.objects.filter(id__in=live[0]).values_list("record_id", flat=True)) == {"live-0"}


@pytest.mark.django_db(transaction=True)
def test_a_full_batch_of_another_object_goes_while_the_lanes_oldest_few_wait_for_the_flush(connections):
    # The claim walks a lane from its oldest job: a group that is neither a full batch nor old enough is set
    # aside, and the walk goes on to the next object's jobs instead of stopping there.
    config_override_set(values={"batch_size": 5, "flush_interval": 60}, connection="salesforce", actor="test")
    ingest(items("few-", 2), Lane.LIVE)
    ingest([replace(item, object_type="Lead") for item in items("lead-", 5)], Lane.LIVE)
    ingest([replace(item, object_type="Account") for item in items("acc-", 3)], Lane.LIVE)

    batches = engine.batches_claim(connection=connections["salesforce"], now=timezone.now())

    assert len(batches) == 1
    assert set(SyncJob.objects.filter(id__in=batches[0]).values_list("object_type", flat=True)) == {"Lead"}
    waiting = transitions.unclaimed(SyncJob.objects.filter(state=JobState.PENDING), now=timezone.now())
    assert waiting.count() == 5  # 2 contacts and 3 accounts wait, unclaimed

    later = engine.batches_claim(connection=connections["salesforce"], now=timezone.now() + timedelta(seconds=61))
    claimed = [set(SyncJob.objects.filter(id__in=ids).values_list("object_type", flat=True)) for ids in later]
    assert claimed == [{"Contact"}, {"Account"}]  # once old enough, oldest first, one object per batch
