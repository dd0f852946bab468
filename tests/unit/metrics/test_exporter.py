"""``aiocelerymon exporter`` and the ASGI endpoints, in process on the in-memory broker."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiocelerymon import Client, cli
from aiocelerymon.cli.exporter import ExporterInvocation
from aiocelerymon.metrics import ExporterApp, MetricsCollector, metrics_route
from aiocelerymon.testing import FakeWorker

DEADLINE = 15.0


async def call(
    app: Any, method: str = "GET", path: str = "/metrics"
) -> tuple[int, dict[str, str], bytes]:
    """One ASGI request; returns status, headers and body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    start, body = sent[0], sent[1]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body["body"]


async def test_metrics_route_answers_get_and_head_only() -> None:
    route = metrics_route(MetricsCollector())
    status, headers, body = await call(route)
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"celery_task_received", "celery_worker_up", "celery_queue_length"} <= names
    status, headers, body = await call(route, "HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    status, headers, _ = await call(route, "POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


async def test_exporter_app_routes_and_health() -> None:
    healthy = False
    app = ExporterApp(MetricsCollector(), healthy=lambda: healthy)
    assert (await call(app, path="/health"))[0] == 503
    healthy = True
    assert (await call(app, path="/health"))[0] == 200
    status, _, body = await call(app, path="/")
    assert status == 200 and b'href="metrics"' in body
    assert (await call(app, path="/nope"))[0] == 404
    assert (await call(app, "DELETE", "/health"))[0] == 405
    assert (await call(app, path="/metrics"))[0] == 200


def parse(argv: list[str]) -> ExporterInvocation:
    invocation, _ = cli.parse_args(["exporter", *argv])
    assert isinstance(invocation, ExporterInvocation)
    return invocation


def test_defaults_are_celery_exporters() -> None:
    inv = parse([])
    assert (inv.host, inv.port) == ("0.0.0.0", 9808)
    s = inv.settings
    assert (s.worker_timeout, s.purge_offline_worker_metrics) == (300, 600)
    assert s.metric_prefix == "celery_" and s.default_queue_name == "celery"
    assert not s.generic_hostname_task_sent_metric and not s.flower_metrics
    assert not s.start_at_zero


def test_celery_exporter_options_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOCELERYMON_EXPORTER_PORT", "9999")
    monkeypatch.setenv("AIOCELERYMON_EXPORTER_FLOWER_METRICS", "true")
    inv = parse(
        [
            "--broker-url", "redis://localhost:6379/3",
            "--broker-transport-option", "global_keyprefix=pfx:",
            "--buckets", "0.1,1,10",
            "--static-label", "env=prod", "--static-label", "team=data",
            "--metric-prefix", "jobs_",
            "--generic-hostname-task-sent-metric",
            "-Q", "a,b",
            "--worker-timeout", "0",
            "--purge-offline-worker-metrics", "120",
            "--start-at-zero",
        ]
    )  # fmt: skip
    assert inv.broker == "redis://localhost:6379/3"
    assert inv.transport_options == {"global_keyprefix": "pfx:"}
    assert inv.port == 9999
    s = inv.settings
    assert tuple(s.buckets) == (0.1, 1.0, 10.0, float("inf"))
    assert dict(s.static_labels) == {"env": "prod", "team": "data"}
    assert s.metric_prefix == "jobs_" and s.generic_hostname_task_sent_metric
    assert list(s.queues) == ["a", "b"] and s.flower_metrics
    assert (s.worker_timeout, s.purge_offline_worker_metrics) == (0, 120)
    assert s.start_at_zero


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "x"], "--port"),
        (["--buckets", "1,a"], "--buckets"),
        (["--buckets", "2,1"], "strictly increasing"),
        (["--static-label", "novalue"], "KEY=VALUE"),
        (["--static-label", "hostname=x"], "used by the metrics"),
        (["--metric-prefix", "no-dash"], "prefix"),
        (["--worker-timeout", "-5"], "--worker-timeout"),
        (["--queue-interval", "0"], "--queue-interval"),
        (["--accept-content", "json,pickle"], "pickle"),
        (["--log-level", "LOUD"], "--log-level"),
    ],
)
async def test_bad_options_are_usage_errors(argv: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(["exporter", *argv], stdout=out, stderr=err)
    assert code == 2
    assert message in err.getvalue()


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = io.StringIO()
        code = await cli.run(
            ["exporter", "--broker-url", "memory://", "--host", "127.0.0.1", "--port", str(port)],
            stdout=io.StringIO(),
            stderr=err,
        )
    assert code != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in err.getvalue()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # A loopback Host: serve refuses other names when no auth is configured (DNS rebinding).
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class Stdout(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, s: str) -> int:
        self.changed.set()
        return super().write(s)


@pytest.fixture
async def exporter() -> AsyncIterator[tuple[str, int, asyncio.Task[int]]]:
    url = f"memory://exporter-{uuid.uuid4().hex[:8]}"
    out = Stdout()
    argv = ["exporter", "--broker-url", url, "--host", "127.0.0.1", "--port", "0",
            "-Q", "celery", "--queue-interval", "0.2", "--static-label", "env=test"]  # fmt: skip
    run = asyncio.create_task(cli.run(argv, stdout=out, stderr=io.StringIO()))
    async with asyncio.timeout(DEADLINE):
        while "serving http://" not in out.getvalue():
            if run.done():
                raise AssertionError(f"exporter exited: {run.result()}")
            out.changed.clear()
            await out.changed.wait()
    port = int(out.getvalue().split("serving http://127.0.0.1:")[1].split("/")[0])
    try:
        yield url, port, run
    finally:
        if not run.done():
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(run, DEADLINE)


async def test_exporter_serves_a_fake_workers_events(exporter: tuple[str, int, Any]) -> None:
    url, port, run = exporter
    async with Client(url) as client, FakeWorker(client, "celery@pod-1", freq=0.2) as worker:
        await worker.run_task("proj.add", result=3)
        await worker.run_task("proj.fail", exception=ValueError("v"))
        async with asyncio.timeout(DEADLINE):
            while True:
                status, body = await http_get(port, "/metrics")
                assert status == 200
                text = body.decode()
                if (
                    'celery_task_failed_total{name="proj.fail",hostname="pod-1",exception="ValueError"'
                    in text
                    and 'celery_queue_length{queue_name="celery"' in text
                ):
                    break
                await asyncio.sleep(0.05)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    ok = (("env", "test"), ("hostname", "pod-1"), ("name", "proj.add"), ("queue_name", "celery"))
    assert values[("celery_task_succeeded_total", ok)] == 1.0
    assert values[("celery_worker_up", (("env", "test"), ("hostname", "pod-1")))] == 1.0
    assert values[("celery_queue_length", (("env", "test"), ("queue_name", "celery")))] == 0.0
    assert values[("aiocelerymon_event_stream_up", (("env", "test"),))] == 1.0
    assert (await http_get(port, "/health"))[0] == 200
    # SIGTERM: a clean stop, exit 0.
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, DEADLINE) == 0


