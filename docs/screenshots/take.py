"""Take a screenshot of every page a person can open, into this folder.

Runs the app on a throwaway SQLite database with demo data, drives headless Chromium
through it and writes one PNG per page. Nothing outside this folder and a temporary
directory is touched. Needs Debian's chromium and chromium-driver, and selenium (plus
pillow, to keep big pages small) in the Python that runs this file; see README.md.

    python docs/screenshots/take.py

APP_DIR=<dir> runs the app from another checkout instead (say a `git archive` of HEAD
while the work tree is mid-change); APP_PYTHON=<python> picks the app's interpreter
(default: the repo's .venv). The screenshots always land beside this file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

OUT_DIR = Path(__file__).resolve().parent
REPO = Path(os.environ.get("APP_DIR", OUT_DIR.parent.parent))
APP_PYTHON = Path(os.environ.get("APP_PYTHON", OUT_DIR.parent.parent / ".venv" / "bin" / "python"))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1400, 900
MAX_PAGE_HEIGHT = 3000  # a full-page shot is cut here
MAX_PNG_BYTES = 400_000
USERNAME, PASSWORD = "admin", "screenshots-only-password"

# Realistic traffic from System A, so the admin lists have something in them.
EVENTS: list[Any] = [
    {
        "operation": "create",
        "record_id": "c-1001",
        "object_type": "contact",
        "data": {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
    },
    {
        "operation": "update",
        "record_id": "c-1001",
        "object_type": "contact",
        "data": {"email": "ada@analytical.example.com", "title": "Engineer"},
    },
    [
        {
            "operation": "create",
            "record_id": "c-1002",
            "object_type": "contact",
            "data": {"email": "grace@example.com"},
        },
        {"operation": "create", "record_id": "c-1003", "object_type": "contact", "data": {"email": "alan@example.com"}},
        {"operation": "create", "record_id": "a-2001", "object_type": "account", "data": {"domain": "example.com"}},
    ],
    {"operation": "delete", "record_id": "c-0999", "object_type": "contact"},
    {
        "operation": "update",
        "record_id": "c-1002",
        "object_type": "contact",
        "targets": ["salesforce"],
        "data": {"phone": "+44 20 7946 0000"},
    },
]


def app_env(var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RECORDSYNC_VAR_DIR=str(var_dir),
        RECORDSYNC_DOTENV="0",
        DEBUG="1",
        SECRET_KEY="screenshots-only",  # noqa: S106 - a throwaway database
        DJANGO_SUPERUSER_USERNAME=USERNAME,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - fixed arguments, our own manage.py
        [str(APP_PYTHON), "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare_database(env: dict[str, str]) -> str:
    """Migrate, load the demo connections, add a superuser; returns a staff API token."""
    manage(env, "migrate", "--noinput")
    manage(env, "load_demo")
    manage(env, "createsuperuser", "--noinput")
    return manage(env, "create_api_token", "demo", "--staff").strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        server = subprocess.Popen(  # noqa: S603 - fixed arguments, our own manage.py
            [str(APP_PYTHON), "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(f"{base}/healthz", server)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def wait_until_up(url: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback http only
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def post_events(base: str, token: str) -> None:
    for body in EVENTS:
        request = urllib.request.Request(  # noqa: S310 - loopback http only
            f"{base}/v1/sync/",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback http only
            if response.status != 202:
                raise RuntimeError(f"POST /v1/sync/ answered {response.status}: {response.read()!r}")


@contextmanager
def browser(profile_dir: Path) -> Iterator[Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_window_size(WIDTH, HEIGHT)
        yield driver
    finally:
        driver.quit()


def open_page(driver: Chrome, base: str, path: str) -> None:
    """Open path and fail if the browser ended up somewhere else (a login redirect, say)."""
    driver.get(f"{base}{path}")
    landed = driver.current_url.removeprefix(base)
    if landed.split("?")[0] != path.split("?")[0]:
        raise RuntimeError(f"{path} ended up at {landed}")
    if "Server Error" in driver.title or "Page not found" in driver.title:
        raise RuntimeError(f"{path} shows {driver.title!r}")


def log_in(driver: Chrome, base: str) -> None:
    driver.find_element(By.ID, "id_username").send_keys(USERNAME)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(driver, 10).until(ec.url_to_be(f"{base}/admin/"))


def save(driver: Chrome, name: str, *, until: str = "") -> None:
    """Write name.png: the whole page (up to MAX_PAGE_HEIGHT), or down to the top of the `until` element."""
    if until:
        bottom = driver.execute_script(  # top of that element, in page coordinates
            "return arguments[0].getBoundingClientRect().top + window.scrollY;",
            driver.find_element(By.CSS_SELECTOR, until),
        )
    else:
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        bottom = metrics["cssContentSize"]["height"]
    height = max(min(int(bottom), MAX_PAGE_HEIGHT), HEIGHT)
    clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = OUT_DIR / f"{name}.png"
    path.write_bytes(shrink(base64.b64decode(shot["data"])))
    print(f"{path.name}  {path.stat().st_size // 1024} KB")
    report_console(driver, name)


def shrink(png: bytes) -> bytes:
    """Re-encode as an optimized PNG; if still too big, as a 256-colour one."""
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    if out.tell() > MAX_PNG_BYTES:
        out = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    return out.getvalue()


def report_console(driver: Chrome, name: str) -> None:
    for entry in driver.get_log("browser"):  # type: ignore[no-untyped-call]
        if entry.get("level") in {"WARNING", "SEVERE"}:
            print(f"  console {entry['level']} on {name}: {entry['message']}")


ADMIN_PAGES = [
    ("admin-index", "/admin/"),
    ("admin-connections", "/admin/crms/connection/"),
    ("admin-rules", "/admin/rules/rule/"),
    ("admin-events", "/admin/sync/syncevent/"),
    ("admin-jobs", "/admin/sync/syncjob/"),
    ("admin-attempts", "/admin/sync/syncattempt/"),
    ("admin-record-links", "/admin/sync/recordlink/"),
    ("admin-tokens", "/admin/knox/authtoken/"),
    ("admin-token-grants", "/admin/sync/tokengrant/"),
    ("admin-users", "/admin/auth/user/"),
    ("admin-queued-tasks", "/admin/django_q/ormq/"),
    ("admin-scheduled-tasks", "/admin/django_q/schedule/"),
]


def shoot_admin(driver: Chrome, base: str) -> None:
    for name, path in ADMIN_PAGES:
        open_page(driver, base, path)
        save(driver, name)
    open_row(driver, base, "/admin/crms/connection/", "salesforce")
    save(driver, "admin-connection-detail")
    open_row(driver, base, "/admin/sync/tokengrant/", "demo")
    save(driver, "admin-token-grant-detail")
    shoot_rules(driver, base)
    # One job's page, attempts inline: c-1002's salesforce job (a create, then a salesforce-only update).
    open_row(driver, base, "/admin/sync/syncjob/?q=c-1002", "salesforce")
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".inline-group")))
    save(driver, "admin-job-detail")


def shoot_rules(driver: Chrome, base: str) -> None:
    """A rule's form, its history, and the dry-run page run over the recent events."""
    open_row(driver, base, "/admin/rules/rule/", "contacts-with-email")
    save(driver, "admin-rule-detail")
    driver.find_element(By.CSS_SELECTOR, "a.historylink").click()
    WebDriverWait(driver, 10).until(ec.url_contains("/history/"))
    save(driver, "admin-rule-history")
    open_page(driver, base, "/admin/rules/rule/test/")
    driver.find_element(By.NAME, "recent").send_keys("5")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "details")))
    save(driver, "admin-rules-dry-run")


