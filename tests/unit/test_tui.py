"""The live monitor, headless (textual's pilot), fed by real Nodes + dispatchers on memory://.

The screen is compared with a committed text snapshot of what it shows (tables, selection,
status line); regenerate with ``AIOCELERYMON_UPDATE_SNAPSHOTS=1`` after a deliberate change.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

import aiocelerymon
from aiocelerymon import cli
from aiocelerymon.demo import DemoWorker
from aiocelerymon.tui import MonitorApp
from aiocelerymon.tui.app import PromptScreen, TextScreen

SNAPSHOTS = Path(__file__).parent / "snapshots"
DEADLINE = 10.0
T0 = 1767225600.0  # 2026-01-01 00:00:00 UTC
SIZE = (110, 30)

ADD = "00000000-0000-4000-8000-000000000001"
DIV = "00000000-0000-4000-8000-000000000002"
MAIL = "00000000-0000-4000-8000-000000000003"
SLOW = "00000000-0000-4000-8000-000000000004"
TRACEBACK = "Traceback (most recent call last):\n  ...\nZeroDivisionError: division by zero\n"


@pytest.fixture
def utc() -> Iterator[None]:
    """The TIME column is local time, as in Celery's monitor: pin it for the snapshot."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[aiocelerymon.Client, list[DemoWorker]]]:
    """Two workers answering pidbox commands; their events are sent by each test."""
    async with aiocelerymon.Client(f"memory://tui-{uuid.uuid4().hex}") as client:
        workers = [DemoWorker(client, name) for name in ("w1@test", "w2@test")]
        for worker in workers:
            await worker.node.start()
        yield client, workers
        for worker in workers:
            await worker.node.aclose()


async def send_scenario(workers: list[DemoWorker]) -> int:
    """Worker and task events as a Celery worker sends them; returns how many."""
    w1, w2 = (w.dispatcher for w in workers)
    stats = {"freq": 2.0, "loadavg": [0.5, 0.25, 0.1], "sw_ident": "py-celery"}
    await w1.send("worker-online", active=1, processed=3, **stats)
    await w2.send("worker-online", active=0, processed=7, **stats)
    sent = 2
    for d, task_id, name, end, fields in (
        (w1, ADD, "proj.tasks.add", "task-succeeded", {"result": "4", "runtime": 0.01}),
        (w2, DIV, "proj.tasks.divide", "task-failed", {
            "exception": "ZeroDivisionError('division by zero')", "traceback": TRACEBACK,
        }),
        (w1, MAIL, "proj.tasks.send_email", "task-retried", {
            "exception": "SMTPServerDisconnected()", "traceback": "Traceback ...\n",
        }),
        (w2, SLOW, "proj.tasks.nightly_report", None, {}),
    ):  # fmt: skip
        stamp = T0 + sent
        await d.send(
            "task-received", uuid=task_id, name=name, args="(2, 2)", kwargs="{}",
            timestamp=stamp,
        )  # fmt: skip
        await d.send("task-started", uuid=task_id, timestamp=stamp + 0.5)
        sent += 2
        if end is not None:
            await d.send(end, uuid=task_id, timestamp=stamp + 1, **fields)
            sent += 1
    await w1.flush()
    await w2.flush()
    return sent


