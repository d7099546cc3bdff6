"""Django settings for the Record Sync Service: one file, every value from the environment.

The defaults are the embedded set-up (SQLite under var/, django-q2's ORM broker,
an in-process cache), so a fresh clone runs with nothing else installed.
Production sets DATABASE_URL, REDIS_URL, SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from recordsync.env import env_bool, env_int, env_list, env_str

# Lets admin.ModelAdmin[Model] and friends be written with their type parameters.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# `make run` writes .env for local development; real environment variables always win,
# and the tests never read it (RECORDSYNC_DOTENV=0), so they behave the same on every machine.
if env_bool("RECORDSYNC_DOTENV", True):
    load_dotenv(BASE_DIR / ".env", override=False)
VAR_DIR = Path(env_str("RECORDSYNC_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (set SECRET_KEY or SECRET_KEY_FILE)")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105 - DEBUG only

# Fernet keys for connection secrets at rest (crms.secrets), newest first. In DEBUG a key is
# derived from SECRET_KEY so `make run` works; production must set its own.
RECORDSYNC_SECRETS_KEYS = env_list("RECORDSYNC_SECRETS_KEYS", [])
if not RECORDSYNC_SECRETS_KEYS and DEBUG:
    import base64
    import hashlib

    RECORDSYNC_SECRETS_KEYS = [base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()]

# Which environment variables a connection's secret may name ({"env": "NAME"}): exact names, or prefixes
# ending in "*". Staff who edit connections must not be able to read the service's own secrets
# (SECRET_KEY, DATABASE_URL, RECORDSYNC_SECRETS_KEYS) by naming them and pointing a token URL elsewhere.
SECRET_ENV_ALLOWED = env_list("SECRET_ENV_ALLOWED", ["CRM_*"])
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "simple_history",
    "axes",  # admin login lockout (after the apps whose logins it watches)
    "crms",
    "rules",
    "sync",
]

MIDDLEWARE = [
    "recordsync.middleware.RequestIdMiddleware",
    "recordsync.middleware.HealthProbeMiddleware",  # before anything that validates the Host header
    "recordsync.errors.OutageMiddleware",  # the database down: 503 JSON with Retry-After, one log line
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's session, user and messages middleware, passed by for API calls that bring a token. CSRF's stays
    # Django's own for all (`check --deploy` looks for it by name; DRF's views are exempt from it anyway).
    "recordsync.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "recordsync.middleware.AuthenticationMiddleware",
    "recordsync.middleware.MessageMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: answers a locked-out login
]

# Admin login lockout (django-axes): AXES_FAILURE_LIMIT wrong passwords for one username from one address lock
# that pair out for AXES_COOLOFF_MINUTES. API tokens are not passwords and are not counted.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours, as django-axes takes it
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "recordsync.urls"
WSGI_APPLICATION = "recordsync.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict[str, Any]:
    if not url:
        url = f"sqlite:///{VAR_DIR / 'recordsync.sqlite3'}"
    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0)))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        # Several worker processes write at once: IMMEDIATE takes the write lock when the
        # transaction starts, so a read-then-write never fails with "database is locked"
        # (measured in ../shared/SERVICES.md); WAL lets readers run beside the writer.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        config["CONN_MAX_AGE"] = 0
        # A file, not :memory:, for the test database too: the live-server tests serve the mock
        # CRMs from other threads, each with its own connection, as in production.
        # One per test process, so two runs on one machine never share it.
        test_name = env_str("TEST_DATABASE_NAME") or str(VAR_DIR / f"test_recordsync_{os.getpid()}.sqlite3")
        config["TEST"] = {"NAME": test_name}
        return config
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend with a health check that asks the server only after idleness or a sign of trouble.
        config["ENGINE"] = "recordsync.db.postgresql"
        config["CONN_HEALTH_CHECKS"] = True
        if DB_PREPARED_STATEMENTS:
            # Statements run on a server-side binding cursor are prepared on their first run: only the single-event
            # ingest uses one (sync/ingest/outbox.py). Django's own cursors bind on the client and never prepare.
            config.setdefault("OPTIONS", {})["prepare_threshold"] = 0
    else:
        raise ImproperlyConfigured(f"DATABASE_URL must be postgres:// or sqlite://, got {config['ENGINE']}")
    config["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME") or None}
    return config


DATABASE_URL = env_str("DATABASE_URL")
# PostgreSQL: the single-event ingest statement is prepared once per connection (sync/ingest/outbox.py). Off
# behind a pooler in transaction mode that cannot keep prepared statements (PgBouncer before 1.21).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
# A kept connection that answered within this many seconds, with nothing waiting on its socket, starts a request
# without the `SELECT 1` of Django's health check (recordsync/db/postgresql/base.py). 0: always ask.
DB_HEALTH_CHECK_IDLE_SECONDS = env_int("DB_HEALTH_CHECK_IDLE_SECONDS", 10, minimum=0)
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                # Short timeouts: the web must keep accepting events while Redis is down.
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# django-q2 carries work, not state: our job rows are the truth (docs/operations.md).
Q_CLUSTER: dict[str, Any] = {
    "name": env_str("Q_CLUSTER_NAME", "recordsync"),
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": env_int("Q_TIMEOUT", 60, minimum=1),
    "retry": env_int("Q_RETRY", 120, minimum=2),
    "max_attempts": 1,
    "save_limit": -1,
    "ack_failures": True,
    "catch_up": False,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["django_redis"] = "default"
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.1
if Q_CLUSTER["timeout"] >= Q_CLUSTER["retry"]:
    raise ImproperlyConfigured("Q_TIMEOUT must be shorter than Q_RETRY, or django-q2 runs a task twice")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed, compressed files need `collectstatic` (the image runs it); off in DEBUG and tests.
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env_bool("STATIC_MANIFEST", not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not env_bool("STATIC_MANIFEST", not DEBUG)

# The sync engine's defaults (docs/operations.md). Batches go out when full or when the oldest
# waiting job is this old; retries back off exponentially with full jitter up to the cap.
SYNC_BATCH_SIZE = env_int("SYNC_BATCH_SIZE", 200, minimum=1)
SYNC_FLUSH_INTERVAL = env_int("SYNC_FLUSH_INTERVAL", 2, minimum=0)
SYNC_MAX_ATTEMPTS = env_int("SYNC_MAX_ATTEMPTS", 8, minimum=1)
# Calls per window per quota owner through the HTTP seam (0: no limit); overridable per connection.
SYNC_RATE_LIMIT_CALLS = env_int("SYNC_RATE_LIMIT_CALLS", 0, minimum=0)
SYNC_RATE_LIMIT_WINDOW = env_int("SYNC_RATE_LIMIT_WINDOW", 1, minimum=1)
# The circuit breaker per connection: this many connection-level failures in a row open it; after
# the cool-down one probe batch is let through.
SYNC_BREAKER_FAILURES = env_int("SYNC_BREAKER_FAILURES", 5, minimum=1)
SYNC_BREAKER_COOLDOWN = env_int("SYNC_BREAKER_COOLDOWN", 30, minimum=1)
# Past this share of a target's own allowance (Sforce-Limit-Info, X-RateLimit-*), calls are spread out.
SYNC_QUOTA_SLOW_DOWN_PERCENT = env_int("SYNC_QUOTA_SLOW_DOWN_PERCENT", 90, minimum=1)
# Lanes (docs/operations.md): the share of each quota owner's window only live changes may fill, and the share
# beyond it only live changes, reads and polls may fill (backfill and reconcile get the rest).
SYNC_LANE_LIVE_RESERVE_PERCENT = env_int("SYNC_LANE_LIVE_RESERVE_PERCENT", 20, minimum=0, maximum=90)
SYNC_LANE_READ_RESERVE_PERCENT = env_int("SYNC_LANE_READ_RESERVE_PERCENT", 10, minimum=0, maximum=90)
# Backfill and reconcile stop while less than this share of the target's own allowance remains; 0: never.
SYNC_BACKFILL_FLOOR_PERCENT = env_int("SYNC_BACKFILL_FLOOR_PERCENT", 25, minimum=0, maximum=100)
# Seconds between polls of each readable connection's objects for changes made there; 0: never.
SYNC_POLL_INTERVAL = env_int("SYNC_POLL_INTERVAL", 60, minimum=0)
# Alerts per connection (0 turns one off): the oldest due job older than this; this share of the
# attempts in the window failed (once at least ALERT_FAILURE_MIN_ATTEMPTS were made); the breaker
# open longer than this. Incidents go to ALERT_WEBHOOK_URL (Slack-compatible JSON) when set.
SYNC_ALERT_LAG_SECONDS = env_int("SYNC_ALERT_LAG_SECONDS", 600, minimum=0)
SYNC_ALERT_FAILURE_PERCENT = env_int("SYNC_ALERT_FAILURE_PERCENT", 50, minimum=0)
SYNC_ALERT_FAILURE_WINDOW = env_int("SYNC_ALERT_FAILURE_WINDOW", 900, minimum=60)
SYNC_ALERT_BREAKER_OPEN_SECONDS = env_int("SYNC_ALERT_BREAKER_OPEN_SECONDS", 300, minimum=0)
# Alert when the target's allowance, at the rate of the last hour, runs out within this many hours; 0: off.
SYNC_ALERT_ALLOWANCE_HOURS = env_int("SYNC_ALERT_ALLOWANCE_HOURS", 6, minimum=0)
ALERT_FAILURE_MIN_ATTEMPTS = env_int("ALERT_FAILURE_MIN_ATTEMPTS", 10, minimum=1)
ALERT_WEBHOOK_URL = env_str("ALERT_WEBHOOK_URL", "")
# Retention (sync_prune, daily): finished history older than this goes; a repeated idempotency key
# gets its first answer for at least the window (docs/retention.md).
SYNC_RETENTION_DAYS = env_int("SYNC_RETENTION_DAYS", 30, minimum=1)
SYNC_IDEMPOTENCY_WINDOW_DAYS = env_int("SYNC_IDEMPOTENCY_WINDOW_DAYS", 7, minimum=1)
# GET /metrics answers a bearer token, or a scraper inside these networks (comma-separated CIDRs). None by default
# outside DEBUG: behind a proxy on the same host every client would come from loopback.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"] if DEBUG else [])
SYNC_LEASE_SECONDS = env_int("SYNC_LEASE_SECONDS", 120, minimum=10)
# Batches of one connection queued or in flight at once, for each live worker of the fleet (heartbeats);
# the rest of a backlog waits as pending. SYNC_OUTSTANDING_BATCHES applies while no worker has reported.
SYNC_OUTSTANDING_PER_WORKER = env_int("SYNC_OUTSTANDING_PER_WORKER", 2, minimum=1)
SYNC_OUTSTANDING_BATCHES = env_int("SYNC_OUTSTANDING_BATCHES", 2 * Q_CLUSTER["workers"], minimum=1)
SYNC_BACKOFF_BASE_SECONDS = env_int("SYNC_BACKOFF_BASE_SECONDS", 2, minimum=1)
SYNC_BACKOFF_CAP_SECONDS = env_int("SYNC_BACKOFF_CAP_SECONDS", 600, minimum=1)
# Writes handed back near a daily cap look again after at most this long (sooner when an answer shows room).
SYNC_THROTTLE_RECHECK_SECONDS = env_int("SYNC_THROTTLE_RECHECK_SECONDS", 900, minimum=1)
# A held quota owner (REQUEST_LIMIT_EXCEEDED) is probed first after this long, then at a doubling interval.
SYNC_HOLD_PROBE_FIRST_SECONDS = env_int("SYNC_HOLD_PROBE_FIRST_SECONDS", 60, minimum=1)
# A failed poll waits from this long, doubling per failure (half of it random), up to the cap.
SYNC_POLL_BACKOFF_BASE_SECONDS = env_int("SYNC_POLL_BACKOFF_BASE_SECONDS", 5, minimum=1)
SYNC_POLL_BACKOFF_CAP_SECONDS = env_int("SYNC_POLL_BACKOFF_CAP_SECONDS", 300, minimum=1)

# Ingest limits (documented in docs/api.md).
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024)
INGEST_MAX_JSON_DEPTH = env_int("INGEST_MAX_JSON_DEPTH", 32, minimum=4)  # levels of nesting a body may have
INGEST_MAX_BATCH = 500
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES
IDEMPOTENCY_KEY_MAX_LENGTH = 200

# The local mock CRMs (crms/*/mock.py): on in `make run` (DEBUG), off by default in production.
MOCK_CRMS_ENABLED = env_bool("MOCK_CRMS_ENABLED", DEBUG)
# With DEBUG off the mocks (fake CRMs that accept any write, with well-known default secrets) are refused
# unless forced: a production deploy that copied a dev env file must not serve them by accident.
MOCK_CRMS_FORCE = env_bool("MOCK_CRMS_FORCE", False)
if MOCK_CRMS_ENABLED and not DEBUG and not MOCK_CRMS_FORCE:
    raise ImproperlyConfigured(
        "MOCK_CRMS_ENABLED is on with DEBUG off: the mock CRMs would be served in production. Turn it off, "
        "or set MOCK_CRMS_FORCE=1 if this really is a test or benchmark deployment."
    )
if MOCK_CRMS_ENABLED and not DEBUG:
    sys.stderr.write("WARNING: MOCK_CRMS_FORCE: the mock CRMs are served with DEBUG off (/mock/...)\n")
# Where outbound calls may go (crms/egress.py): only public addresses, unless these allow a host or a network.
# make run (DEBUG) allows loopback, where its mock CRMs answer.
EGRESS_ALLOWED_HOSTS = env_list("EGRESS_ALLOWED_HOSTS", [])
EGRESS_ALLOWED_NETWORKS = env_list("EGRESS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"] if DEBUG else [])
for _network in EGRESS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"EGRESS_ALLOWED_NETWORKS: {_network!r} is not a network, e.g. 10.0.0.0/8") from _exc
# Flat-file connections (crms/flatfile): the folders they may use, and the longest value a file may hold.
FLATFILE_ROOTS = env_list("FLATFILE_ROOTS", [str(VAR_DIR / "files")])
FLATFILE_MAX_VALUE_CHARS = env_int("FLATFILE_MAX_VALUE_CHARS", 100_000, minimum=1000)
# Requests per minute per API token (sync/api/auth.py RequestRate); 0: no limit. Over it: 429 with Retry-After.
API_REQUESTS_PER_MINUTE = env_int("API_REQUESTS_PER_MINUTE", 12_000, minimum=0)
# The time one event's rule evaluation may take before it is stopped and recorded as a rule error (rules/bounds.py).
RULES_EVAL_BUDGET_MS = env_int("RULES_EVAL_BUDGET_MS", 250, minimum=10)
# Outbound calls to CRMs: seconds to connect and to wait for an answer (a timeout is retried).
CRM_HTTP_CONNECT_TIMEOUT = env_int("CRM_HTTP_CONNECT_TIMEOUT", 5, minimum=1)
CRM_HTTP_READ_TIMEOUT = env_int("CRM_HTTP_READ_TIMEOUT", 30, minimum=1)
# The longest wait between two probes of an org that answered 403 REQUEST_LIMIT_EXCEEDED.
SALESFORCE_LIMIT_PAUSE_SECONDS = env_int("SALESFORCE_LIMIT_PAUSE_SECONDS", 900, minimum=1)
# Each mock CRM's own settings (MOCK_SALESFORCE_*, MOCK_OUTREACH_*, ...) are read beside it: crms/*/mock.py.

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "recordsync.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated", "sync.api.auth.HasScope"],
    "DEFAULT_PARSER_CLASSES": ["recordsync.parsers.LimitedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["sync.api.auth.RequestRate"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if env_bool("BROWSABLE_API", True) else []),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "recordsync.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

REST_KNOX = {
    # API tokens are long-lived service credentials; revoke them in the admin.
    "TOKEN_TTL": None,
    "AUTH_HEADER_PREFIX": "Token",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Record Sync Service API",
    "DESCRIPTION": "Two-way record sync between System A and external CRMs. "
    'Every error has the shape {"error": {code, message, request_id, fields}}.',
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per choice set that several serializers share.
    "ENUM_NAME_OVERRIDES": {
        "BreakerStateEnum": "sync.models.BreakerState",
        "ConflictStateEnum": "sync.models.ConflictState",
        "JobStateEnum": "sync.models.JobState",
    },
    "SCHEMA_PATH_PREFIX": "/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "recordsync.openapi.declare_batch_limit",
    ],
}

# Production hardening; `manage.py check --deploy` is clean with DEBUG off.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "recordsync.logging.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO-8601 in UTC with its offset, e.g. 2026-11-25T10:45:45.239000+00:00
            "timestamp": "time",
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Our own access line replaces Django's; keep its errors, as JSON.
        "django": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "django.request": {"level": "ERROR"},
        "django.server": {"handlers": ["stdout"], "level": "ERROR", "propagate": False},
        "django_q": {"level": env_str("Q_LOG_LEVEL", "WARNING").upper()},
    },
}
