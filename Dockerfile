# syntax=docker/dockerfile:1
#
# Record Sync Service: one image, four roles (docs/deploy.md).
#   web      the default CMD: gunicorn on :8000
#   worker   python manage.py sync_cluster    (no HTTP: disable the healthcheck)
#   dispatcher python manage.py sync_dispatch (no HTTP: disable the healthcheck)
#   migrate  python manage.py migrate --noinput   (one-off task before a release; no entrypoint does it)
#
# Not built in CI (no Docker engine on the developers' machines): review changes carefully.

# ---- build: the virtualenv with requirements/base.txt only (no test or lint tools) ----
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
COPY requirements/base.txt /tmp/requirements/base.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/base.txt

# ---- runtime: the venv, the code, the collected static files, a non-root user ----
FROM python:3.11-slim

# WEB_CONCURRENCY is read by gunicorn itself as its default worker count;
# GUNICORN_CMD_ARGS (also read by gunicorn) adds flags without changing CMD.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECORDSYNC_VAR_DIR=/app/var \
    WEB_CONCURRENCY=3

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Code stays owned by root (read-only for the app user); see .dockerignore for what is left out.
COPY . .

# STATIC_ROOT is $RECORDSYNC_VAR_DIR/static: whitenoise serves it from inside the image.
# Settings refuse to load without SECRET_KEY when DEBUG is off; this dummy lives in this step only.
# /app/var itself is writable so the SQLite default still works for a one-container trial.
RUN DEBUG=0 SECRET_KEY=collectstatic-build-only-not-a-secret \
        python manage.py collectstatic --noinput \
    && chown app:app /app/var

USER app

EXPOSE 8000

# Liveness of the web role. Django answers 400 to a Host header outside ALLOWED_HOSTS,
# so the probe sends the first ALLOWED_HOSTS entry (".example.com" -> "example.com", "*" -> "localhost").
# /healthz is exempt from SECURE_SSL_REDIRECT, so plain HTTP to 127.0.0.1 is fine. Any proxy env is ignored.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; hosts = [h.strip() for h in os.environ.get('ALLOWED_HOSTS', '').split(',') if h.strip()] or ['localhost']; host = hosts[0].lstrip('.').replace('*', 'localhost'); r.build_opener(r.ProxyHandler({})).open(r.Request('http://127.0.0.1:8000/healthz', headers={'Host': host}), timeout=4)"]

# No --access-logfile: the app already writes one JSON line per request (logger recordsync.access).
# Gunicorn's own messages (boot, worker timeouts) stay on as plain text on stderr, so stdout is pure JSON.
# /dev/shm for worker heartbeats (an overlay filesystem can stall them); no control socket in a container.
CMD ["gunicorn", "recordsync.wsgi:application", \
     "--bind", "0.0.0.0:8000", \
     "--error-logfile", "-", \
     "--worker-tmp-dir", "/dev/shm", \
     "--no-control-socket"]