def screen_text(app: MonitorApp) -> str:
    """What the monitor shows: both tables, the selection line and the status line."""
    lines: list[str] = []
    for table_id in ("workers", "tasks"):
        table = app.query_one(f"#{table_id}", DataTable)
        rows = [[str(c.label) for c in table.columns.values()]]
        rows += [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.append("")
    lines.append(str(app.query_one("#selected", Static).content))
    lines.append(re.sub(r"\(\d+\.\d/s\)", "(N/s)", str(app.query_one("#status", Static).content)))
    return "\n".join(lines) + "\n"


def assert_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("AIOCELERYMON_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot {path}: run with AIOCELERYMON_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text()


async def open_monitor(app: MonitorApp, pilot) -> None:
    """Wait until the monitor receives and both nodes answered its wake-up heartbeat cast, so
    their heartbeats cannot land in the middle of a scenario."""
    await asyncio.wait_for(app.ready.wait(), DEADLINE)
    await app.wait_for(lambda: len(app.state.workers) == 2)
    await pilot.pause()


async def until_screen(pilot, kind: type) -> object:
    """Let the app run until a screen of ``kind`` is on top (remote calls take a moment)."""
    async with asyncio.timeout(DEADLINE):
        while not isinstance(pilot.app.screen, kind):
            await pilot.pause(0.01)
    return pilot.app.screen


async def test_monitor_shows_workers_and_tasks(cluster, utc) -> None:
    client, workers = cluster
    app = MonitorApp(client, refresh=3600)  # refreshed by wait_for, not by the timer
    async with app.run_test(size=SIZE) as pilot:
        await open_monitor(app, pilot)
        total = await send_scenario(workers)
        # + the two heartbeats answering the receiver's wake-up cast.
        await app.wait_for(lambda: app.event_count == total + 2)
        await pilot.pause()
        assert_snapshot("monitor", screen_text(app))
        # Selection follows j/k; the selection line shows the task, as Celery's does.
        await pilot.press("j")
        assert app.selected == MAIL
        await pilot.press("k")
        assert app.selected == SLOW
        assert str(app.query_one("#selected", Static).content).startswith(f"Selected: {SLOW} ")
        await pilot.press("q")
    assert app.return_code == 0


async def test_info_traceback_result(cluster, utc) -> None:
    client, workers = cluster
    app = MonitorApp(client, refresh=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_monitor(app, pilot)
        total = await send_scenario(workers)
        await app.wait_for(lambda: app.event_count >= total)
        await pilot.pause()
        await pilot.press("j", "j")  # SLOW, MAIL, DIV
        assert app.selected == DIV
        await pilot.press("t")
        screen = await until_screen(pilot, TextScreen)
        assert screen.title_text == f"Task Exception Traceback for {DIV}"
        assert screen.body == TRACEBACK
        await pilot.press("x")  # any key closes it
        await pilot.press("r")
        screen = await until_screen(pilot, TextScreen)
        assert screen.body == "ZeroDivisionError('division by zero')"
        await pilot.press("x")
        await pilot.press("i")
        screen = await until_screen(pilot, TextScreen)
        assert screen.title_text == f"Task details for {DIV}"
        assert screen.body.splitlines()[:2] == ["args: (2, 2)", "kwargs: {}"]
        assert "state: FAILURE" in screen.body
        await pilot.press("x")
        # A successful task has no traceback: the key beeps and opens nothing.
        await pilot.press("j")
        assert app.selected == ADD
        await pilot.press("t")
        await pilot.pause()
        assert not isinstance(app.screen, TextScreen)
        await pilot.press("r")
        screen = await until_screen(pilot, TextScreen)
        assert screen.body == "4"
        await pilot.press("x", "q")


async def test_revoke_and_rate_limit_go_to_the_workers(cluster, utc) -> None:
    client, workers = cluster
    app = MonitorApp(client, refresh=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_monitor(app, pilot)
        total = await send_scenario(workers)
        await app.wait_for(lambda: app.event_count >= total)
        await pilot.pause()
        assert app.selected == SLOW
        await pilot.press("c")
        screen = await until_screen(pilot, TextScreen)
        assert screen.title_text == "Remote Control Command Replies"
        assert sorted(screen.body.splitlines()) == [
            # Celery formats the ids as a set (celery/worker/control.py revoke).
            f"w1@test: tasks {{'{SLOW}'}} flagged as revoked",
            f"w2@test: tasks {{'{SLOW}'}} flagged as revoked",
        ]
        assert all(SLOW in w.revoked for w in workers)
        await pilot.press("x")
        await pilot.press("l")
        await until_screen(pilot, PromptScreen)
        await pilot.press(*"10/m", "enter")
        screen = await until_screen(pilot, TextScreen)
        assert [w.rate_limits.get("proj.tasks.nightly_report") for w in workers] == ["10/m"] * 2
        assert screen.body.count("new rate limit set successfully") == 2
        await pilot.press("x", "q")


async def test_filters_by_state_and_name(cluster, utc) -> None:
    client, workers = cluster
    app = MonitorApp(client, refresh=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_monitor(app, pilot)
        total = await send_scenario(workers)
        await app.wait_for(lambda: app.event_count >= total)
        await pilot.pause()
        tasks = app.query_one("#tasks", DataTable)
        assert tasks.row_count == 4
        await pilot.press("s")
        await until_screen(pilot, PromptScreen)
        await pilot.press(*"failure,retry", "enter")
        await pilot.pause()
        assert sorted(str(tasks.get_row_at(i)[0]) for i in range(tasks.row_count)) == [DIV, MAIL]
        assert "Filter: state=FAILURE,RETRY" in app.status_text()
        await pilot.press("slash")
        await until_screen(pilot, PromptScreen)
        await pilot.press(*"email", "enter")
        await pilot.pause()
        assert [str(tasks.get_row_at(i)[0]) for i in range(tasks.row_count)] == [MAIL]
        # Clearing the state filter keeps the name filter; a glob works too.
        await pilot.press("s")
        await until_screen(pilot, PromptScreen)
        await pilot.press("ctrl+u", "enter")
        await pilot.press("slash")
        await until_screen(pilot, PromptScreen)
        await pilot.press("ctrl+u", *"proj.tasks.d*", "enter")
        await pilot.pause()
        assert [str(tasks.get_row_at(i)[0]) for i in range(tasks.row_count)] == [DIV]
        await pilot.press("q")


async def test_events_command_without_textual_is_one_line(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "textual" else real(name)
    )
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(["-b", "memory://x", "events"], stdout=out, stderr=err)
    assert code == cli.EX_USAGE
    assert (
        err.getvalue()
        == "Error: The live monitor needs textual: pip install 'aiocelerymon[tui]'.\n"
    )
    assert out.getvalue() == ""


async def test_warnings_become_toasts_while_the_screen_is_up(cluster) -> None:
    client, _ = cluster
    log = logging.getLogger("aiocelerymon.test")
    ours = logging.getLogger("aiocelerymon")
    stream = logging.StreamHandler(io.StringIO())
    ours.addHandler(stream)
    try:
        app = MonitorApp(client, refresh=3600)
        async with app.run_test(size=SIZE) as pilot:
            with app.logs_as_notifications():
                assert stream not in ours.handlers
                log.warning("connection to memory:// lost (boom); reconnecting")
                await pilot.pause()
                messages = [n.message for n in app._notifications]
            assert messages == ["connection to memory:// lost (boom); reconnecting"]
            assert stream in ours.handlers
            await pilot.press("q")
        assert stream.stream.getvalue() == ""
    finally:
        ours.removeHandler(stream)
