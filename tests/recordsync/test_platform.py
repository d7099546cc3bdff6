"""Tokens, health, settings, logs and the published API docs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import OperationalError
from knox.models import AuthToken

from recordsync.auth import VERIFIED_TTL_SECONDS, TokenAuthentication
from recordsync.env import env_bool, env_int, env_str
from sync.api.auth import api_token_create

ROOT = Path(__file__).resolve().parents[2]


# --- tokens ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_api_token_prints_one_line_that_authenticates(anon, connections):
    out = StringIO()
    call_command("create_api_token", "platform-team", stdout=out)
    token = out.getvalue().strip()

    assert out.getvalue().count("\n") == 1 and len(token) == 64
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get("/v1/sync/status/none").status_code == 404  # authenticated, record unknown


@pytest.mark.django_db
def test_tokens_are_stored_hashed_never_in_plaintext(connections):
    out = StringIO()
    call_command("create_api_token", "ops", "--staff", stdout=out)
    token = out.getvalue().strip()

    row = AuthToken.objects.get()
    assert row.user.is_staff
    assert token not in row.digest and row.digest != token
    assert len(row.digest) == 128  # SHA-512 hex
    assert row.expiry is None


@pytest.mark.django_db
def test_running_it_twice_keeps_one_user_with_two_tokens():
    call_command("create_api_token", "ops", stdout=StringIO())
    call_command("create_api_token", "ops", stdout=StringIO())

    assert AuthToken.objects.filter(user__username="ops").count() == 2


# --- health ---------------------------------------------------------------------------------------


def test_healthz_answers_without_auth(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency(client):
    body = client.get("/readyz").json()

    assert body["status"] == "ready"
    assert body["checks"] == {"database": "up", "broker": "up", "cache": "up"}


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_is_unreachable(client, monkeypatch):
    def unreachable(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr("recordsync.health.connection.cursor", unreachable)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "down"


@pytest.mark.django_db
def test_a_load_balancer_probe_by_private_address_is_answered_but_nothing_else_is(client, settings):
    settings.ALLOWED_HOSTS = ["sync.example.com"]

    probe = client.get("/readyz", HTTP_HOST="10.0.1.23:8000")  # how an AWS ALB addresses a task
    alive = client.get("/healthz", HTTP_HOST="10.0.1.23:8000")
    other = client.get("/v1/sync/status/c-1", HTTP_HOST="10.0.1.23:8000")

    assert (probe.status_code, probe.json()["status"]) == (200, "ready")
    assert alive.status_code == 200
    assert other.status_code == 400  # the Host check still guards everything else


# --- settings -------------------------------------------------------------------------------------


def test_env_helpers_fail_loudly_on_values_they_cannot_read(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    monkeypatch.setenv("X_NUM", "ten")
    monkeypatch.setenv("X_SMALL", "0")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='maybe' is not a boolean"):
        env_bool("X_FLAG")
    with pytest.raises(ImproperlyConfigured, match="X_NUM='ten' is not a whole number"):
        env_int("X_NUM", 1)
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_int("X_SMALL", 1, minimum=1)


def test_secrets_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))

    assert env_str("X_SECRET") == "from-a-file"


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DEBUG",
            "SECRET_KEY",
            "SECURE_SSL_REDIRECT",
            "STATIC_MANIFEST",
            "MOCK_CRMS_ENABLED",
            "MOCK_CRMS_FORCE",
            "METRICS_ALLOWED_NETWORKS",
            "EGRESS_ALLOWED_NETWORKS",
        }  # the test-only defaults (pyproject.toml)
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off(tmp_path):
    result = _manage("check", DEBUG="0", RECORDSYNC_VAR_DIR=str(tmp_path))

    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr


def test_the_mock_crms_are_refused_with_debug_off_unless_forced_and_then_loudly(tmp_path):
    """Issue 15: MOCK_CRMS_ENABLED=1 with DEBUG off served fake CRMs with well-known secrets, silently."""
    production = {"DEBUG": "0", "SECRET_KEY": "p" * 50, "RECORDSYNC_VAR_DIR": str(tmp_path), "MOCK_CRMS_ENABLED": "1"}

    refused = _manage("check", **production)
    forced = _manage("check", **production, MOCK_CRMS_FORCE="1")

    assert refused.returncode != 0 and "MOCK_CRMS_ENABLED is on with DEBUG off" in refused.stderr
    assert forced.returncode == 0 and "MOCK_CRMS_FORCE: the mock CRMs are served with DEBUG off" in forced.stderr


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "x9" * 20,
        ALLOWED_HOSTS="sync.example.com",
        RECORDSYNC_VAR_DIR=str(tmp_path),
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_migrations_match_the_models():
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


# --- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[StringIO]:
    """What the configured stdout handler would print, through its own formatter and filter."""
    configured = next(h for h in logging.getLogger().handlers if h.get_name() == "stdout")
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(configured.formatter)
    for log_filter in configured.filters:
        handler.addFilter(log_filter)
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


@pytest.mark.django_db
def test_each_request_and_event_logs_one_json_line_with_its_ids(api, connections, json_log):
    body = {"operation": "create", "record_id": "c-7", "object_type": "contact", "data": {"email": "x@example.com"}}
    response = api.post("/v1/sync/", data=json.dumps(body), content_type="application/json", HTTP_X_REQUEST_ID="req-42")

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    accepted = next(line for line in lines if line["message"] == "event accepted")
    access = next(line for line in lines if line["message"] == "request")
    assert accepted["request_id"] == access["request_id"] == response["X-Request-ID"] == "req-42"
    assert accepted["event_id"] == response.json()["event_id"]
    assert accepted["record_id"] == "c-7"
    assert access["status"] == 202 and access["path"] == "/v1/sync/"
    assert access["time"].endswith("+00:00")
    assert any(line["message"] == "job state" and line["record_id"] == "c-7" for line in lines)


def test_a_forged_request_id_is_replaced(client, caplog):
    caplog.set_level(logging.INFO)

    response = client.get("/healthz", HTTP_X_REQUEST_ID='bad"\nid')

    assert response["X-Request-ID"] != 'bad"\nid'
    assert len(response["X-Request-ID"]) == 32


# --- API docs -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_schema_needs_a_token(client, api):
    assert client.get("/v1/schema/").status_code == 401
    schema = api.get("/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    ingest = schema["paths"]["/v1/sync/"]["post"]
    assert set(ingest["responses"]) == {
        "202",
        "400",
        "401",
        "403",
        "409",
        "413",
        "415",
        "429",
        "500",
        "503",
    }  # 403: scopes
    assert set(schema["paths"]["/v1/sync/status/{record_id}"]["get"]["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "429",
        "500",
        "503",
    }


@pytest.mark.django_db
def test_swagger_ui_is_served_from_our_own_static_files(client, django_user_model):
    assert client.get("/docs").status_code == 302  # to the admin login

    client.force_login(django_user_model.objects.create(username="ops", is_staff=True))
    page = client.get("/docs").content.decode()

    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()


@pytest.mark.django_db
def test_a_token_revoked_in_the_admin_is_refused_at_once(anon, connections, admin_client):
    token = api_token_create(username="platform")
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get("/v1/sync/status/none").status_code == 404  # verified, and now trusted for a while

    row = AuthToken.objects.get(user__username="platform")
    admin_client.post(f"/admin/knox/authtoken/{row.pk}/delete/", {"post": "yes"})

    assert not AuthToken.objects.filter(pk=row.pk).exists()
    assert anon.get("/v1/sync/status/none").status_code == 401


@pytest.mark.django_db
def test_a_token_revoked_elsewhere_is_refused_once_the_trust_window_passes(anon, connections, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(TokenAuthentication, "clock", staticmethod(lambda: now[0]))
    anon.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(username='platform')}")
    assert anon.get("/v1/sync/status/none").status_code == 404

    AuthToken.objects.all().delete()  # as another process (the admin on another machine) would
    assert anon.get("/v1/sync/status/none").status_code == 404  # still inside the window
    now[0] += VERIFIED_TTL_SECONDS + 0.1

    assert anon.get("/v1/sync/status/none").status_code == 401
