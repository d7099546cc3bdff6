"""The throttle obeys the target: Sforce-Limit-Info and X-RateLimit-* near the cap slow calls down,
a 429's Retry-After and REQUEST_LIMIT_EXCEEDED stop them, for every worker sharing the quota owner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from crms.base import QuotaSignal
from crms.models import Connection
from crms.outreach import errors as outreach_errors
from crms.salesforce import errors as salesforce_errors
from sync.delivery.throttle import DatabaseThrottle, RedisThrottle, Throttled, gate_for, obey, observer_for
from sync.models import ThrottleLimit

FIXTURES = Path(__file__).resolve().parent.parent / "crms" / "salesforce" / "fixtures"


def answer(status: int = 200, headers: dict[str, str] | None = None, body: Any = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = json.dumps(body if body is not None else {}).encode()
    return response


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [2_000_000.0]
    monkeypatch.setattr(DatabaseThrottle, "clock", staticmethod(lambda: now[0]))
    return now


# --- reading the signals ---------------------------------------------------------------------------


def test_salesforce_usage_is_read_from_the_vendor_examples_and_the_fuller_allowance_binds():
    examples = json.loads((FIXTURES / "simple_salesforce_extracted_fixtures.json").read_text())
    header = examples["sforce_limit_info_header_examples"][1]["value"]  # api-usage 25/5000, per-app 17/250

    signal = salesforce_errors.quota_signal(answer(headers={"Sforce-Limit-Info": header}))

    assert signal == QuotaSignal(used=17, cap=250, resets_in=24 * 3600)


def test_salesforce_request_limit_exceeded_and_429_ask_for_a_pause():
    exceeded = answer(403, body=[{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}])
    forbidden = answer(403, body=[{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}])

    # The daily allocation says nothing of when it refills: held until a probe finds it back.
    assert salesforce_errors.quota_signal(exceeded) == QuotaSignal(
        pause_for=salesforce_errors.limit_pause_seconds(), probe=True
    )
    assert salesforce_errors.quota_signal(answer(429, headers={"Retry-After": "7"})) == QuotaSignal(pause_for=7.0)
    assert salesforce_errors.quota_signal(forbidden) is None


def test_outreach_rate_headers_take_the_smaller_remaining_and_a_429_its_reset():
    headers = {"X-RateLimit-Limit": "10000", "X-RateLimit-Remaining": "9999, 19988", "X-RateLimit-Reset": "1000600"}

    signal = outreach_errors.quota_signal(answer(headers=headers), now=1_000_000.0)
    limited = outreach_errors.quota_signal(answer(429, headers={"X-RateLimit-Reset": "1000030"}), now=1_000_000.0)

    assert signal == QuotaSignal(used=1, cap=10000, resets_in=600.0)
    assert limited == QuotaSignal(pause_for=30.0)


# --- deciding --------------------------------------------------------------------------------------


def test_below_the_share_nothing_changes():
    assert obey(QuotaSignal(used=899, cap=1000, resets_in=3600), window=1, share=0.9) is None


def test_past_the_share_the_calls_left_are_spread_until_the_allowance_refills():
    fast = obey(QuotaSignal(used=9000, cap=10000, resets_in=100), window=1, share=0.9)  # 1000 calls in 100 s
    slow = obey(QuotaSignal(used=95, cap=100, resets_in=3600), window=1, share=0.9)  # 5 calls in an hour

    assert fast is not None and fast.cap == (10, 1.0) and fast.cap_for == 60
    assert slow is not None and slow.cap == (1, 720.0)


def test_an_exhausted_allowance_or_an_explicit_pause_holds_every_call():
    spent = obey(QuotaSignal(used=10000, cap=10000, resets_in=120), window=1, share=0.9)
    paused = obey(QuotaSignal(pause_for=30), window=1, share=0.9)

    assert spent is not None and (spent.hold, spent.cap) == (120, None)
    assert paused is not None and paused.hold == 30


def test_the_share_is_configurable():
    signal = QuotaSignal(used=600, cap=1000, resets_in=3600)

    assert obey(signal, window=1, share=0.5) is not None
    assert obey(signal, window=1, share=0.9) is None


# --- storing and obeying (database backend, clock moved by hand) -----------------------------------


@pytest.mark.django_db
def test_a_hold_stops_every_call_until_it_ends_and_a_shorter_one_never_shortens_it(clock):
    throttle = DatabaseThrottle()
    throttle.hold("org-1", 30)
    throttle.hold("org-1", 5)  # another worker heard a shorter pause

    during = throttle.acquire("org-1", 0, 1)
    clock[0] += 30.01
    after = throttle.acquire("org-1", 0, 1)

    assert during == pytest.approx(30) and after == 0.0


@pytest.mark.django_db
def test_a_cap_limits_calls_even_without_a_limit_of_our_own_and_then_expires(clock):
    throttle = DatabaseThrottle()
    throttle.cap("org-1", 2, 10, seconds=60)

    granted = [throttle.acquire("org-1", 0, 1) for _ in range(2)]
    refused = throttle.acquire("org-1", 0, 1)
    clock[0] += 61
    free = [throttle.acquire("org-1", 0, 1) for _ in range(5)]

    assert granted == [0.0, 0.0] and refused == pytest.approx(10)
    assert free == [0.0] * 5


@pytest.mark.django_db
def test_our_limit_and_the_targets_cap_both_apply(clock):
    throttle = DatabaseThrottle()
    throttle.cap("org-1", 3, 60, seconds=600)

    waits = []
    for _ in range(8):
        waits.append(throttle.acquire("org-1", 2, 1))
        clock[0] += 0.3

    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # ours: 2 per second
    assert sum(1 for w in waits if w == 0) == 3  # the target's: 3 per minute


@pytest.mark.django_db
def test_the_observer_turns_an_answer_into_a_hold_shared_by_connections_of_one_owner(clock):
    a = Connection.objects.create(name="sf-sales", kind="salesforce", quota_owner="org-9")
    b = Connection.objects.create(name="sf-support", kind="salesforce", quota_owner="org-9")
    observe = observer_for(a, window=1, share_percent=90, backend=DatabaseThrottle(), clock=lambda: clock[0])
    assert observe is not None

    observe(answer(403, body=[{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]))

    with pytest.raises(Throttled) as raised:
        gate_for(b, limit=0, window=1, backend=DatabaseThrottle())()
    assert raised.value.retry_after == pytest.approx(salesforce_errors.limit_pause_seconds())
    assert ThrottleLimit.objects.get(key="org-9").hold_until is not None


@pytest.mark.django_db
def test_usage_past_the_share_caps_the_owner_through_the_observer(clock):
    sf = Connection.objects.create(name="sf", kind="salesforce", quota_owner="org-3")
    observe = observer_for(sf, window=1, share_percent=90, backend=DatabaseThrottle(), clock=lambda: clock[0])
    assert observe is not None

    observe(answer(headers={"Sforce-Limit-Info": "api-usage=50/5000"}))
    assert not ThrottleLimit.objects.exists()
    observe(answer(headers={"Sforce-Limit-Info": "api-usage=4990/5000"}))

    row = ThrottleLimit.objects.get(key="org-3")
    assert row.cap_calls == 1 and row.cap_seconds == pytest.approx(24 * 3600 / 10)


# --- the same against real Redis -------------------------------------------------------------------


@pytest.fixture
def redis_keys() -> Any:
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    keys = ["recordsync:throttle:org-sig", "recordsync:throttle-hold:org-sig", "recordsync:throttle-cap:org-sig"]
    redis.delete(*keys)
    yield redis
    redis.delete(*keys)


@pytest.mark.redis
def test_redis_holds_and_caps_are_kept_by_the_server(redis_keys):
    throttle = RedisThrottle()

    throttle.cap("org-sig", 2, 30, seconds=60)
    granted = [throttle.acquire("org-sig", 0, 1) for _ in range(2)]
    capped = throttle.acquire("org-sig", 0, 1)
    throttle.hold("org-sig", 45)
    throttle.hold("org-sig", 2)
    held = throttle.acquire("org-sig", 0, 1)

    assert granted == [0.0, 0.0] and 29 < capped <= 30
    assert 44 < held <= 45
    assert redis_keys.pttl("recordsync:throttle-cap:org-sig") > 59_000


@pytest.mark.redis
def test_redis_with_no_limit_and_no_signal_records_nothing(redis_keys):
    assert RedisThrottle().acquire("org-sig", 0, 1) == 0.0
    assert not redis_keys.exists("recordsync:throttle:org-sig")
