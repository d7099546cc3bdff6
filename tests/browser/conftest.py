"""The dashboard's tests: a headless Chromium (Debian's chromium and chromium-driver) driven by Selenium,
and a busy world of rows to show it.

Without the browser the browser tests skip on a developer's machine; under RECORDSYNC_REQUIRE_SERVICES=1
(CI's second run, after .ci/run installed it) they fail instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from django_redis import get_redis_connection
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from crms.models import Connection
from sync.delivery import config
from sync.delivery.throttle import quota_key, redis_keys, throttle
from sync.models import (
    Alert,
    AttemptOutcome,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ConfigOverride,
    JobState,
    SyncAttempt,
    SyncConflict,
    SyncEvent,
    SyncJob,
)
from tests.conftest import REQUIRE_SERVICES

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
STAFF, PASSWORD = "ops", "dashboard-tests-only"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's chromium through chromium-driver")


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        reason = f"needs {' and '.join(missing)}: apt-get install chromium chromium-driver"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver: WebDriver, url: str) -> None:
    """Open `url` as a stranger: the admin login form comes first, and leads back to it."""
    driver.get(url)
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "id_username")))
    assert "/admin/login/" in driver.current_url
    driver.find_element(By.ID, "id_username").send_keys(STAFF)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(driver, 10).until(ec.url_to_be(url))


def full_page_screenshot(driver: WebDriver, path: Path) -> None:
    """Headless Chromium shoots the viewport: make the viewport as tall as the page, let the charts fit it, shoot."""
    chrome = int(driver.execute_script("return window.outerHeight - window.innerHeight"))
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1400, min(height + chrome, 6000))
    driver.execute_script("document.querySelectorAll('canvas').forEach(c => Chart.getChart(c)?.resize())")
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path))


@dataclass
class World:
    failed: SyncJob  # a salesforce job refused for its data
    held: SyncJob
    conflict: SyncConflict
    invalid_email: list[SyncJob]


@pytest.fixture
def staff_user(transactional_db: None) -> User:
    return User.objects.create_superuser(STAFF, "ops@example.com", PASSWORD)


@pytest.fixture
def busy_world(transactional_db: None) -> Iterator[World]:
    """A realistic day: four connections (two sharing one org's allowance), a day of attempts, synced, pending,
    failed and held jobs, an open breaker, throttle calls in the window, two open alerts and a resolved one."""
    now = timezone.now()
    sf = Connection.objects.create(name="salesforce", kind="salesforce", quota_owner="org-acme")
    sf_eu = Connection.objects.create(name="salesforce-eu", kind="salesforce", quota_owner="org-acme")
    outreach = Connection.objects.create(name="outreach", kind="outreach")
    system_a = Connection.objects.create(name="system_a", kind="system_a")
    _throttle_calls({sf: 212, outreach: 87, system_a: 31}, limited=outreach)
    synced = [
        job_with_event(sf if i % 3 else outreach, f"c-{1000 + i}", JobState.SYNCED, now - timedelta(minutes=i))
        for i in range(30)
    ]
    _attempts(synced, now)
    for i, (target, age) in enumerate([(outreach, 840), (outreach, 610), (sf, 45), (sf_eu, 20), (system_a, 12)]):
        job_with_event(target, f"c-{2000 + i}", JobState.PENDING, now - timedelta(seconds=age))
    job_with_event(
        outreach,
        "c-2100",
        JobState.RETRYING,
        now - timedelta(minutes=9),
        next_attempt_at=now,
        last_error_code="HTTP_503",
        last_error_message="503 Service Unavailable",
    )
    invalid = _failed_jobs(sf, outreach, now)
    conflict, held = _held_job(sf, now)
    _incidents(sf, outreach, now)
    _processes(now)
    yield World(failed=invalid[0], held=held, conflict=conflict, invalid_email=invalid)
    _throttle_forget([sf, outreach, system_a])


def _processes(now: datetime) -> None:
    """Two worker containers (one with a busy worker), the dispatcher, and a worker killed a minute ago."""
    from sync.models import ProcessBeat

    rows = [
        ("worker", "worker-7f9c", 41, "busy", 2, 9),
        ("worker", "worker-7f9c", 42, "idle", 1, None),
        ("worker", "worker-b21a", 17, "idle", 3, None),
        ("dispatcher", "dispatch-5d0e", 8, "idle", 1, None),
        ("worker", "worker-b21a", 18, "dead", 64, None),
    ]
    for role, host, pid, state, age, busy_for in rows:
        ProcessBeat.objects.create(
            key=f"{host}:{pid}",
            role=role,
            host=host,
            pid=pid,
            state=state,
            group=1 if role == "worker" else None,
            beat_at=now - timedelta(seconds=age),
            task_started_at=now - timedelta(seconds=busy_for) if busy_for else None,
        )


def _throttle_calls(calls: dict[Connection, int], *, limited: Connection) -> None:
    """600 calls a minute for everyone, 100 for `limited`; the calls taken through the throttle itself."""
    ConfigOverride.objects.create(scope="global", values={"rate_limit_calls": 600, "rate_limit_window": 60})
    ConfigOverride.objects.create(
        scope=f"connection:{limited.name}",
        connection=limited,
        values={"rate_limit_calls": 100, "rate_limit_window": 60},
    )
    config.forget()
    backend = throttle()
    for connection, count in calls.items():
        for _ in range(count):
            backend.acquire(quota_key(connection), 10_000, 60.01)


def _failed_jobs(sf: Connection, outreach: Connection, now: datetime) -> list[SyncJob]:
    """Three refused for their data, two given up after a run of 503s, one missing a required field."""
    invalid = [
        job_with_event(
            sf,
            f"c-{3000 + i}",
            JobState.FAILED,
            now - timedelta(minutes=95 - 20 * i),
            attempts=1,
            last_error_code="INVALID_EMAIL_ADDRESS",
            last_error_permanent=True,
            last_error_message=f"Email: invalid email address: {name}@@example.com",
            fields={"Email": f"{name}@@example.com", "FirstName": name.title(), "LastName": "Example"},
        )
        for i, name in enumerate(["ada", "grace", "edsger"])
    ]
    for i in range(2):
        job_with_event(
            outreach,
            f"c-{3100 + i}",
            JobState.FAILED,
            now - timedelta(minutes=40 - i),
            attempts=8,
            last_error_code="HTTP_503",
            received_before=timedelta(minutes=38),
            last_error_message="503 Service Unavailable: gave up after 8 attempts",
            fields={"emails": [f"lin{i}@example.com"], "firstName": "Lin"},
        )
    job_with_event(
        outreach,
        "c-3200",
        JobState.FAILED,
        now - timedelta(minutes=3),
        attempts=1,
        last_error_code="REQUIRED_FIELD_MISSING",
        last_error_permanent=True,
        last_error_message="lastName required to create a prospect in outreach; nothing was sent",
        fields={"emails": ["nolast@example.com"]},
    )
    return invalid


def _held_job(sf: Connection, now: datetime) -> tuple[SyncConflict, SyncJob]:
    conflict = SyncConflict.objects.create(
        record_id="c-4000",
        object_type="contact",
        connection=sf,
        external_object="Contact",
        external_id="003XX1",
        policy="manual",
        fields=["Phone"],
        base={"Phone": "+44 20 7946 0000"},
        system_a_values={"Phone": "+44 20 7946 0001"},
        crm_values={"Phone": "+44 20 7946 0999"},
        detected_at=now - timedelta(minutes=27),
    )
    held = job_with_event(
        sf,
        "c-4000",
        JobState.HELD,
        now - timedelta(minutes=27),
        last_error_code="CONFLICT_HELD",
        last_error_message=f"conflict {conflict.pk} waits for review",
        fields={"Phone": "+44 20 7946 0001"},
    )
    return conflict, held


def _incidents(sf: Connection, outreach: Connection, now: datetime) -> None:
    """Outreach down for 12 minutes (breaker open, two open alerts); salesforce recovered three hours ago."""
    opened = now - timedelta(minutes=12)
    CircuitBreaker.objects.create(
        connection=outreach,
        state=BreakerState.OPEN,
        failures=5,
        opened_at=opened,
        last_error="HTTP 503 from api.outreach.io: Service Unavailable",
    )
    CircuitBreaker.objects.create(connection=sf, state=BreakerState.CLOSED)
    history = [
        (sf, now - timedelta(hours=3, minutes=5), "closed", "open"),
        (sf, now - timedelta(hours=3), "half_open", "closed"),
        (outreach, opened, "closed", "open"),
    ]
    BreakerTransition.objects.bulk_create(
        BreakerTransition(connection=c, at=at, from_state=old, to_state=new) for c, at, old, new in history
    )
    Alert.objects.create(
        connection=outreach,
        kind="breaker_open",
        value=720,
        threshold=300,
        opened_at=now - timedelta(minutes=7),
        message="outreach: the circuit breaker has been open for 12 min (threshold 5 min): "
        "HTTP 503 from api.outreach.io",
    )
    Alert.objects.create(
        connection=outreach,
        kind="lag",
        value=840,
        threshold=600,
        opened_at=now - timedelta(minutes=4),
        message="outreach: the oldest due job has waited 14 min (threshold 10 min)",
    )
    Alert.objects.create(
        connection=sf,
        kind="breaker_open",
        state="resolved",
        value=300,
        threshold=300,
        opened_at=now - timedelta(hours=3, minutes=5),
        resolved_at=now - timedelta(hours=3),
        message="salesforce: the circuit breaker was open for 5 min",
    )


def _throttle_forget(connections: list[Connection]) -> None:
    """Redis outlives the test database: leave no calls in the shared window."""
    if settings.REDIS_URL:
        get_redis_connection("default").delete(*[k for c in connections for k in redis_keys(quota_key(c))])


def job_with_event(
    target: Connection,
    record_id: str,
    state: str,
    at: datetime,
    *,
    fields: dict[str, Any] | None = None,
    received_before: timedelta = timedelta(seconds=2),
    **values: Any,
) -> SyncJob:
    """A job and the event behind it, routed as the rules route a contact (the target's own field names)."""
    email = f"{record_id}@example.com"
    received = at - received_before
    event = SyncEvent.objects.create(
        idempotency_key=f"{record_id}-{target.name}",
        request_hash="0" * 64,
        source="system_a",
        operation="update",
        object_type="contact",
        record_id=record_id,
        payload={"email": email},
        occurred_at=received,
        received_at=received,
        routing={
            "mode": "rules",
            "matched": ["contacts-with-email"],
            "payloads": {target.name: {"object": "Contact", "fields": fields or {"Email": email}}},
        },
    )
    return SyncJob.objects.create(
        source="system_a",
        object_type="contact",
        record_id=record_id,
        target=target,
        state=state,
        last_event=event,
        last_occurred_at=at,
        created_at=at,
        updated_at=at,
        **values,
    )


def _attempts(jobs: list[SyncJob], now: datetime) -> None:
    """A day of traffic: busier in working hours, a burst of 503s from outreach forty minutes ago."""
    rows: list[SyncAttempt] = []
    for minute in range(24 * 60):
        if minute >= 60 and minute % 3:  # every minute of the last hour, every third before
            continue
        at = now - timedelta(minutes=minute, seconds=7)
        busy = 3 + minute % 4 if minute < 60 else 1 + (minute // 60) % 5
        for n in range(busy):
            job = jobs[(minute + n) % len(jobs)]
            error = (35 <= minute <= 50 and n % 2 == 0) or (minute + n) % 41 == 0
            rows.append(
                SyncAttempt(
                    job=job,
                    version=1,
                    started_at=at - timedelta(milliseconds=300),
                    finished_at=at,
                    outcome=AttemptOutcome.ERROR if error else AttemptOutcome.SUCCESS,
                    error_code="HTTP_503" if error else "",
                    duration_ms=300,
                )
            )
    SyncAttempt.objects.bulk_create(rows)