async def test_serve_has_the_same_metrics_at_slash_metrics() -> None:
    """``aiocelerymon serve`` mounts the collector at /metrics (read from its own Monitor)."""
    url = f"memory://serve-{uuid.uuid4().hex[:8]}"
    err = Stdout()
    argv = ["-b", url, "serve", "--address", "127.0.0.1", "--port", "0"]
    run = asyncio.create_task(cli.run(argv, stdout=io.StringIO(), stderr=err))
    try:
        async with asyncio.timeout(DEADLINE):
            while "aiocelerymon serve: http://" not in err.getvalue():
                if run.done():
                    raise AssertionError(f"serve exited: {run.result()} {err.getvalue()}")
                err.changed.clear()
                await err.changed.wait()
        port = int(err.getvalue().split("http://127.0.0.1:")[1].split("/")[0])
        async with Client(url) as client, FakeWorker(client, "celery@web-1", freq=0.2) as worker:
            await worker.run_task("proj.add", result=3)
            async with asyncio.timeout(DEADLINE):
                while True:
                    status, body = await http_get(port, "/metrics")
                    text = body.decode()
                    if status == 200 and 'hostname="web-1"' in text and "succeeded_total{" in text:
                        break
                    await asyncio.sleep(0.05)
        families = {f.name for f in text_string_to_metric_families(text)}
        assert {"celery_task_succeeded", "celery_worker_up", "aiocelerymon_event_stream_up"} <= (
            families
        )
    finally:
        if not run.done():
            os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(run, DEADLINE) == 0
