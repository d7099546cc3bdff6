"""The dashboard in a real headless Chromium: it loads behind the login, draws its charts from our own
static files, and a Retry button retries. Screenshots of both pages land in docs/screenshots when
RECORDSYNC_SCREENSHOTS=1 (otherwise in the test's temporary folder, so a test run leaves docs/ alone)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from sync.models import JobState, SyncJob
from tests.browser.conftest import World, full_page_screenshot, log_in

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHARTS = ["per_minute", "per_hour", "lag", "throttle"]

# For each chart: does Chart.js hold it, how many points it was given, and how many pixels it painted.
CHART_STATE = """
return Array.from(document.querySelectorAll('canvas[data-chart]')).map(function (canvas) {
  const chart = Chart.getChart(canvas);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted++; } }
  return {name: canvas.dataset.chart, drawn: chart !== undefined && chart !== null, painted: painted,
          points: chart ? chart.data.datasets.reduce((n, d) => n + d.data.filter(v => v !== null).length, 0) : 0,
          nonzero: chart ? chart.data.datasets.reduce((n, d) => n + d.data.filter(v => v > 0).length, 0) : 0};
});
"""


def _shot_dir(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("RECORDSYNC_SCREENSHOTS") == "1" else tmp_path


def _console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """Errors the page logged; the browser's own request for /favicon.ico (the admin has none) is not the page's."""
    return [
        e
        for e in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
    ]


def test_the_overview_loads_behind_the_admin_login_and_draws_every_chart_offline(
    browser: WebDriver, live_server: LiveServer, busy_world: World, staff_user: User, tmp_path: Path
) -> None:
    url = live_server.url + reverse("dashboard:overview")
    log_in(browser, url)
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return typeof Chart !== 'undefined'"))

    charts = {c["name"]: c for c in browser.execute_script(CHART_STATE)}

    assert sorted(charts) == sorted(CHARTS)
    for name in CHARTS:
        assert charts[name]["drawn"], name
        assert charts[name]["points"] > 0 and charts[name]["nonzero"] > 0, charts[name]
        assert charts[name]["painted"] > 1000, charts[name]  # bars, axes and labels, not a blank canvas
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Open alerts (2)" in body and "the circuit breaker has been open for 12 min" in body
    breakers = browser.find_element(By.ID, "breakers").text
    assert "outreach open 5" in breakers and "salesforce closed 0" in breakers
    processes = browser.find_element(By.ID, "processes").text
    assert "worker worker-7f9c 41 busy since" in processes and "dispatcher dispatch-5d0e 8 idle" in processes
    assert "worker worker-b21a 18 dead" in processes and "stalled" in processes
    # Offline: every script, style and image came from this server, none from a CDN.
    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert origins and all(o.startswith(live_server.url) for o in origins), origins
    assert any(o.endswith("/static/dashboard/vendor/chart.umd.min.js") for o in origins)
    assert _console_errors(browser) == []
    full_page_screenshot(browser, _shot_dir(tmp_path) / "dashboard-overview.png")


def test_a_retry_button_on_the_issues_page_puts_the_failed_job_back_to_pending(
    browser: WebDriver, live_server: LiveServer, busy_world: World, staff_user: User, tmp_path: Path
) -> None:
    url = live_server.url + reverse("dashboard:issues")
    log_in(browser, url)
    job = busy_world.failed
    row = browser.find_element(By.CSS_SELECTOR, f"tr.issue-job[data-job='{job.pk}']")
    assert "invalid email address: ada@@example.com" in row.text and '"Email": "ada@@example.com"' in row.text
    held = browser.find_element(By.CSS_SELECTOR, f"tr.issue-job[data-job='{busy_world.held.pk}']")
    assert held.find_elements(By.CSS_SELECTOR, "form.retry-job") == []  # a conflict is reviewed, never retried
    review = held.find_element(By.LINK_TEXT, "Review conflict").get_attribute("href") or ""
    assert review.endswith(reverse("admin:sync_syncconflict_resolve", args=[busy_world.conflict.pk]))
    full_page_screenshot(browser, _shot_dir(tmp_path) / "dashboard-issues.png")

    row.find_element(By.CSS_SELECTOR, "form.retry-job button").click()

    message = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    assert f"Retried 1 job(s) (job {job.pk})" in message.text
    job.refresh_from_db()
    assert (job.state, job.attempts) == (JobState.PENDING, 0)
    others = SyncJob.objects.filter(pk__in=[j.pk for j in busy_world.invalid_email[1:]])
    assert set(others.values_list("state", flat=True)) == {JobState.FAILED}  # only the one clicked
    assert browser.find_elements(By.CSS_SELECTOR, f"tr.issue-job[data-job='{job.pk}']") == []
    assert _console_errors(browser) == []
