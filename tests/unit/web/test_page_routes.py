"""The page's shell, its static assets and ``/api/page/...`` over a Monitor's State."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

import aiocelerymon
from aiocelerymon.pipeline import Monitor
from aiocelerymon.web import create_app
from aiocelerymon.web.page import MODULES, STATIC_DIR


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    client = aiocelerymon.Client("memory://page-routes")
    yield Monitor(client)


@pytest.fixture
async def http(monitor: Monitor) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_app(monitor, url_prefix="/celery")
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t/celery/") as c:
        yield c


def ingest(monitor: Monitor, **event: Any) -> None:
    event.setdefault("hostname", "w1@h")
    event.setdefault("timestamp", time.time())
    event.setdefault("local_received", event["timestamp"])
    monitor._ingest(event)  # the receiver's own entry point: State, listeners, hub


async def test_shell_has_no_inline_script_and_relative_urls(http: httpx2.AsyncClient) -> None:
    response = await http.get("")
    assert response.status_code == 200
    html = response.text
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="module" src="static/js/main.js?v=' + aiocelerymon.__version__ + '">'
    ]
    assert "style=" not in html and "<style" not in html
    assert 'src="/' not in html and 'href="/' not in html  # works under any prefix
    for asset in ("static/js/main.js", "static/app.css", "static/vendor/uplot/uPlot.esm.js"):
        got = await http.get(asset)
        assert got.status_code == 200, asset


def test_assets_load_nothing_from_elsewhere() -> None:
    for path in STATIC_DIR.rglob("*.js"):
        if "vendor" in path.parts:
            continue
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path
        assert ".innerHTML" not in text and "eval(" not in text, path
        for target in re.findall(r'from "([^"]+)"', text):
            assert target.startswith(("./", "../vendor/")), (path, target)
    # The shell announces every module the scripts import (one round of fetches, no waterfall).
    imported = {
        (path.parent / target).resolve().relative_to(STATIC_DIR).as_posix()
        for path in (STATIC_DIR / "js").glob("*.js")
        for target in re.findall(r'from "([^"]+)"', path.read_text())
    }
    assert imported == set(MODULES)
    assert (STATIC_DIR / "vendor/uplot/LICENSE").read_text().startswith("The MIT License")
    assert "1.6.32" in (STATIC_DIR / "vendor/uplot/VENDORED.md").read_text()


async def test_workers_and_tasks_pages(monitor: Monitor, http: httpx2.AsyncClient) -> None:
    now = time.time() - 5  # inside the charts' window whatever second the test runs in
    ingest(monitor, type="worker-online", freq=2.0, sw_ident="py-celery", sw_ver="5.7.0")
    for i in range(30):
        ingest(monitor, type="task-received", uuid=f"t{i:02}", name="proj.add",
               args=f"({i}, 1)", kwargs="{}", timestamp=now + i / 100, clock=i * 3)  # fmt: skip
        outcome = "task-failed" if i % 10 == 0 else "task-succeeded"
        extra = {"exception": "boom"} if outcome == "task-failed" else {"runtime": 0.1}
        ingest(monitor, type=outcome, uuid=f"t{i:02}", timestamp=now + i / 100 + 0.01,
               clock=i * 3 + 1, **extra)  # fmt: skip
    workers = (await http.get("api/page/workers")).json()
    assert workers["totals"]["workers"] == 1 and workers["totals"]["online"] == 1
    row = workers["workers"][0]
    assert (row["hostname"], row["succeeded"], row["failed"]) == ("w1@h", 27, 3)

    page = (await http.get("api/page/tasks", params={"limit": 10, "offset": 10})).json()
    assert page["total"] == 30 and page["all"] == 30 and len(page["tasks"]) == 10
    assert page["states"] == {"SUCCESS": 27, "FAILURE": 3}
    failed = (await http.get("api/page/tasks", params={"q": "state:FAILURE"})).json()
    assert failed["total"] == 3 and {t["state"] for t in failed["tasks"]} == {"FAILURE"}
    text = (await http.get("api/page/tasks", params={"q": 'name:proj.add "17, 1"'})).json()
    assert [t["uuid"] for t in text["tasks"]] == ["t17"]
    ordered = (await http.get("api/page/tasks", params={"sort_by": "received", "limit": 3})).json()
    assert [t["uuid"] for t in ordered["tasks"]] == ["t00", "t01", "t02"]
    bad = await http.get("api/page/tasks", params={"q": '"unterminated'})
    assert bad.status_code == 400 and "Unterminated" in bad.json()["error"]
    assert (await http.get("api/page/tasks", params={"limit": 0})).status_code == 400

    series = (await http.get("api/page/series", params={"window": 60})).json()
    assert sum(series["rates"]["cluster"]["succeeded"]) == 27
    assert sum(series["rates"]["cluster"]["failed"]) == 3
    assert series["runtimes"]["proj.add"]["count"] == 27
    assert (await http.get("api/page/series", params={"window": 5})).status_code == 400
    assert (await http.get("api/page/stuck")).json() == {"stuck": []}

    task = (await http.get("api/page/task/t03")).json()["task"]
    assert (task["uuid"], task["state"], task["worker"]) == ("t03", "SUCCESS", "w1@h")
    assert (await http.get("api/page/task/not-yet")).json() == {"task": None}
    worker = (await http.get("api/page/worker/w1@h")).json()
    assert worker["summary"]["alive"] and worker["summary"]["sw_ver"] == "5.7.0"
    assert worker["info"] == {}  # never inspected here
    assert (await http.get("api/page/worker/nobody@h")).json() == {"info": {}, "summary": None}


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("api/page/tasks", {"limit": "x"}),
        ("api/page/tasks", {"limit": "501"}),
        ("api/page/tasks", {"offset": "-1"}),
        ("api/page/tasks", {"offset": str(2**70)}),
        ("api/page/tasks", {"sort_by": "uuid"}),
        ("api/page/tasks", {"q": "(((((("}),
        ("api/page/series", {"window": "nan"}),
        ("api/page/series", {"window": "601"}),
    ],
)
async def test_bad_arguments_are_a_clear_400(
    http: httpx2.AsyncClient, route: str, params: dict[str, str]
) -> None:
    response = await http.get(route, params=params)
    assert response.status_code == 400, response.text
    assert response.text


async def test_live_digest_one_frame_per_tick_for_every_page(monitor: Monitor) -> None:
    from aiocelerymon.web.api.page_live import QUEUE, LiveDigest

    digest = LiveDigest(monitor, interval=3600)  # ticks driven by hand below
    ingest(monitor, type="worker-online", freq=2.0)
    digest.on_event({"type": "task-received", "uuid": "nobody-listens"}, monitor.state)
    pages = [digest.connect() for _ in range(3)]
    try:
        assert digest.frame() is None  # nothing happened since they connected
        now = time.time()
        for i in range(3):
            event = {"type": "task-received", "uuid": f"d{i}", "name": "proj.add",
                     "hostname": "w1@h", "timestamp": now, "local_received": now,
                     "clock": i}  # fmt: skip
            monitor.state.event(event)
            digest.on_event(event, monitor.state)
        digest.on_event({"type": "worker-heartbeat", "hostname": "w1@h"}, monitor.state)
        digest.tick()
        frames = [page.queue.get_nowait() for page in pages]
        assert frames[0] is frames[1] is frames[2]  # built once, the same bytes for all
        import orjson

        data = orjson.loads(frames[0])
        assert data["kind"] == "digest" and data["events"] == 4
        assert [t["uuid"] for t in data["tasks"]] == ["d0", "d1", "d2"]
        assert {t["state"] for t in data["tasks"]} == {"RECEIVED"}
        assert [w["hostname"] for w in data["workers"]] == ["w1@h"]
        digest.tick()
        assert pages[0].queue.empty()  # nothing new: no frame
        # A page that reads nothing loses frames, then is told to resync; the others are not.
        for _ in range(QUEUE + 5):
            digest.on_event({"type": "task-started", "uuid": "d0"}, monitor.state)
            digest.tick()
            for page in pages[1:]:
                page.queue.get_nowait()
        assert pages[0].lagged and pages[0].queue.full()
        while not pages[0].queue.empty():
            pages[0].queue.get_nowait()
        digest.on_event({"type": "task-started", "uuid": "d1"}, monitor.state)
        digest.tick()
        assert orjson.loads(pages[0].queue.get_nowait()) == {"kind": "resync"}
        assert orjson.loads(pages[0].queue.get_nowait())["kind"] == "digest"
    finally:
        for page in pages:
            digest.disconnect(page)
        await digest.aclose()
