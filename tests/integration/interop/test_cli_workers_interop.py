"""The CLI against real Celery workers where Celery's own CLI says something misleading
(issue 19): ``-d`` names with spaces, workers that consume no queue, ``control shutdown``."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import uuid

import pytest

import aiocelerymon
from aiocelerymon import cli
from aiocelerymon.testing.brokers import BrokerNamespace
from aiocelerymon.testing.plugin import StartWorker
from tests.support.celery_worker import APP_MODULE, REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.interop]


async def run_cli(namespace: BrokerNamespace, *argv: str) -> tuple[int, str, str]:
    options = [
        arg
        for key, value in namespace.transport_options.items()
        for arg in ("--transport-option", f"{key}={json.dumps(value)}")
    ]
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.wait_for(
        cli.run(["-b", namespace.url, *options, *argv], stdout=out, stderr=err), 60
    )
    return code, out.getvalue(), err.getvalue()


async def test_destinations_idle_workers_and_shutdown(
    aiocelerymon_broker: BrokerNamespace, celery_worker_process: StartWorker
) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"a-{tag}@cli", f"b-{tag}@cli"]
    queue = f"q-{tag}"
    workers = [
        await celery_worker_process(
            APP_MODULE,
            broker=aiocelerymon_broker,
            hostname=name,
            queues=[queue],
            cwd=str(REPO_ROOT),
        )
        for name in names
    ]

    # `-d "a, b"`: both names stripped, both answer (Celery's " b" matches nobody).
    code, out, err = await run_cli(
        aiocelerymon_broker, "status", "-d", ", ".join(names), "-t", "10"
    )
    assert code == 0, err
    assert out.endswith("2 nodes online.\n"), out
    assert all(f"{name}: OK" in out for name in names)

    # Workers that answered active_queues with empty lists are not "no worker answered".
    async with aiocelerymon.Client(
        aiocelerymon_broker.url, **aiocelerymon_broker.client_options()
    ) as client:
        replies = await client.control.broadcast(
            "cancel_consumer", {"queue": queue}, destination=names, reply=True, timeout=10,
            limit=2,
        )  # fmt: skip
        assert replies is not None and len(replies) == 2
    code, _, err = await run_cli(aiocelerymon_broker, "queues", "-t", "5")
    assert code == cli.EX_UNAVAILABLE
    assert err == (
        "Error: No task queues to work on: none named with -Q, and the 2 workers that answered "
        "active_queues consume none.\n"
    )

    # shutdown: workers never answer it. We say what we sent and exit 0; they do stop.
    code, out, err = await run_cli(
        aiocelerymon_broker, "control", "shutdown", "-d", ",".join(names)
    )
    assert (code, out, err) == (
        0,
        f"Sent shutdown to {', '.join(names)} (workers do not answer it).\n",
        "",
    )
    for worker in workers:
        try:
            await asyncio.to_thread(worker.process.wait, 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{worker.hostname} did not stop after control shutdown")
