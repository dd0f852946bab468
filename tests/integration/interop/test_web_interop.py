"""``aiocelerymon serve`` against real Celery workers, next to the real Flower 2.2.

One cluster per broker (Redis on its own database with a key prefix; RabbitMQ on its own vhost
with control exchange ``ops``): two real workers, one ``aiocelerymon serve`` and one Flower,
all subprocesses, shared by every test of the module. Checked here:

- every API route, on both brokers;
- parity: Flower's GET routes and ours give the same keys and values (Lamport clocks, uptimes
  and rusage aside); the control routes reach the workers, which change (``inspect``);
- push: WebSocket and SSE with filters; a WebSocket client that stops reading does not hold
  ingestion up, loses no State event, and is told it lagged;
- schemathesis over our OpenAPI document: no 5xx (Redis only: it is the same app);
- SIGTERM: exit status 0.

Runs with Celery >= 5.6 (the minors the web issue names); the push-stall and schemathesis
tests, which do not depend on the workers' version, on the newest minor only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celery
import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from aiocelerymon.events import EventDispatcher
from tests.support.celery_worker import CeleryWorker
from tests.support.interop import VARIANTS, Variant, variant_url, workers
from tests.support.web import Process, flower, serve, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.interop,
    pytest.mark.celery_minors("5.6", "5.7"),  # the web API is tested on 5.6+
]

DEADLINE = 60.0
ADD = "tests.integration.celery_app.add"
FAIL = "tests.integration.celery_app.fail"
#: Ours finishes early; Flower always waits its inspect timeout (milliseconds).
OUR_INSPECT_TIMEOUT = "20"
#: The parts of a worker's stats that change between two inspections.
VOLATILE_STATS = frozenset({"uptime", "rusage", "clock", "pool"})
#: Task fields that differ between two receivers by design: their own Lamport clocks.
VOLATILE_TASK = frozenset({"clock"})
WEB_VARIANTS = [p for p in VARIANTS if p.id in ("redis-db-prefix", "amqp-vhost-ops")]
#: What does not depend on the workers' Celery version runs on the newest minor only.
newest_only = pytest.mark.newest_minor


@dataclass
class Web:
    variant: Variant
    url: str
    config: dict[str, Any]
    workers: list[CeleryWorker]
    ours: Process
    flower: Process
    app: Any  # celery.Celery, the client side

    @property
    def alpha(self) -> str:
        return self.workers[0].hostname

    @property
    def beta(self) -> str:
        return self.workers[1].hostname

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.ours.url + path, params=params, timeout=DEADLINE)

    def post(self, path: str, **data: Any) -> httpx.Response:
        return httpx.post(self.ours.url + path, data=data, timeout=DEADLINE)

    def flower_get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.flower.url + path, params=params, timeout=DEADLINE)

    def inspect(self, method: str, *args: Any, node: str | None = None) -> Any:
        """Celery's own inspect, to see what the workers really did."""
        destination = [node] if node else None
        inspect = self.app.control.inspect(timeout=5.0, destination=destination)
        return getattr(inspect, method)(*args)

    def send(self, name: str, *args: Any) -> str:
        return str(self.app.send_task(name, args=args).id)


@pytest.fixture(scope="module", params=WEB_VARIANTS)
def web(request: pytest.FixtureRequest) -> Iterator[Web]:
    variant: Variant = request.param
    config = variant.config(worker_direct=True, worker_pool_restarts=True)
    hostnames = [f"alpha.{variant.id}@web", f"beta.{variant.id}@web"]
    with (
        variant_url(request, variant) as url,
        workers(variant, url, hostnames, config=config, events=True) as started,
    ):
        full = {**config, "broker_url": url}
        app = celery.Celery("aiocm-web-client", broker=url, set_as_current=False)
        app.conf.update(config)
        with (
            serve(full, "--inspect-timeout", OUR_INSPECT_TIMEOUT) as ours,
            flower(full) as theirs,
        ):
            # Both have seen every worker's heartbeat (Flower only polls its own State).
            for process in (ours, theirs):
                until(
                    lambda p=process: httpx.get(p.url + "/api/workers?status=1").json(),
                    lambda status: set(status) == set(hostnames),
                    DEADLINE,
                )
            try:
                yield Web(variant, url, full, started, ours, theirs, app)
            finally:
                app.close()


# -- helpers ----------------------------------------------------------------------------------


def strip_task(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k not in VOLATILE_TASK}


