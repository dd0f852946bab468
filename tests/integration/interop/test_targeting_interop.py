"""``--pattern``/``--matcher`` and ``--jsonl`` against real workers with different names.

Celery's CLI has no pattern option; its API has (``app.control.inspect(pattern=..., matcher=...)``),
so the nodes we select are compared with the nodes Celery's own Inspect selects. Three workers
per broker (Redis, RabbitMQ), shared by the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import celery
import pytest

# Imported before any fixture's event loop (see test_result_interop.py).
import aiocelerymon.transports.amqp
import aiocelerymon.transports.redis  # noqa: F401
from aiocelerymon import Client
from aiocelerymon.testing import wait_for_workers
from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env, celery_worker

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DEADLINE = 60.0
NODES = ["alpha.1@{b}", "alpha.2@{b}", "beta.1@{b}"]


@dataclass
class Cluster:
    url: str
    nodes: list[str]
    env: dict[str, str]

    def ours(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aiocelerymon", "-A", APP_MODULE, *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    def celerys_selection(self, pattern: str, matcher: str) -> set[str]:
        app = celery.Celery("targeting", broker=self.url, set_as_current=False)
        try:
            replies = app.control.inspect(timeout=1.0, pattern=pattern, matcher=matcher).ping()
        finally:
            app.close()
        return set(replies or {})


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    server = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "rabbit_server"
    )
    namespace = server.namespace()
    nodes = [n.format(b=request.param) for n in NODES]
    try:
        with contextlib.ExitStack() as stack:
            for node in nodes:
                stack.enter_context(
                    celery_worker(namespace.url, node, config={}, events=False, pool="solo")
                )

            async def answering() -> None:
                async with Client(namespace.url) as client:
                    await wait_for_workers(client, nodes, timeout=DEADLINE)

            asyncio.run(answering())
            yield Cluster(namespace.url, nodes, celery_env({"broker_url": namespace.url}))
    finally:
        server.release(namespace)


@pytest.mark.parametrize(
    ("pattern", "matcher"),
    [("alpha.*", "glob"), ("*.1@*", "glob"), (r"(alpha\.2|beta)", "pcre"), ("beta", "pcre")],
)
def test_pattern_selects_the_nodes_celery_selects(
    cluster: Cluster, pattern: str, matcher: str
) -> None:
    expected = cluster.celerys_selection(pattern, matcher)
    assert expected and expected != set(cluster.nodes)  # the pattern does select
    run = cluster.ours("inspect", "ping", "-t", "1", "-j", "-p", pattern, "--matcher", matcher)
    assert run.returncode == 0, run.stderr
    assert set(json.loads(run.stdout)) == expected


def test_pattern_on_control_and_status(cluster: Cluster) -> None:
    beta = {n for n in cluster.nodes if n.startswith("beta")}
    run = cluster.ours("control", "enable_events", "-t", "1", "-j", "-p", "beta*")
    assert run.returncode == 0, run.stderr
    assert {next(iter(r)) for r in json.loads(run.stdout)} == beta
    run = cluster.ours("-C", "status", "-t", "1", "-p", "alpha.*")
    assert run.stdout.endswith("\n2 nodes online.\n"), run.stdout
    assert "beta" not in run.stdout


def test_jsonl_one_line_per_node(cluster: Cluster) -> None:
    run = cluster.ours(
        "inspect", "active_queues", "-t", "20", "-d", ",".join(cluster.nodes), "--jsonl"
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(next(iter(line)) for line in lines) == sorted(cluster.nodes)
    for line in lines:
        ((_node, queues),) = line.items()
        assert [q["name"] for q in queues] == ["celery"]
