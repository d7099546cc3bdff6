"""Settings for the baseline: Django with nothing but the database, no apps and no middleware.

The database block matches recordsync.settings for PostgreSQL (persistent connections with
health checks), so the baseline and the app differ only in what runs per request.
"""

from __future__ import annotations

import os

import dj_database_url

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.bare_app"
WSGI_APPLICATION = "bench.bare_wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"

DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60, conn_health_checks=True)}