def final(web: Web, ids: list[str], base: str) -> dict[str, Any]:
    """``/api/tasks`` of ``base`` once every task in ``ids`` is in a final state."""

    def fetch() -> dict[str, Any]:
        return dict(httpx.get(base + "/api/tasks", timeout=DEADLINE).json())

    def done(tasks: dict[str, Any]) -> bool:
        return all(tasks.get(i, {}).get("state") in ("SUCCESS", "FAILURE") for i in ids)

    return until(fetch, done, DEADLINE)


# -- meta ----------------------------------------------------------------------------------


def test_healthcheck_openapi_and_stats(web: Web) -> None:
    assert web.get("/healthcheck").text == web.flower_get("/healthcheck").text == "OK"
    doc = web.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/workers", "/api/tasks", "/api/task/rate-limit/{taskname}"):
        assert path in doc["paths"]
    stats = web.get("/api/stats").json()
    assert stats["ready"] is True and stats["events"] > 0 and stats["malformed"] == 0


# -- workers -------------------------------------------------------------------------------


def test_workers_refresh_matches_flower(web: Web) -> None:
    ours = web.get("/api/workers", refresh="1").json()
    theirs = web.flower_get("/api/workers", refresh="1").json()
    assert set(ours) == set(theirs) == {web.alpha, web.beta}
    for node in ours:
        mine, flowers = ours[node], theirs[node]
        assert set(mine) == set(flowers)  # stats, active_queues, registered, conf, timestamp
        assert sorted(mine["registered"]) == sorted(flowers["registered"])
        assert ADD in mine["registered"]
        assert mine["active_queues"] == flowers["active_queues"]
        assert mine["conf"] == flowers["conf"]
        assert set(mine["stats"]) == set(flowers["stats"])
        for key in set(mine["stats"]) - VOLATILE_STATS:
            assert mine["stats"][key] == flowers["stats"][key], key
    one = web.get("/api/workers", refresh="true", workername=web.alpha).json()
    assert set(one) == {web.alpha}
    # One named worker: its task lists are inspected too, as Flower does.
    assert {"active", "reserved", "scheduled", "revoked"} <= set(one[web.alpha])
    flowers_one = web.flower_get("/api/workers", refresh="true", workername=web.alpha).json()
    assert set(one[web.alpha]) == set(flowers_one[web.alpha])


def test_workers_status_and_errors_match_flower(web: Web) -> None:
    status = web.get("/api/workers", status="1").json()
    assert status == web.flower_get("/api/workers", status="1").json()
    assert status == {web.alpha: True, web.beta: True}
    for params in ({"workername": "nobody@nowhere"}, {"refresh": "maybe"}):
        mine, flowers = web.get("/api/workers", **params), web.flower_get("/api/workers", **params)
        assert mine.status_code == flowers.status_code, params
        assert mine.status_code in (400, 404)
        assert mine.text == flowers.text


# -- tasks ---------------------------------------------------------------------------------


def test_tasks_match_flower(web: Web) -> None:
    ids = [web.send(ADD, 2, 3), web.send(ADD, 20, 30), web.send(FAIL)]
    ours = final(web, ids, web.ours.url)
    theirs = final(web, ids, web.flower.url)
    for task_id in ids:
        assert strip_task(ours[task_id]) == strip_task(theirs[task_id])
    assert ours[ids[0]]["result"] == "5" and ours[ids[2]]["state"] == "FAILURE"
    assert ours[ids[2]]["worker"] in (web.alpha, web.beta)
    info = web.get(f"/api/task/info/{ids[2]}").json()
    assert strip_task(info) == strip_task(web.flower_get(f"/api/task/info/{ids[2]}").json())
    assert "RuntimeError" in info["exception"] and "Traceback" in info["traceback"]
    assert web.get("/api/task/types").json() == web.flower_get("/api/task/types").json()

    mine_ids = set(ids)
    cases: list[dict[str, str]] = [
        {},
        {"limit": "2"},
        {"limit": "1", "offset": "1"},
        {"state": "FAILURE"},
        {"taskname": ADD},
        {"sort_by": "name"},
        {"sort_by": "-received"},
        {"search": "state:FAILURE"},
        {"search": 'args:"(20," OR args:"(2,"'},
        {"search": '"(2, 3)"'},
        {"workername": web.alpha},
        {"received_start": "2000-01-01 00:00", "received_end": "2100-01-01 00:00"},
    ]
    for params in cases:
        mine = web.get("/api/tasks", **params)
        flowers = web.flower_get("/api/tasks", **params)
        assert mine.status_code == flowers.status_code == 200, params
        # Only tasks both saw (Flower started with the module; so did we, but be exact).
        common = [k for k in flowers.json() if k in mine.json()]
        assert [k for k in mine.json() if k in common] == common, params
        if "limit" not in params:
            assert mine_ids & set(mine.json()) == mine_ids & set(flowers.json()), params
    for params in ({"sort_by": "color"}, {"search": "ab"}, {"received_start": "yesterday"},
                   {"limit": "x"}):  # fmt: skip
        mine, flowers = web.get("/api/tasks", **params), web.flower_get("/api/tasks", **params)
        assert mine.status_code == flowers.status_code == 400, params
    unknown = str(uuid.uuid4())
    assert web.get(f"/api/task/info/{unknown}").status_code == 404
    assert web.flower_get(f"/api/task/info/{unknown}").status_code == 404


