"""Flower 2.2 cannot tell our Node from a real worker: same API shapes, same control answers.

One Flower per broker (module scope) watches a real Celery worker of the test app and, per
test, our Node with its event dispatcher. Flower's ``/api/workers`` (``refresh=1``, and
``workername=``) must give both the same keys and value shapes (pool, broker, queues, config),
and its control endpoints (rate limit, time limit, revoke, pool grow/shrink, add/cancel
consumer) must get a worker's answers from the Node and change the Node's state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon import Client
from aiocelerymon.control.node import Node
from tests.support.celery_worker import CeleryWorker
from tests.support.flower import Flower, flower
from tests.support.interop import VARIANTS, Variant, variant_url, workers

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DEADLINE = 30.0
#: Flower only controls tasks its own app knows (the test app's).
ADD = "tests.integration.celery_app.add"
FAIL = "tests.integration.celery_app.fail"
#: The default setup of each broker: Flower's cost is paid once per broker.
FLOWER_VARIANTS = [p for p in VARIANTS if p.id in ("redis", "amqp")]
#: What Flower asks every worker for on /api/workers?workername= (flower/inspector.py).
INSPECTED = {"stats", "active_queues", "registered", "scheduled", "active", "reserved"}
INSPECTED |= {"revoked", "conf", "timestamp"}


@dataclass
class Bed:
    variant: Variant
    url: str
    worker: CeleryWorker
    flower: Flower

    def client(self) -> Client:
        return self.variant.client(self.url)

    async def api(self, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Flower's API without blocking our loop (the Node answers in it)."""
        return await asyncio.wait_for(
            asyncio.to_thread(self.flower.request, path, params, **kw), DEADLINE
        )


@pytest.fixture(scope="module", params=FLOWER_VARIANTS)
def bed(request: pytest.FixtureRequest) -> Iterator[Bed]:
    variant: Variant = request.param
    with variant_url(request, variant) as url:
        config = variant.config(broker_url=url)
        with (
            workers(variant, url, [f"w1.{variant.id}@flower"], config=config, events=True) as (w,),
            flower(url, config) as f,
        ):
            yield Bed(variant, url, w, f)


@dataclass
class Service:
    """Our Node and dispatcher, and the one job it runs (cancelled by a terminate)."""

    node: Node
    job: asyncio.Task[None]


@pytest.fixture
async def service(bed: Bed, request: pytest.FixtureRequest) -> AsyncIterator[Service]:
    nodename = f"svc.{request.node.name.split('[')[0][-20:]}.{bed.variant.id}@flower"
    async with bed.client() as client:
        job = asyncio.ensure_future(asyncio.Event().wait())  # runs until terminated
        running = [{"id": "job-1", "name": "svc.export", "args": [], "kwargs": {}}]

        def terminate(task_id: str, signal: str) -> None:
            if task_id == "job-1":
                job.cancel()

        dispatcher = client.events.dispatcher(nodename, freq=5.0)
        node = Node(
            client,
            nodename,
            registered={ADD: {"rate_limit": "10/m"}, "svc.import": {}},
            active=lambda: running if not job.done() else [],
            queues=["svc"],
            config={"worker_concurrency": 2},
            pool_size=2,
            dispatcher=dispatcher,
            on_terminate=terminate,
            unique_check_timeout=None,
        )
        async with node, dispatcher:
            yield Service(node, job)
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types; ``None`` matches anything."""
    if isinstance(value, dict):
        return {key: shape(v) for key, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


#: Keys a Node reports that workers of older Celery/kombu lack (kombu 5.6 added the first).
NEWER_KEYS = {"stats.broker": {"credential_provider"}}


def assert_same_shape(real: Any, ours: Any, where: str = "") -> None:
    if real is None or ours is None:
        return
    if isinstance(real, dict):
        assert isinstance(ours, dict), where
        extra = set(ours) - set(real) - NEWER_KEYS.get(where, set())
        assert set(real) <= set(ours) and not extra, f"{where}: {sorted(set(real) ^ set(ours))}"
        for key in real:
            assert_same_shape(real[key], ours[key], f"{where}.{key}")
    elif isinstance(real, list):
        assert isinstance(ours, list), where
        if real and ours:
            assert_same_shape(real[0], ours[0], f"{where}[0]")
    else:
        assert real == ours, where


def compare_workers(real: dict[str, Any], ours: dict[str, Any]) -> None:
    assert set(real) == set(ours)
    for key in ("stats", "active_queues"):
        assert_same_shape(shape(real[key]), shape(ours[key]), key)
    # Task totals and settings differ by nature; their types do not.
    assert isinstance(ours["conf"], dict) and ours["conf"]
    assert isinstance(ours["registered"], list) and all(
        isinstance(t, str) for t in ours["registered"]
    )


async def test_workers_refresh_shows_the_node_as_a_worker(bed: Bed, service: Service) -> None:
    status, listing = await bed.api("/api/workers", {"refresh": 1})
    assert status == 200, listing
    real, ours = listing[bed.worker.hostname], listing[service.node.nodename]
    compare_workers(real, ours)
    assert ours["stats"]["pool"]["max-concurrency"] == 2
    assert ours["stats"]["prefetch_count"] == 8  # as a worker: 4 x concurrency
    assert [q["name"] for q in ours["active_queues"]] == ["svc"]
    assert ours["conf"]["worker_concurrency"] == 2
    assert f"{ADD} [rate_limit=10/m]" in ours["registered"]
    assert "password" not in ours["stats"]["broker"]


async def test_workername_gives_the_same_keys_and_shapes(bed: Bed, service: Service) -> None:
    name = service.node.nodename
    status, real = await bed.api("/api/workers", {"refresh": 1, "workername": bed.worker.hostname})
    assert status == 200, real
    status, ours = await bed.api("/api/workers", {"refresh": 1, "workername": name})
    assert status == 200, ours
    assert set(ours) == {name}
    assert set(real[bed.worker.hostname]) == set(ours[name]) == INSPECTED
    compare_workers(real[bed.worker.hostname], ours[name])
    assert ours[name]["active"][0]["id"] == "job-1"
    assert ours[name]["revoked"] == []


async def flower_knows(bed: Bed, name: str) -> None:
    """Flower's control endpoints answer 404 for a worker it has not inspected yet."""
    status, body = await bed.api("/api/workers", {"refresh": 1, "workername": name})
    assert status == 200, body


