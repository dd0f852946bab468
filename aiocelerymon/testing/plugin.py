"""The pytest plugin (entry point ``pytest11``): real brokers and Celery workers as fixtures.

Session-scoped servers (``redis_server``, ``rabbit_server``, ``postgres_server``), an isolated
namespace per test (``redis_url`` / ``rabbitmq_url`` / ``postgres_url``: a fresh Redis
database, RabbitMQ vhost, PostgreSQL database), the same on both brokers
(``aiocelerymon_broker``, parametrized), a client bound to it
(``aiocelerymon_client``) and real workers of your app (``celery_worker_process``). Loaded
automatically once aiocelerymon is installed; ``pip install aiocelerymon[testing]`` brings
pytest-asyncio and testcontainers. Broker resolution: see :mod:`aiocelerymon.testing.brokers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import uuid
from collections.abc import AsyncIterator, Awaitable, Generator, Iterator, Sequence
from typing import Protocol

import pytest

from aiocelerymon.client import Client
from aiocelerymon.testing import brokers, postgres
from aiocelerymon.testing.helpers import DEFAULT_TIMEOUT, wait_for_workers
from aiocelerymon.testing.worker import CeleryWorker, start_celery_worker
from aiocelerymon.wire import names

#: Tests that use these fixtures get the markers (when registered: --strict-markers rejects
#: the others), so ``-m "not amqp"`` deselects them without every test repeating the marks.
_FIXTURE_MARKERS = {
    "redis_server": ("integration", "redis"),
    "redis_namespace": ("integration", "redis"),
    "redis_url": ("integration", "redis"),
    "rabbit_server": ("integration", "amqp"),
    "rabbitmq_namespace": ("integration", "amqp"),
    "rabbitmq_url": ("integration", "amqp"),
    "amqp_url": ("integration", "amqp"),
    "postgres_server": ("integration",),
    "postgres_url": ("integration",),
}
_BROKER_MARKERS = {"redis": ("integration", "redis"), "rabbitmq": ("integration", "amqp")}
_WORKERS = pytest.StashKey[list[CeleryWorker]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Add broker markers to tests that request a broker fixture."""
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for item in items:
        markers = [
            m for f in getattr(item, "fixturenames", ()) for m in _FIXTURE_MARKERS.get(f, ())
        ]
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "aiocelerymon_broker" in callspec.params:
            markers += _BROKER_MARKERS.get(callspec.params["aiocelerymon_broker"], ())
        for marker in markers:
            if marker in registered and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every worker the test started to its failure report."""
    report = yield
    if report.failed:
        for worker in item.stash.get(_WORKERS, []):
            report.sections.append((f"celery worker {worker.hostname} log", worker.log()))
    return report


# -- servers and namespaces --------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[brokers.RedisServer]:
    """A Redis server for the whole session (skipped locally / failed in CI if none)."""
    with brokers.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[brokers.RabbitServer]:
    """A RabbitMQ server for the whole session (skipped locally / failed in CI if none)."""
    with brokers.rabbit_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """A PostgreSQL server for the whole session (skipped locally / failed in CI if none)."""
    with postgres.postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: postgres.PostgresServer) -> Iterator[str]:
    """URL (``postgresql://...``) of a fresh database for this test, dropped afterwards."""
    url = postgres_server.database()
    yield url
    postgres_server.drop(url)


@pytest.fixture
def redis_namespace(redis_server: brokers.RedisServer) -> brokers.BrokerNamespace:
    """A fresh, empty Redis database for this test (a key prefix on an external server)."""
    return redis_server.namespace()


@pytest.fixture
def rabbitmq_namespace(rabbit_server: brokers.RabbitServer) -> Iterator[brokers.BrokerNamespace]:
    """A fresh RabbitMQ vhost for this test, deleted afterwards with all it holds."""
    namespace = rabbit_server.namespace()
    yield namespace
    rabbit_server.release(namespace)


@pytest.fixture
def redis_url(redis_namespace: brokers.BrokerNamespace) -> str:
    """URL of this test's own Redis database."""
    return redis_namespace.url


@pytest.fixture
def rabbitmq_url(rabbitmq_namespace: brokers.BrokerNamespace) -> str:
    """URL of this test's own RabbitMQ vhost."""
    return rabbitmq_namespace.url


@pytest.fixture
def amqp_url(rabbitmq_url: str) -> str:
    """Another name for :func:`rabbitmq_url`."""
    return rabbitmq_url


@pytest.fixture(
    params=[
        pytest.param("redis", id="redis"),
        pytest.param("rabbitmq", id="rabbitmq"),
    ]
)
def aiocelerymon_broker(request: pytest.FixtureRequest) -> brokers.BrokerNamespace:
    """This test's namespace, once on Redis and once on RabbitMQ (override to pick one)."""
    namespace: brokers.BrokerNamespace = request.getfixturevalue(f"{request.param}_namespace")
    return namespace


# -- client and workers ------------------------------------------------------------------------

# The plugin loads wherever aiocelerymon is installed, [testing] or not.
if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def aiocelerymon_client(
        aiocelerymon_broker: brokers.BrokerNamespace,
    ) -> AsyncIterator[Client]:
        """An :class:`aiocelerymon.Client` connected to this test's namespace."""
        async with Client(aiocelerymon_broker.url, **aiocelerymon_broker.client_options()) as c:
            yield c

else:

    @pytest.fixture
    def aiocelerymon_client() -> None:
        """Needs pytest-asyncio: ``pip install aiocelerymon[testing]``."""
        pytest.fail("aiocelerymon_client needs pytest-asyncio: pip install aiocelerymon[testing]")


class StartWorker(Protocol):
    """The ``celery_worker_process`` factory."""

    def __call__(
        self,
        app: str,
        *,
        broker: brokers.BrokerNamespace | str | None = None,
        hostname: str | None = None,
        queues: Sequence[str] = (),
        concurrency: int = 1,
        events: bool = True,
        pool: str = "prefork",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        control_exchange: str = names.CONTROL_EXCHANGE,
        timeout: float = 60.0,
    ) -> Awaitable[CeleryWorker]: ...


@pytest.fixture
def celery_worker_process(request: pytest.FixtureRequest) -> Iterator[StartWorker]:
    """Start real Celery workers of your app: ``await celery_worker_process("proj.celery")``.

    The worker uses ``broker`` (a namespace or URL) through ``CELERY_BROKER_URL``; by default
    the test's ``aiocelerymon_broker``, which the test must then request (directly or through
    ``aiocelerymon_client``) since it is parametrized. The call returns once the worker
    answered ``ping`` through aiocelerymon (deadline ``timeout``). Workers stop (warm shutdown)
    when the test ends; a failed test's report includes their logs.
    """
    stack = contextlib.ExitStack()
    started = request.node.stash.setdefault(_WORKERS, [])

    async def start(
        app: str,
        *,
        broker: brokers.BrokerNamespace | str | None = None,
        hostname: str | None = None,
        queues: Sequence[str] = (),
        concurrency: int = 1,
        events: bool = True,
        pool: str = "prefork",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        control_exchange: str = names.CONTROL_EXCHANGE,
        timeout: float = 60.0,
    ) -> CeleryWorker:
        if broker is None:
            broker = request.getfixturevalue("aiocelerymon_broker")
        namespace = (
            broker if isinstance(broker, brokers.BrokerNamespace) else _external(str(broker))
        )
        name = hostname or f"worker-{uuid.uuid4().hex[:8]}@aiocelerymon"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        context = start_celery_worker(
            app,
            name,
            broker_url=namespace.url,
            queues=queues,
            concurrency=concurrency,
            events=events,
            pool=pool,
            extra_args=extra_args,
            env=env,
            cwd=cwd,
            timeout=timeout,
        )
        # Startup blocks (subprocess, log reader): off the loop, so other tasks keep running.
        worker = await asyncio.to_thread(stack.enter_context, context)
        started.append(worker)
        async with Client(
            namespace.url, control_exchange=control_exchange, **namespace.client_options()
        ) as client:
            await wait_for_workers(
                client, [name], timeout=max(deadline - loop.time(), DEFAULT_TIMEOUT / 10)
            )
        return worker

    yield start
    stack.close()


def _external(url: str) -> brokers.BrokerNamespace:
    return brokers.BrokerNamespace("redis" if url.startswith("redis") else "rabbitmq", url)
