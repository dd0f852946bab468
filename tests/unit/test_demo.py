"""The README's main job (``aiocelerymon demo``) and the simulated cluster behind it."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid

import aiocelerymon
from aiocelerymon import cli
from aiocelerymon.demo import NODES, TASKS, DemoCluster, TaskKind

DEADLINE = 10.0
#: Addressed calls return as soon as the node answered.
ONE = ["n1@demo"]


async def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.wait_for(cli.run(list(argv), stdout=out, stderr=err), 30)
    return code, out.getvalue(), err.getvalue()


async def test_demo_without_a_terminal_dumps_celerys_lines() -> None:
    code, out, err = await run_cli("demo", "--limit", "40", "--rate", "50")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "-> evdump: starting capture..."
    events = [ln for ln in lines if re.match(r"(alpha|beta|gamma)@demo \[.*\+00:00\] ", ln)]
    assert len(events) == 40
    # Every node came online (Celery's dumper calls worker-online "started") and tasks ran.
    for node in NODES:
        assert any(ln.startswith(f"{node} [") and "] started: " in ln for ln in events)
    assert any("] task received: proj.tasks." in ln for ln in events)
    assert any("] task started: proj.tasks." in ln for ln in events)


async def test_demo_json_duration_bound() -> None:
    code, out, _ = await run_cli("demo", "--dump", "--json", "--duration", "1", "--rate", "50")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()[1:]]
    assert {e["hostname"] for e in events} == set(NODES)
    assert {"worker-online", "task-received", "task-started"} <= {e["type"] for e in events}


async def test_demo_cluster_answers_like_workers_and_reports_every_outcome() -> None:
    kinds = (
        TaskKind("t.ok", (0.0, 0.0)),
        TaskKind("t.fail", (0.0, 0.0), fail_rate=1.0, exception="KeyError('x')"),
        # Always retried: three task-retried, then it fails as max_retries would.
        TaskKind("t.retry", (0.0, 0.0), retry_rate=1.0),
        TaskKind("t.slow", (60.0, 60.0)),
    )
    async with aiocelerymon.Client(f"memory://demo-{uuid.uuid4().hex}") as client:
        seen: list[dict] = []
        arrived = asyncio.Event()

        def on_event(event: dict) -> None:
            seen.append(event)
            arrived.set()

        async def until(predicate) -> None:
            async with asyncio.timeout(DEADLINE):
                while not predicate():
                    arrived.clear()
                    await arrived.wait()

        receiver = client.events.receiver(handlers={"*": on_event})
        capture = asyncio.ensure_future(receiver.capture())
        await asyncio.wait_for(receiver.ready.wait(), DEADLINE)
        cluster = DemoCluster(client, nodes=("n1@demo",), rate=0, seed=7)
        (worker,) = cluster.workers
        worker.tasks = {k.name: k for k in kinds}
        await cluster.start()
        try:
            ids = {k.name: worker.submit(k) for k in kinds}

            def ended(task_id: str, type_: str) -> bool:
                return any(e["type"] == type_ and e.get("uuid") == task_id for e in seen)

            await until(
                lambda: (
                    ended(ids["t.ok"], "task-succeeded")
                    and ended(ids["t.fail"], "task-failed")
                    and ended(ids["t.retry"], "task-failed")
                    and ended(ids["t.slow"], "task-started")
                )
            )
            retried = [e for e in seen if e["type"] == "task-retried"]
            assert [e["uuid"] for e in retried] == [ids["t.retry"]] * 3
            failed = next(e for e in seen if e.get("uuid") == ids["t.fail"] and "exception" in e)
            assert failed["exception"] == "KeyError('x')"
            assert failed["traceback"].startswith("Traceback (most recent call last):")
            assert failed["traceback"].endswith("KeyError: x\n")

            control = client.control
            assert (await control.ping(ONE, timeout=DEADLINE)).flatten() == {
                "n1@demo": {"ok": "pong"}
            }
            queues = (await control.inspect(ONE, timeout=DEADLINE).active_queues()) or {}
            assert [q["name"] for q in queues["n1@demo"]] == ["celery"]
            active = (await control.inspect(ONE, timeout=DEADLINE).active()) or {}
            assert [t["id"] for t in active["n1@demo"]] == [ids["t.slow"]]
            replies = await control.rate_limit("t.slow", "5/s", ONE, reply=True, timeout=DEADLINE)
            assert replies == [{"n1@demo": {"ok": "new rate limit set successfully"}}]
            registered = (await control.inspect(ONE, timeout=DEADLINE).registered()) or {}
            assert "t.slow [rate_limit=5/s]" in registered["n1@demo"]
            # A retry is a new delivery: a task-received with retries + 1 each time.
            received = [e for e in seen if e["type"] == "task-received"]
            assert [e["retries"] for e in received if e["uuid"] == ids["t.retry"]] == [0, 1, 2, 3]
            # revoke --terminate kills the slow task; the worker reports task-revoked.
            replies = await control.revoke(
                ids["t.slow"], ONE, terminate=True, reply=True, timeout=DEADLINE
            )
            assert replies == [{"n1@demo": {"ok": f"terminate: {ids['t.slow']}"}}]
            await until(lambda: ended(ids["t.slow"], "task-revoked"))
            assert worker.node.is_revoked(ids["t.slow"])
        finally:
            await cluster.aclose()
        await until(lambda: any(e["type"] == "worker-offline" for e in seen))
        capture.cancel()
        assert worker.processed == len(kinds)


def test_demo_task_mix_has_every_outcome() -> None:
    assert any(k.fail_rate for k in TASKS) and any(k.retry_rate for k in TASKS)
    assert any(k.runtime[0] >= 1 for k in TASKS)  # slow tasks stay STARTED on screen


async def test_demo_revoke_reply_and_rate_limit_as_a_worker() -> None:
    async with aiocelerymon.Client(f"memory://demo-{uuid.uuid4().hex}") as client:
        seen: list[dict] = []
        arrived = asyncio.Event()

        def on_event(event: dict) -> None:
            seen.append(event)
            arrived.set()

        async def until(predicate) -> None:
            async with asyncio.timeout(DEADLINE):
                while not predicate():
                    arrived.clear()
                    await arrived.wait()

        def has(task_id: str, type_: str) -> bool:
            return any(e["type"] == type_ and e.get("uuid") == task_id for e in seen)

        receiver = client.events.receiver(handlers={"*": on_event})
        capture = asyncio.ensure_future(receiver.capture())
        await asyncio.wait_for(receiver.ready.wait(), DEADLINE)
        cluster = DemoCluster(client, nodes=("n1@demo",), rate=0, seed=3)
        (worker,) = cluster.workers
        kind = TaskKind("t.quick", (0.0, 0.0))
        worker.tasks = {kind.name: kind}
        await cluster.start()
        try:
            control = client.control
            # Celery formats the revoked ids as a set: tasks {'<id>'} flagged as revoked.
            replies = await control.revoke("early", ONE, reply=True, timeout=DEADLINE)
            assert replies == [{"n1@demo": {"ok": "tasks {'early'} flagged as revoked"}}]
            worker.submit(kind, task_id="early")
            await until(lambda: has("early", "task-revoked"))
            assert not has("early", "task-started")  # discarded on receipt, as a worker does
            # One start an hour: the second task is received but waits for its token.
            replies = await control.rate_limit(kind.name, "1/h", ONE, reply=True, timeout=DEADLINE)
            assert replies == [{"n1@demo": {"ok": "new rate limit set successfully"}}]
            worker.submit(kind, task_id="first")
            worker.submit(kind, task_id="second")
            await until(lambda: has("first", "task-succeeded") and has("second", "task-received"))
            assert not has("second", "task-started")
            replies = await control.revoke("second", ONE, terminate=True, reply=True)
            assert replies == [{"n1@demo": {"ok": "terminate: second"}}]
            await until(lambda: has("second", "task-revoked"))
            assert not has("second", "task-started")
        finally:
            await cluster.aclose()
            capture.cancel()