def open_row(driver: Chrome, base: str, changelist: str, text: str) -> None:
    """Open the change page of the first changelist row that contains text."""
    open_page(driver, base, changelist)
    rows = [row for row in driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr") if text in row.text]
    if not rows:
        raise RuntimeError(f"no row with {text!r} in {changelist}")
    rows[0].find_element(By.CSS_SELECTOR, "th a").click()
    WebDriverWait(driver, 10).until(ec.url_contains("/change/"))


def shoot_api_docs(driver: Chrome, base: str) -> None:
    """Swagger UI with POST /v1/sync/ open on its request body's schema, down to the first error response."""
    open_page(driver, base, "/docs")
    wait = WebDriverWait(driver, 20)
    summary = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".opblock-post .opblock-summary")))
    summary.click()
    body = ".opblock-post .opblock-section-request-body"
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, body)))
    click_by_text(driver, f"{body} .tablinks", "Schema")
    click_by_text(driver, f"{body} .json-schema-2020-12-expand-deep-button", "Expand all")
    time.sleep(0.5)  # let the schema tree render
    save(driver, "api-docs", until=".opblock-post .responses-table tbody tr.response:nth-child(2)")


def click_by_text(driver: Chrome, selector: str, text: str) -> None:
    for element in driver.find_elements(By.CSS_SELECTOR, selector):
        if element.text.strip() == text:
            element.click()
            return
    raise RuntimeError(f"no {selector} reading {text!r}")


def shoot_browsable_api(driver: Chrome, base: str) -> None:
    """DRF's browsable API: what a logged-in person sees opening the /v1 URLs themselves."""
    open_page(driver, base, "/v1/sync/status/c-1001")
    save(driver, "api-browsable-status")
    open_page(driver, base, "/v1/sync/")
    save(driver, "api-browsable-ingest")


def report_server_errors(log_path: Path) -> None:
    """Print every request the server answered with 4xx or 5xx, and any non-request log line above INFO."""
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # runserver's banner
        if entry.get("message") == "request":
            if int(entry.get("status", 0)) >= 400:
                print(f"  server answered {entry['status']} to {entry['method']} {entry['path']}")
        elif entry.get("level") not in {"INFO", "DEBUG"}:
            print(f"  server {entry.get('level')}: {entry.get('message')}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="recordsync-shots-") as tmp:
        tmp_dir = Path(tmp)
        env = app_env(tmp_dir / "var")
        token = prepare_database(env)
        log_path = tmp_dir / "server.log"
        try:
            with running_server(env, free_port(), log_path) as base:
                post_events(base, token)
                with browser(tmp_dir / "chromium-profile") as driver:
                    open_page(driver, base, "/admin/login/")
                    save(driver, "admin-login")
                    log_in(driver, base)
                    shoot_admin(driver, base)
                    shoot_api_docs(driver, base)
                    shoot_browsable_api(driver, base)
        finally:
            if log_path.exists():
                report_server_errors(log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
