"""The page in a real browser (Debian's Chromium driven by Playwright) against a real cluster.

One ``aiocelerymon serve`` process (with an auth file: an operator and a viewer), one real
Celery worker and one browser per module; the full suite runs on Redis, a smoke test on
RabbitMQ. Every wait is on an event (Playwright's ``expect``), never a sleep. The screenshots
in ``docs/screenshots/`` are taken here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from aiocelerymon.testing import brokers
from aiocelerymon.web.passwords import hash_password
from tests.support.celery_worker import CeleryWorker, celery_worker

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("AIOCELERYMON_CHROMIUM", "/usr/bin/chromium")
#: No sandbox (root in CI), nothing fetched from the network by the browser itself.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
APP = "tests.integration.celery_app"
T = f"{APP}."
OPERATOR = ("olga", "olga-page-pw")
VIEWER = ("victor", "victor-page-pw")
#: Generous: the machine runs other suites at once. Waits end as soon as the page shows it.
WAIT = 20_000
PURGE_AFTER = 6
expect.set_options(timeout=WAIT)


# -- the cluster, the server, the browser ------------------------------------------------------


def start_server(broker: brokers.BrokerNamespace, *extra: str, auth: Path | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOCELERYMON_", "FLOWER_"))}
    if auth is not None:
        env["AIOCELERYMON_AUTH_FILE"] = str(auth)
    options = [
        f"--transport-option={k}={json.dumps(v)}" for k, v in broker.transport_options.items()
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "aiocelerymon", "-b", broker.url, *options, "serve",
         "--port", "0", *extra],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"(http://127\.0\.0\.1:\d+)/", line):
            return process, match.group(1)
    process.kill()
    raise AssertionError("serve did not start:\n" + "".join(lines))


def stop_server(process: Any) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


@contextlib.contextmanager
def worker(
    broker: brokers.BrokerNamespace, hostname: str, **options: Any
) -> Iterator[CeleryWorker]:
    """A real worker of the test app (the plugin's process runner), sending task events."""
    config = (
        {"broker_transport_options": broker.transport_options} if broker.transport_options else {}
    )
    with celery_worker(broker.url, hostname, config=config, **options) as started:
        yield started


def celery_client(broker: brokers.BrokerNamespace) -> Celery:
    """Celery's own client: tasks sent by it, limits checked with its own inspect."""
    app = Celery("page-tests", broker=broker.url, set_as_current=False)
    app.conf.broker_transport_options = dict(broker.transport_options)
    app.conf.broker_connection_retry_on_startup = True
    return app


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Cluster:
    def __init__(self, broker: brokers.BrokerNamespace, url: str, app: Celery, w1: str) -> None:
        self.broker, self.url, self.app, self.w1 = broker, url, app, w1

    def send(self, name: str, *args: Any, **options: Any) -> str:
        return str(self.app.send_task(T + name, args=args, **options).id)


@pytest.fixture(scope="module")
def redis_cluster(
    redis_server: brokers.RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    broker = redis_server.namespace()
    users = tmp_path_factory.mktemp("page") / "users"
    users.write_text(
        f"{OPERATOR[0]}:operator:{hash_password(OPERATOR[1])}\n"
        f"{VIEWER[0]}:viewer:{hash_password(VIEWER[1])}\n"
    )
    users.chmod(0o600)
    process, url = start_server(
        broker, "--purge-offline-workers", str(PURGE_AFTER), "--cookie-secret", "p" * 32,
        auth=users,
    )  # fmt: skip
    app = celery_client(broker)
    try:
        with worker(broker, "w1@page", concurrency=2) as w1:
            yield Cluster(broker, url, app, w1.hostname)
    finally:
        app.close()
        stop_server(process)


def login(context: BrowserContext, url: str, user: tuple[str, str]) -> Page:
    page = context.new_page()
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#username", user[0])
    page.fill("#password", user[1])
    page.click("button[type=submit]")
    expect(page.locator("#user")).to_have_text(user[0], timeout=WAIT)
    return page


@pytest.fixture(scope="module")
def operator(browser: Browser, redis_cluster: Cluster) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT)
    login(context, redis_cluster.url, OPERATOR).close()
    yield context
    context.close()


class Console:
    """Every console error and uncaught exception of the pages opened through it."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        return page


@pytest.fixture
def console() -> Iterator[Console]:
    watcher = Console()
    yield watcher
    assert watcher.errors == [], watcher.errors


@pytest.fixture
def page(operator: BrowserContext, console: Console) -> Iterator[Page]:
    opened = console.watch(operator.new_page())
    yield opened
    opened.close()


def open_view(page: Page, cluster: Cluster, fragment: str) -> Page:
    page.goto(f"{cluster.url}/#{fragment}")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    return page


def shot(page: Page, name: str, *, full: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    """For Celery's own (blocking) client: poll its answer, each try a real round trip."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value


# -- the tests -------------------------------------------------------------------------------


def test_login_wrong_password_and_a_viewer_without_controls(
    browser: Browser, redis_cluster: Cluster
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT)
    console = Console()
    try:
        page = console.watch(context.new_page())
        page.goto(redis_cluster.url + "/")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        shot(page, "login")
        page.fill("#username", OPERATOR[0])
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        expect(page.locator("p.error[role=alert]")).to_be_visible()
        expect(page.locator("#user")).to_have_count(0)
        # The failed login's own 401 is the only console error the browser reports.
        console.errors = [e for e in console.errors if "401" not in e]

        page = login(context, redis_cluster.url, VIEWER)
        console.watch(page)
        expect(page.locator("#role")).to_have_text("viewer")
        open_view(page, redis_cluster, f"/worker/{redis_cluster.w1}/pool")
        expect(page.locator(".kv")).to_be_visible()
        for tab in ("pool", "queues", "limits", "tasks"):
            page.click(f'[data-tab="{tab}"]')
            expect(page.locator(f'[data-tab="{tab}"].active')).to_be_visible()
            expect(page.locator(".tab-body")).not_to_contain_text("Loading")
            assert page.locator("button[data-action]").count() == 0
        task_id = redis_cluster.send("add", 1, 1)
        open_view(page, redis_cluster, f"/task/{task_id}")
        expect(page.locator(".badge[data-state]")).to_have_text("SUCCESS", timeout=WAIT)
        assert page.locator("button[data-action]").count() == 0
        # And the API refuses the viewer anyway, CSRF token or not.
        status = page.evaluate(
            """async () => {
                const s = await (await fetch("auth/session")).json();
                const r = await fetch("api/task/revoke/abc", {method: "POST",
                    headers: {"X-CSRF-Token": s.csrf_token || ""}});
                return r.status;
            }"""
        )
        assert status == 403
        console.errors = [e for e in console.errors if "403" not in e]
        assert console.errors == []
    finally:
        context.close()


def test_every_view_loads_without_a_console_error(page: Page, redis_cluster: Cluster) -> None:
    failed = redis_cluster.send("fail")
    done = redis_cluster.send("add", 2, 3)
    open_view(page, redis_cluster, "/")
    row = page.locator(f'#workers-table tr[data-worker="{redis_cluster.w1}"]')
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("Online")
    expect(page.locator('[data-card="failed"] .card-value')).not_to_have_text("0")
    shot(page, "dashboard")

    open_view(page, redis_cluster, "/tasks")
    expect(page.locator(f'tr[data-uuid="{failed}"] [data-col="state"]')).to_have_text("FAILURE")
    expect(page.locator(f'tr[data-uuid="{done}"] [data-col="state"]')).to_have_text("SUCCESS")
    shot(page, "tasks")

    open_view(page, redis_cluster, f"/task/{failed}")
    expect(page.locator("pre.err").last).to_contain_text("fail() always fails")
    expect(page.locator(".kv").first).to_contain_text(redis_cluster.w1)
    shot(page, "task-detail", full=True)

    for tab in ("pool", "broker", "queues", "tasks", "limits", "config", "system", "other"):
        open_view(page, redis_cluster, f"/worker/{redis_cluster.w1}/{tab}")
        expect(page.locator(f'[data-tab="{tab}"].active')).to_be_visible()
        body = page.locator(".tab-body")
        expect(body).not_to_contain_text("Loading")
        expect(body).not_to_contain_text("Could not load")
        if tab == "pool":
            expect(body).to_contain_text("prefork")
            shot(page, "worker-pool")
        if tab == "limits":
            expect(body).to_contain_text(T + "add")
    expect(page.locator(".tab-body")).to_contain_text("py-celery")

    open_view(page, redis_cluster, "/broker")
    # Redis keeps no consumer count (the page says n/a); RabbitMQ's is checked below.
    queue = page.locator('#broker-queues tr[data-queue="celery"]')
    expect(queue.locator('[data-col="messages"]')).to_have_text(re.compile(r"^\d+$"))
    shot(page, "broker")

    open_view(page, redis_cluster, "/events")
    expect(page.locator("#tail-status")).to_have_text("live")
    redis_cluster.send("add", 4, 4)
    expect(page.locator('#tail tr[data-type="task-succeeded"]').first).to_be_visible()
    shot(page, "events")


def test_a_task_appears_and_changes_state_without_reload(
    page: Page, redis_cluster: Cluster
) -> None:
    open_view(page, redis_cluster, "/tasks")
    expect(page.locator("#conn")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")
    task_id = redis_cluster.send("sleep", 1.5)
    state = page.locator(f'tr[data-uuid="{task_id}"] [data-col="state"]')
    expect(state).to_have_text("STARTED")
    expect(state).to_have_text("SUCCESS")
    assert page.evaluate("window.__notReloaded") is True
    # The dashboard counts it live too.
    page.click('.nav a[data-view="dashboard"]')
    cell = page.locator(
        f'#workers-table tr[data-worker="{redis_cluster.w1}"] [data-col="succeeded"]'
    )
    expect(cell).to_be_visible()
    before = int(cell.inner_text())
    redis_cluster.send("add", 1, 2)
    expect(cell).to_have_text(str(before + 1))
    assert page.evaluate("window.__notReloaded") is True


def test_search_syntax_sorting_and_paging(page: Page, redis_cluster: Cluster) -> None:
    ids = [redis_cluster.send("add", 100, i) for i in range(3)]
    failed = redis_cluster.send("fail")
    open_view(page, redis_cluster, "/tasks")
    for task_id in [*ids, failed]:
        expect(page.locator(f'tr[data-uuid="{task_id}"] [data-col="state"]')).to_have_text(
            re.compile("SUCCESS|FAILURE")
        )
    page.fill("#task-search", f"state:FAILURE worker:{redis_cluster.w1} name:{T}fail")
    page.press("#task-search", "Enter")
    expect(page.locator(f'tr[data-uuid="{failed}"]')).to_be_visible()
    states = page.locator('#tasks-table [data-col="state"]')
    expect(states.first).to_have_text("FAILURE")
    assert set(states.all_inner_texts()) == {"FAILURE"}
    page.fill("#task-search", '"(100, 1)"')
    page.press("#task-search", "Enter")
    expect(page.locator("#tasks-table tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-uuid="{ids[1]}"]')).to_be_visible()
    # Paging: three tasks per page, then the next page shows others.
    open_view(page, redis_cluster, "/tasks?limit=3&sort=-received")
    expect(page.locator("#tasks-count")).to_contain_text("1\u20133 of")
    first_page = page.locator("#tasks-table tbody tr").first.get_attribute("data-uuid")
    page.click("#next-page")
    expect(page.locator("#tasks-count")).to_contain_text("4\u20136 of")
    assert page.locator("#tasks-table tbody tr").first.get_attribute("data-uuid") != first_page


def test_control_from_the_page_reaches_the_worker(page: Page, redis_cluster: Cluster) -> None:
    w1 = redis_cluster.w1
    open_view(page, redis_cluster, f"/worker/{w1}/limits")
    # A task no other test runs: a rate limit on it slows nobody down.
    row = page.locator(f'#limits-table tr[data-task="{T}progress"]')
    row.locator('input[aria-label="Rate"]').fill("7/m")
    row.locator('button[data-action="Set rate limit"]').click()
    reply = page.locator(f".replies tr.reply-ok td.mono:text-is('{w1}')")
    expect(reply).to_be_visible()
    expect(page.locator(".replies")).to_contain_text("new rate limit set successfully")
    shot(page, "control-replies")
    registered = wait_until(
        lambda: any(
            entry.startswith(f"{T}progress") and "rate_limit=7/m" in entry
            for entry in (
                redis_cluster.app.control.inspect([w1], timeout=2).registered() or {}
            ).get(w1, [])
        )
    )
    assert registered, "the worker's own inspect registered does not show the new rate limit"

    row.locator('input[aria-label="Soft"]').fill("30")
    row.locator('input[aria-label="Hard"]').fill("60")
    row.locator('button[data-action="Set time limits"]').click()
    expect(page.locator(".replies")).to_contain_text("time limits set successfully")
    expect(page.locator(f".replies tr.reply-ok td.mono:text-is('{w1}')")).to_be_visible()

    open_view(page, redis_cluster, f"/worker/{w1}/queues")
    page.fill('input[aria-label="Queue"]', "page-extra")
    page.click('button[data-action="Add consumer"]')
    expect(page.locator(".replies tr.reply-ok")).to_contain_text("page-extra")
    expect(page.locator('#queues-table tr[data-queue="page-extra"]')).to_be_visible()
    queues = redis_cluster.app.control.inspect([w1], timeout=2).active_queues() or {}
    assert "page-extra" in {q["name"] for q in queues.get(w1, [])}

    # Destructive: asks first; cancel sends nothing, confirm sends it.
    cancel = page.locator('#queues-table tr[data-queue="page-extra"] button[data-action]')
    cancel.click()
    expect(page.locator("#confirm")).to_be_visible()
    page.click('#confirm button[value="cancel"]')
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator('#queues-table tr[data-queue="page-extra"]')).to_be_visible()
    cancel.click()
    page.click("#confirm-ok")
    expect(page.locator('#queues-table tr[data-queue="page-extra"]')).to_have_count(0)
    queues = redis_cluster.app.control.inspect([w1], timeout=2).active_queues() or {}
    assert "page-extra" not in {q["name"] for q in queues.get(w1, [])}


def test_a_stuck_task_is_highlighted_and_terminated_from_the_page(
    page: Page, redis_cluster: Cluster
) -> None:
    quick = [redis_cluster.send("sleep", 0.01) for _ in range(4)]
    open_view(page, redis_cluster, "/tasks")
    for task_id in quick:
        expect(page.locator(f'tr[data-uuid="{task_id}"] [data-col="state"]')).to_have_text(
            "SUCCESS"
        )
    slow = redis_cluster.send("sleep", 60)
    expect(page.locator(f'tr[data-uuid="{slow}"] [data-col="state"]')).to_have_text("STARTED")
    open_view(page, redis_cluster, "/")
    expect(page.locator(f'#stuck-table tr.stuck[data-uuid="{slow}"]')).to_be_visible()
    shot(page, "dashboard-stuck")
    open_view(page, redis_cluster, "/tasks")
    expect(page.locator(f'tr.stuck[data-uuid="{slow}"]')).to_be_visible()

    open_view(page, redis_cluster, f"/task/{slow}")
    page.click('button[data-action="Terminate"]')
    expect(page.locator("#confirm-text")).to_contain_text(slow)
    page.click("#confirm-ok")
    expect(page.locator(".replies tr.reply-ok")).to_contain_text(redis_cluster.w1)
    expect(page.locator(".badge[data-state]").first).to_have_text("REVOKED")


def test_a_worker_goes_offline_is_dropped_and_comes_back_live(
    page: Page, redis_cluster: Cluster
) -> None:
    name = "w2@page"
    open_view(page, redis_cluster, "/")
    row = page.locator(f'#workers-table tr[data-worker="{name}"]')
    with worker(redis_cluster.broker, name):
        expect(row.locator(".badge")).to_have_text("Online")
        open_view(page, redis_cluster, f"/worker/{name}/pool")
        page.click('button[data-action="Shut down"]')
        expect(page.locator("#confirm-text")).to_contain_text(name)
        page.click("#confirm-ok")
        expect(page.locator(".replies")).to_contain_text("Shutting down")
        page.click('.nav a[data-view="dashboard"]')
        expect(row).to_have_class(re.compile(r"\boffline\b"))
        expect(row.locator(".badge")).to_have_text("Offline")
        shot(page, "dashboard-offline")
        # --purge-offline-workers: gone from the page without a reload.
        expect(row).to_have_count(0, timeout=PURGE_AFTER * 1000 + WAIT)
    with worker(redis_cluster.broker, name):
        expect(row.locator(".badge")).to_have_text("Online")


def test_charts_show_the_cluster(page: Page, redis_cluster: Cluster) -> None:
    ids = [redis_cluster.send("add", i, i) for i in range(5)]
    ids.append(redis_cluster.send("fail"))
    open_view(page, redis_cluster, "/tasks")
    for task_id in ids:
        expect(page.locator(f'tr[data-uuid="{task_id}"] [data-col="state"]')).to_have_text(
            re.compile("SUCCESS|FAILURE")
        )
    open_view(page, redis_cluster, "/charts")
    cluster = page.locator('.chart[data-chart="cluster"]')
    expect(cluster).to_have_attribute("data-nonzero", re.compile(r"^[1-9]"))
    expect(cluster.locator("canvas")).to_have_count(1)
    expect(page.locator(f'.chart[data-chart="{redis_cluster.w1}"]')).to_have_attribute(
        "data-nonzero", re.compile(r"^[1-9]")
    )
    expect(page.locator(f'.chart[data-chart="{T}fail"]')).to_have_attribute(
        "data-nonzero", re.compile(r"^[1-9]")
    )
    expect(page.locator(f'#runtime-table tr[data-task="{T}add"]')).to_be_visible()
    expect(page.locator('.chart[data-chart="queue depth"]')).to_have_attribute(
        "data-points", re.compile(r"^[1-9]")
    )
    shot(page, "charts", full=True)


def test_keyboard_theme_and_phone(
    operator: BrowserContext, console: Console, redis_cluster: Cluster, browser: Browser
) -> None:
    page = console.watch(operator.new_page())
    redis_cluster.send("add", 7, 7)
    open_view(page, redis_cluster, "/")
    page.keyboard.press("g")
    page.keyboard.press("t")
    expect(page.locator("#task-search")).to_be_visible()
    expect(page.locator("#tasks-table tbody tr").first).to_be_visible()
    page.keyboard.press("/")
    expect(page.locator("#task-search")).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    selected = page.locator("#tasks-table tbody tr.selected")
    expect(selected).to_have_count(1)
    uuid = selected.get_attribute("data-uuid")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"#/task/{uuid}$"))
    page.keyboard.press("t")
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    shot(page, "task-detail-light")
    page.keyboard.press("t")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.close()

    # A phone: nothing wider than the screen, the workers still readable.
    phone_context = browser.new_context(
        storage_state=operator.storage_state(), viewport={"width": 390, "height": 844},
        is_mobile=True, has_touch=True, device_scale_factor=2,
    )  # fmt: skip
    phone = console.watch(phone_context.new_page())
    try:
        open_view(phone, redis_cluster, "/")
        expect(
            phone.locator(f'#workers-table tr[data-worker="{redis_cluster.w1}"]')
        ).to_be_visible()
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        shot(phone, "phone-dashboard", full=True)
    finally:
        phone_context.close()


# -- RabbitMQ: the same page, a smoke test --------------------------------------------------


def test_rabbitmq_smoke(browser: Browser, rabbit_server: brokers.RabbitServer) -> None:
    broker = rabbit_server.namespace()
    process, url = start_server(broker)
    app = celery_client(broker)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT)
    console = Console()
    cluster = Cluster(broker, url, app, "w1@rabbit-page")
    try:
        with worker(broker, cluster.w1):
            page = console.watch(context.new_page())
            open_view(page, cluster, "/")
            expect(page.locator("#role")).to_have_text("operator")  # loopback, no auth
            row = page.locator(f'#workers-table tr[data-worker="{cluster.w1}"]')
            expect(row.locator(".badge")).to_have_text("Online")
            open_view(page, cluster, "/tasks")
            task_id = cluster.send("add", 20, 22)
            expect(page.locator(f'tr[data-uuid="{task_id}"] [data-col="state"]')).to_have_text(
                "SUCCESS"
            )
            open_view(page, cluster, "/broker")
            queue = page.locator('#broker-queues tr[data-queue="celery"]')
            expect(queue.locator('[data-col="consumers"]')).to_have_text(re.compile(r"[1-9]"))
            open_view(page, cluster, f"/worker/{cluster.w1}/pool")
            page.click('button[data-action="Grow"]')
            expect(page.locator(".replies tr.reply-ok")).to_contain_text(cluster.w1)
        assert console.errors == []
    finally:
        context.close()
        app.close()
        stop_server(process)
        rabbit_server.release(broker)