async def test_rate_and_time_limits_as_on_a_worker(bed: Bed, service: Service) -> None:
    node, real = service.node, bed.worker.hostname
    await flower_knows(bed, node.nodename)
    await flower_knows(bed, real)
    for workername in (real, node.nodename):
        status, body = await bed.api(
            f"/api/task/rate-limit/{ADD}", {"workername": workername, "ratelimit": "5/m"}, post=True
        )
        assert (status, body) == (200, {"message": "new rate limit set successfully"}), workername
        status, body = await bed.api(
            f"/api/task/timeout/{ADD}",
            {"workername": workername, "soft": 10, "hard": 20},
            post=True,
        )
        assert (status, body) == (200, {"message": "time limits set successfully"}), workername
    assert node.rate_limits[ADD] == "5/m"
    assert node.time_limits[ADD] == (10.0, 20.0)
    # A task of the app that the node does not run: the node's answer, as a worker's.
    status, body = await bed.api(
        f"/api/task/rate-limit/{FAIL}", {"workername": node.nodename, "ratelimit": "1/s"}, post=True
    )
    assert (status, body) == (403, "Failed to set rate limit: 'unknown task'")
    status, listing = await bed.api("/api/workers", {"refresh": 1, "workername": node.nodename})
    assert f"{ADD} [rate_limit=5/m]" in listing[node.nodename]["registered"]


async def test_pool_and_consumers_as_on_a_worker(bed: Bed, service: Service) -> None:
    node, real = service.node, bed.worker.hostname
    await flower_knows(bed, node.nodename)
    await flower_knows(bed, real)
    for workername in (real, node.nodename):
        status, body = await bed.api(f"/api/worker/pool/grow/{workername}", {"n": 2}, post=True)
        assert (status, body) == (200, {"message": f"Growing '{workername}' worker's pool by 2"})
        status, body = await bed.api(f"/api/worker/pool/shrink/{workername}", {"n": 1}, post=True)
        assert status == 200, body
        status, body = await bed.api(
            f"/api/worker/queue/add-consumer/{workername}", {"queue": "extra"}, post=True
        )
        assert (status, body) == (200, {"message": "add consumer extra"})
        status, body = await bed.api(
            f"/api/worker/queue/cancel-consumer/{workername}", {"queue": "extra"}, post=True
        )
        assert (status, body) == (200, {"message": "no longer consuming from extra"})
    assert node.pool_size == 3 and node.prefetch_count == 12
    assert list(node.queues) == ["svc"]
    await bed.api(f"/api/worker/queue/add-consumer/{node.nodename}", {"queue": "more"}, post=True)
    status, listing = await bed.api("/api/workers", {"refresh": 1, "workername": node.nodename})
    assert [q["name"] for q in listing[node.nodename]["active_queues"]] == ["svc", "more"]
    assert listing[node.nodename]["stats"]["pool"]["max-concurrency"] == 3


async def until(predicate: Any) -> None:
    """Wait for a state change made by a cast (Flower's revoke asks for no reply)."""
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_flowers_revoke_stops_the_nodes_task(bed: Bed, service: Service) -> None:
    node = service.node
    status, body = await bed.api("/api/task/revoke/queued-1", post=True)
    assert (status, body) == (200, {"message": "Revoked 'queued-1'"})
    await until(lambda: node.is_revoked("queued-1"))
    assert not service.job.done()  # not terminated: only flagged
    status, body = await bed.api("/api/task/revoke/job-1", {"terminate": "true"}, post=True)
    assert status == 200, body
    await until(service.job.done)
    assert service.job.cancelled() and node.is_revoked("job-1")
    status, listing = await bed.api("/api/workers", {"refresh": 1, "workername": node.nodename})
    assert listing[node.nodename]["revoked"] == ["queued-1", "job-1"]
    assert listing[node.nodename]["active"] == []
