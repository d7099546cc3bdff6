"""The Connect button in a real browser: a staff user links Outreach, HubSpot and Salesforce accounts through the
mock CRMs' own consent pages, and comes back to the connection page showing the account. Screenshots of
each page land in docs/screenshots when RECORDSYNC_SCREENSHOTS=1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from crms import secrets as secret_box
from crms.models import Connection
from tests.browser.conftest import full_page_screenshot, log_in
from tests.crms.test_connect import APPS, hubspot_app

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _shots(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("RECORDSYNC_SCREENSHOTS") == "1" else tmp_path


def _wait(browser: WebDriver, element_id: str) -> Any:
    return WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, element_id)))


@pytest.mark.parametrize(
    ("kind", "account"),
    [
        ("outreach", "integration@example.com"),
        ("hubspot", "recordsync-mock.hubspot.com"),
        ("salesforce", "/mock/salesforce"),
    ],
)
def test_a_staff_user_connects_an_account_by_clicking_through_the_consent_page(
    browser: WebDriver, live_server: Any, staff_user: User, tmp_path: Path, kind: str, account: str
) -> None:
    connection = APPS[kind](live_server.url)
    page = live_server.url + reverse("admin:crms_connection_change", args=[connection.pk])
    log_in(browser, page)
    full_page_screenshot(browser, _shots(tmp_path) / f"connect-{kind}-before.png")

    _wait(browser, "oauth-connect").click()
    _wait(browser, "allow")  # the provider's consent page
    assert "/mock/" in browser.current_url and "code_challenge=" in browser.current_url
    full_page_screenshot(browser, _shots(tmp_path) / f"connect-{kind}-consent.png")
    browser.find_element(By.ID, "allow").click()

    shown = _wait(browser, "oauth-account")
    assert account in shown.text and browser.current_url == page
    assert "connected to" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    assert secret_box.decrypt(Connection.objects.get(pk=connection.pk).secrets_encrypted)["refresh_token"]
    full_page_screenshot(browser, _shots(tmp_path) / f"connect-{kind}-linked.png")


def test_cancel_on_the_consent_page_comes_back_refused_and_stores_nothing(
    browser: WebDriver, live_server: Any, staff_user: User, tmp_path: Path
) -> None:
    connection = hubspot_app(live_server.url)
    log_in(browser, live_server.url + reverse("admin:crms_connection_change", args=[connection.pk]))

    _wait(browser, "oauth-connect").click()
    _wait(browser, "deny").click()

    assert "access_denied" in _wait(browser, "connect-refused").text
    assert "refresh_token" not in secret_box.decrypt(Connection.objects.get(pk=connection.pk).secrets_encrypted)
    full_page_screenshot(browser, _shots(tmp_path) / "connect-refused.png")
