"""``aiocelerymon events --dump`` and ``--camera`` on the in-memory broker."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid

import pytest
from celery.events.snapshot import Polaroid

import aiocelerymon
from aiocelerymon import cli
from aiocelerymon.events import Camera, Dumper
from aiocelerymon.wire import names

SHOTS: list[int] = []


class CountingCamera(Camera):
    """Used by --camera below: records how many tasks the State holds at each shot."""

    async def on_shutter(self, state):
        SHOTS.append(len(state.tasks))


POLAROID_SHOTS: list[tuple[int, list[str]]] = []


class CeleryCam(Polaroid):
    """An operator's existing Celery camera, unchanged: Celery's on_shutter(state) hook."""

    clear_after = True

    def on_shutter(self, state):
        POLAROID_SHOTS.append((len(state.tasks), sorted(t.name for t in state.tasks.values())))


async def _run_with_events(argv: list[str], url: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    async with aiocelerymon.Client(url) as client:
        # The receiver casts `heartbeat` once subscribed: our readiness signal, no sleep.
        async with client.transport.subscribe(names.node_binding("probe@test")) as probe:
            run = asyncio.create_task(cli.run(["-b", url, *argv], stdout=out, stderr=err))
            await asyncio.wait_for(probe.receive(), 10)
        d = client.events.dispatcher("w1@test")
        task_id = str(uuid.uuid4())
        await d.send("task-received", uuid=task_id, name="proj.add", args="(2, 2)", kwargs="{}")
        await d.send("task-succeeded", uuid=task_id, result="4", runtime=0.5)
        await d.flush()
        await d.send("worker-offline", freq=2.0)
        code = await asyncio.wait_for(run, 10)
    assert err.getvalue() == ""
    return code, out.getvalue()


async def test_dump_prints_celerys_lines():
    url = f"memory://cli-ev-{uuid.uuid4().hex}"
    code, output = await _run_with_events(["events", "--dump", "--limit", "3"], url)
    lines = output.splitlines()
    assert code == 0
    assert lines[0] == "-> evdump: starting capture..."
    assert len(lines) == 4
    assert " task received: proj.add(" in lines[1] and "args=(2, 2) kwargs={}" in lines[1]
    assert " task succeeded: proj.add(" in lines[2] and "result=4, runtime=0.5" in lines[2]
    assert lines[3].startswith("w1@test [") and "] shutdown: " in lines[3]


async def test_dump_json_is_one_object_per_line():
    url = f"memory://cli-ev-{uuid.uuid4().hex}"
    code, output = await _run_with_events(["events", "--dump", "--json", "--limit", "3"], url)
    events = [json.loads(line) for line in output.splitlines()[1:]]
    assert code == 0
    assert [e["type"] for e in events] == ["task-received", "task-succeeded", "worker-offline"]
    assert all("local_received" in e for e in events)
    # The same events, formatted, are what the text dump prints.
    dumper = Dumper()
    assert dumper.format(events[0]).startswith("w1@test [")


async def test_camera_runs_on_the_state():
    SHOTS.clear()
    url = f"memory://cli-ev-{uuid.uuid4().hex}"
    argv = ["events", "--camera", f"{__name__}.CountingCamera", "--frequency", "60", "--limit", "3"]
    code, _ = await _run_with_events(argv, url)
    assert code == 0
    assert SHOTS == [1]  # the last shot on shutdown sees the one task


async def test_a_celery_camera_runs_and_the_banner_is_celerys():
    POLAROID_SHOTS.clear()
    url = f"memory://cli-ev-{uuid.uuid4().hex}"
    argv = ["events", "--camera", f"{__name__}.CeleryCam", "--frequency", "60", "--limit", "3"]
    code, output = await _run_with_events(argv, url)
    assert code == 0
    assert output.splitlines()[0] == (
        f"-> evcam: Taking snapshots with {__name__}.CeleryCam (every 60.0 secs.)"
    )
    assert POLAROID_SHOTS == [(1, ["proj.add"])]  # the last shot on shutdown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["events", "--camera", "nosuch.module.Cam"], "Cannot load camera"),
        (["events", "--camera", "aiocelerymon.events.State"], "not an aiocelerymon.events.Camera"),
    ],
)
async def test_events_usage_errors(argv, message):
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(["-b", "memory://x", *argv], stdout=out, stderr=err)
    assert code == cli.EX_USAGE
    assert message in err.getvalue()


async def test_events_waits_for_a_broker_that_is_down(caplog: pytest.LogCaptureFixture):
    """Like `celery events`, the monitor retries a broker that is down, with one warning for
    the outage (not one per attempt), and comes up by itself when the broker does."""
    from aiocelerymon.transports.memory import MemoryBroker

    name = f"cli-ev-down-{uuid.uuid4().hex}"
    url = f"memory://{name}"
    broker = MemoryBroker.get(name)
    broker.stop()
    caplog.set_level(logging.DEBUG, logger="aiocelerymon")
    out, err = io.StringIO(), io.StringIO()
    run = asyncio.create_task(
        cli.run(["-b", url, "events", "--dump", "--limit", "1"], stdout=out, stderr=err)
    )

    def attempts() -> int:
        return sum("connect attempt" in r.getMessage() for r in caplog.records)

    try:
        async with asyncio.timeout(10):
            while attempts() < 2:  # several attempts fail while the broker stays down
                assert not run.done(), err.getvalue()
                await asyncio.sleep(0.01)  # log records have no event to await
    finally:
        broker.start()
    async with aiocelerymon.Client(url) as client:
        async with client.transport.subscribe(names.node_binding("probe@test")) as probe:
            await asyncio.wait_for(probe.receive(), 10)  # the receiver's wake-up: it is live
        await client.events.dispatcher("w1@test").send("worker-online", freq=2.0)
        code = await asyncio.wait_for(run, 10)
    assert code == 0, err.getvalue()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "retrying until it answers" in warnings[0].getMessage()
    assert out.getvalue().splitlines()[1].startswith("w1@test [")
    assert "] started: " in out.getvalue().splitlines()[1]  # Celery's words for worker-online