def test_queue_lengths(web: Web) -> None:
    web.get("/api/workers", refresh="1")
    ours = web.get("/api/queues/length").json()["active_queues"]
    names = {q["name"] for q in ours}
    assert "celery" in names
    celery_q = next(q for q in ours if q["name"] == "celery")
    assert celery_q["messages"] == 0
    if web.variant.broker == "redis":
        theirs = web.flower_get("/api/queues/length").json()["active_queues"]
        assert {(q["name"], q["messages"]) for q in theirs} == {
            (q["name"], q["messages"]) for q in ours
        }
        assert celery_q["consumers"] is None  # BRPOP consumers are invisible on Redis
    else:
        assert celery_q["consumers"] == 2  # Flower needs the management plugin for this


def test_send_task_runs_on_a_real_worker(web: Web) -> None:
    reply = httpx.post(
        web.ours.url + f"/api/task/send-task/{ADD}",
        json={"args": [40, 2]},
        timeout=DEADLINE,
    )
    assert reply.status_code == 200
    task_id = reply.json()["task-id"]
    tasks = final(web, [task_id], web.ours.url)
    assert tasks[task_id]["result"] == "42"
    assert tasks[task_id]["args"] == "(40, 2)"
    bad = httpx.post(web.ours.url + f"/api/task/send-task/{ADD}", json={"args": 1})
    assert bad.status_code == 400
    assert "action='task.send'" in web.ours.wait_line(lambda s: "task.send" in s, DEADLINE)


# -- control -------------------------------------------------------------------------------


def _rate_limits(web: Web, node: str) -> str:
    registered = web.inspect("registered", "rate_limit", node=node) or {}
    return " ".join(registered.get(node, []))


def test_rate_and_time_limits_reach_the_workers(web: Web) -> None:
    reply = web.post(f"/api/task/rate-limit/{ADD}", workername=web.alpha, ratelimit="7/m")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["message"] == "new rate limit set successfully"
    assert body["replies"] == {web.alpha: {"ok": "new rate limit set successfully"}}
    assert f"{ADD} [rate_limit=7/m]" in _rate_limits(web, web.alpha)
    assert "rate_limit=7/m" not in _rate_limits(web, web.beta)
    # Flower on the other worker: the same answer, the same effect.
    flowers = httpx.post(
        web.flower.url + f"/api/task/rate-limit/{ADD}",
        data={"workername": web.beta, "ratelimit": "9/m"},
        timeout=DEADLINE,
    )
    assert flowers.json() == {"message": body["message"]}
    assert "rate_limit=9/m" in _rate_limits(web, web.beta)
    # No workername: every live worker, each reply shown.
    every = web.post(f"/api/task/rate-limit/{ADD}", ratelimit="100/s")
    assert every.status_code == 200
    assert set(every.json()["replies"]) == {web.alpha, web.beta}
    assert all("rate_limit=100/s" in _rate_limits(web, n) for n in (web.alpha, web.beta))

    timeout = web.post(f"/api/task/timeout/{ADD}", workername=web.alpha, soft="10", hard="20")
    assert timeout.status_code == 200, timeout.text
    limits = web.inspect("registered", "time_limit", "soft_time_limit", node=web.alpha)
    assert "time_limit=20.0" in " ".join(limits[web.alpha])
    assert "soft_time_limit=10.0" in " ".join(limits[web.alpha])

    # A task no worker has: the workers say so (404), wherever Flower's own app stands.
    unknown = web.post("/api/task/rate-limit/proj.nothing", ratelimit="1/s")
    assert unknown.status_code == 404
    assert set(unknown.json()["replies"]) == {web.alpha, web.beta}
    assert web.post(f"/api/task/rate-limit/{ADD}").status_code == 400  # ratelimit missing
    nobody = web.post(f"/api/task/rate-limit/{ADD}", workername="nobody@x", ratelimit="1/s")
    assert nobody.status_code == 404
    line = web.ours.wait_line(lambda s: "task.rate_limit" in s, DEADLINE)
    assert f"destination='{web.alpha}'" in line and "user='anonymous'" in line


def test_revoke_reaches_every_worker(web: Web) -> None:
    task_id = str(uuid.uuid4())
    reply = web.post(f"/api/task/revoke/{task_id}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["message"] == f"Revoked '{task_id}'"
    assert set(reply.json()["replies"]) == {web.alpha, web.beta}
    for node in (web.alpha, web.beta):
        assert task_id in web.inspect("revoked", node=node)[node]


def test_pool_and_consumer_routes_change_the_worker(web: Web) -> None:
    def processes() -> int:
        stats = web.inspect("stats", node=web.alpha) or {}
        return len(stats.get(web.alpha, {}).get("pool", {}).get("processes", []))

    before = processes()
    grow = web.post(f"/api/worker/pool/grow/{web.alpha}", n="1")
    assert grow.status_code == 200 and grow.json()["message"] == (
        f"Growing '{web.alpha}' worker's pool by 1"
    )
    until(processes, lambda n: n == before + 1, DEADLINE)
    shrink = web.post(f"/api/worker/pool/shrink/{web.alpha}", n="1")
    assert shrink.status_code == 200
    until(processes, lambda n: n == before, DEADLINE)

    # No --autoscale on this worker: it refuses, and we say so (Flower: 403 too).
    auto = web.post(f"/api/worker/pool/autoscale/{web.alpha}", min="1", max="2")
    assert auto.status_code == 403
    assert "error" in auto.json()["replies"][web.alpha]
    assert web.post(f"/api/worker/pool/autoscale/{web.alpha}", min="1").status_code == 400

    restart = web.post(f"/api/worker/pool/restart/{web.alpha}")
    assert restart.status_code == 200, restart.text  # worker_pool_restarts is on

    queue = f"web.extra.{uuid.uuid4().hex[:6]}"
    added = web.post(f"/api/worker/queue/add-consumer/{web.alpha}", queue=queue)
    assert added.status_code == 200 and added.json()["message"] == f"add consumer {queue}"

    def queues() -> set[str]:
        active = web.inspect("active_queues", node=web.alpha) or {}
        return {q["name"] for q in active.get(web.alpha, [])}

    # Celery replies first and consumes on its next loop turn (``consumer.call_soon``).
    until(queues, lambda names: queue in names, DEADLINE)
    cancelled = web.post(f"/api/worker/queue/cancel-consumer/{web.alpha}", queue=queue)
    assert cancelled.status_code == 200
    until(queues, lambda names: queue not in names, DEADLINE)
    for route in ("pool/grow", "pool/restart", "queue/add-consumer", "shutdown"):
        assert web.post(f"/api/worker/{route}/nobody@x", queue="q").status_code == 404


# -- push ----------------------------------------------------------------------------------


def _ws_url(web: Web, path: str) -> str:
    return web.ours.url.replace("http://", "ws://") + path


def test_websocket_and_sse_stream_filtered_events(web: Web) -> None:
    url = _ws_url(web, f"/api/events/ws?type=task-succeeded&taskname={ADD}")
    with ws_connect(url, open_timeout=DEADLINE) as ws:
        web.send(FAIL)  # filtered out: another name, and it fails
        task_id = web.send(ADD, 1, 1)
        message = json.loads(ws.recv(timeout=DEADLINE))
    assert message["kind"] == "event"
    assert message["event"]["type"] == "task-succeeded" and message["event"]["uuid"] == task_id
    assert message["task"] == {
        "uuid": task_id, "name": ADD, "state": "SUCCESS", "worker": message["task"]["worker"],
    }  # fmt: skip
    with httpx.stream(
        "GET", web.ours.url + "/api/events", params={"state": "FAILURE"}, timeout=DEADLINE
    ) as sse:
        assert sse.headers["content-type"].startswith("text/event-stream")
        failed = web.send(FAIL)
        for line in sse.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if data["kind"] == "event" and data["event"].get("uuid") == failed:
                    break
    assert data["task"]["state"] == "FAILURE"


def _stalled_socket(web: Web, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads again."""
    host, port = web.ours.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _read_frames(sock: socket.socket, want: int) -> list[dict[str, Any]]:
    """Read unmasked server text frames until ``want`` non-event messages were seen."""
    sock.settimeout(DEADLINE)
    buf = b""
    out: list[dict[str, Any]] = []

    def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise AssertionError("connection closed")
            buf += chunk
        data, buf = buf[:n], buf[n:]
        return data

    while sum(1 for m in out if m["kind"] != "event") < want:
        b0, b1 = need(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(need(2), "big")
        elif length == 127:
            length = int.from_bytes(need(8), "big")
        payload = need(length)
        if b0 & 0x0F == 1:
            out.append(json.loads(payload))
    return out


@newest_only
def test_a_stalled_websocket_does_not_hold_ingestion_or_lose_events(web: Web) -> None:
    burst = 40_000
    host = f"burst.{uuid.uuid4().hex[:6]}@web"
    prefix = f"burst-{uuid.uuid4().hex[:8]}-"
    stalled = _stalled_socket(web, f"/api/events/ws?worker={host}")
    counted: list[int] = []
    with ws_connect(_ws_url(web, f"/api/events/ws?worker={host}"), open_timeout=DEADLINE) as live:

        def count() -> None:
            seen = missed = 0
            with contextlib.suppress(Exception):
                while seen + missed < burst:
                    message = json.loads(live.recv(timeout=DEADLINE))
                    if message["kind"] == "event":
                        seen += 1
                    elif message["kind"] == "lagged":
                        missed += message["missed"]
            counted.extend([seen, missed])

        reader = threading.Thread(target=count)
        reader.start()
        before = web.get("/api/stats").json()

        async def send_burst() -> None:
            client = web.variant.client(web.url)
            async with client:
                dispatcher: EventDispatcher = client.events.dispatcher(host)
                for i in range(burst):
                    await dispatcher.send("task-received", uuid=f"{prefix}{i}", name="burst")
                await dispatcher.flush()

        asyncio.run(send_burst())
        last = f"{prefix}{burst - 1}"
        until(lambda: web.get(f"/api/task/info/{last}").status_code, lambda c: c == 200)
        after = web.get("/api/stats").json()
        reader.join(DEADLINE)
    # Every event reached the State while one client read nothing at all.
    assert after["events"] - before["events"] >= burst
    for i in (0, burst // 2, burst - 1):
        assert web.get(f"/api/task/info/{prefix}{i}").json()["state"] == "RECEIVED"
    # The client that kept reading got every event, or was told exactly how many it missed
    # (a burst can outrun a Python client too): nothing is lost silently.
    seen, missed = counted
    assert seen > 0 and seen + missed == burst
    assert after["missed"] > before["missed"]  # the stalled one lost its backlog...
    messages = _read_frames(stalled, want=2)
    stalled.close()
    notices = [m for m in messages if m["kind"] != "event"]
    assert notices[0]["kind"] == "lagged" and notices[0]["missed"] > 0
    assert notices[1]["kind"] == "resync"  # ...was told, and got the State as it is now
    assert host in notices[1]["workers"]
    assert all(t["worker"] == host for t in notices[1]["tasks"])


# -- schemathesis ----------------------------------------------------------------------------


@newest_only
@pytest.mark.only_variant("redis-db-prefix")  # one broker is enough: the same app on either
def test_schemathesis_finds_no_server_error(web: Web, tmp_path: Any) -> None:
    # Its own server with a short deadline: fuzzed worker names nobody answers to cost it.
    with serve(web.config, "--inspect-timeout", "0.3") as fuzzed:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                fuzzed.url + "/api/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "15",
                "--phases",
                "examples,coverage,fuzzing",
                "--exclude-path",
                "/api/events",
                "--seed",
                "13",
                "--report-dir",
                str(tmp_path),
                # One worker: hypothesis describes strategies with ast.parse, which CPython 3.11
                # does not make thread-safe (SystemError: AST constructor recursion depth).
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
        assert "Traceback" not in fuzzed.log


# -- last: the destructive ones --------------------------------------------------------------


def test_shutdown_stops_a_real_worker(web: Web) -> None:
    reply = web.post(f"/api/worker/shutdown/{web.beta}")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"message": "Shutting down!", "replies": {web.beta: None},
                            "offline": True}  # fmt: skip
    web.workers[1].process.wait(DEADLINE)
    status = web.get("/api/workers", status="1").json()
    assert status[web.beta] is False and status[web.alpha] is True
    assert "action='worker.shutdown'" in web.ours.wait_line(
        lambda s: "worker.shutdown" in s, DEADLINE
    )


def test_sigterm_stops_serve_cleanly(web: Web) -> None:
    started = time.monotonic()
    assert web.ours.stop() == 0, web.ours.log
    assert time.monotonic() - started < DEADLINE
    assert "Traceback" not in web.ours.log
