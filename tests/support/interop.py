"""The four broker variants every interop module runs against, on the plugin's servers.

Redis db 0; Redis on a database of its own with a ``global_keyprefix``; RabbitMQ ``/``; and
RabbitMQ on a vhost of its own with control exchange ``ops``. The defaults are what most
deployments run; the others prove that the database number, the key prefix, the vhost and the
control exchange all reach the wire the way Celery puts them there. Each module's cluster gets
fresh databases/vhosts from :mod:`aiocelerymon.testing` (deleted afterwards), so modules never
see each other's leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon import Client
from aiocelerymon.testing import wait_for_workers
from aiocelerymon.testing.brokers import RabbitServer, RedisServer
from aiocelerymon.wire import names
from tests.support.celery_worker import CeleryWorker, celery_worker

#: Upper bound for a worker to answer ping after it logged ``ready.``.
ANSWER_DEADLINE = 60.0
KEY_PREFIX = "aiocm:"


@dataclass(frozen=True)
class Variant:
    """One broker setup; ``namespace`` is the control exchange (Celery's ``control_exchange``)."""

    id: str
    broker: str  # "redis" or "amqp", as our transports name themselves
    own: bool = False  # a fresh database / vhost instead of db 0 / "/"
    namespace: str = names.CONTROL_EXCHANGE
    key_prefix: str | None = None

    @property
    def transport_options(self) -> dict[str, Any] | None:
        """``broker_transport_options`` for Celery and for our client."""
        return {"global_keyprefix": self.key_prefix} if self.key_prefix else None

    def config(self, **extra: Any) -> dict[str, Any]:
        """Celery settings (for workers and the CLI) that select this variant."""
        config: dict[str, Any] = {"control_exchange": self.namespace, **extra}
        if self.transport_options:
            config["broker_transport_options"] = self.transport_options
        return config

    def client(self, url: str) -> Client:
        """Our client, configured like the workers."""
        return Client(
            url, control_exchange=self.namespace, broker_transport_options=self.transport_options
        )


#: Comma-separated variant ids to run (default: all). nox runs every variant on the newest Celery
#: minor and, on the older ones, one per broker that carries what differs between minors (see
#: noxfile.py): the variants differ in *our* settings, the minors in Celery's and kombu's wire.
VARIANTS_ENV = "AIOCELERYMON_INTEROP_VARIANTS"

_ALL_VARIANTS = [
    pytest.param(Variant("redis", "redis"), marks=pytest.mark.redis, id="redis"),
    pytest.param(
        Variant("redis-db-prefix", "redis", own=True, key_prefix=KEY_PREFIX),
        marks=pytest.mark.redis,
        id="redis-db-prefix",
    ),
    pytest.param(Variant("amqp", "amqp"), marks=pytest.mark.amqp, id="amqp"),
    pytest.param(
        Variant("amqp-vhost-ops", "amqp", own=True, namespace="ops"),
        marks=pytest.mark.amqp,
        id="amqp-vhost-ops",
    ),
]


def _selected(params: list[Any]) -> list[Any]:
    wanted = [v.strip() for v in os.environ.get(VARIANTS_ENV, "").split(",") if v.strip()]
    if not wanted:
        return params
    known = {p.id for p in params}
    if unknown := set(wanted) - known:
        raise ValueError(
            f"{VARIANTS_ENV}: unknown variants {sorted(unknown)}; known: {sorted(known)}"
        )
    return [p for p in params if p.id in wanted]


VARIANTS = _selected(_ALL_VARIANTS)


@contextlib.contextmanager
def variant_url(request: pytest.FixtureRequest, variant: Variant) -> Iterator[str]:
    """The broker URL of ``variant`` on the session's server (a fresh namespace if ``own``)."""
    fixture = "redis_server" if variant.broker == "redis" else "rabbit_server"
    server: RedisServer | RabbitServer = request.getfixturevalue(fixture)
    if not variant.own:
        yield server.url
        return
    namespace = server.namespace()
    try:
        yield namespace.url
    finally:
        server.release(namespace)


def wait_answering(variant: Variant, url: str, nodes: list[str]) -> None:
    """'ready.' is logged before the pidbox consumer is certain to be up: ping until it is."""

    async def ping() -> None:
        async with variant.client(url) as client:
            await wait_for_workers(client, nodes, timeout=ANSWER_DEADLINE)

    asyncio.run(ping())


@contextlib.contextmanager
def workers(
    variant: Variant, url: str, hostnames: list[str], *, config: dict[str, Any], events: bool
) -> Iterator[list[CeleryWorker]]:
    """Real workers of the test app, yielded once every one of them answers ping."""
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(celery_worker(url, h, config=config, events=events))
            for h in hostnames
        ]
        wait_answering(variant, url, hostnames)
        yield started


class SharedClusters:
    """Two workers of the test app per variant (task events on, the variant's settings), started
    on first use and kept for the session.

    The interop modules that need no more than that (the CLI and the seam) share them
    instead of each starting and stopping its own: a cluster costs 5-10 s to start and a few
    to stop on a busy 2-core machine, once per module and variant before. Tests on them leave
    no state another one depends on. The modules that change workers' state (control: pool
    size, events switch, shutdown), count nodes (node) or kill pool processes (the event
    stream's revoke with SIGKILL, which with one process per worker left a retried task
    waiting in 1 of 3 full runs) keep clusters of their own.
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request  # session-scoped: the servers outlive every cluster
        self._stack = contextlib.ExitStack()
        self._clusters: dict[str, tuple[str, list[CeleryWorker]]] = {}

    def get(self, variant: Variant) -> tuple[str, list[CeleryWorker]]:
        """``(broker URL, workers)`` of ``variant``'s shared cluster."""
        if variant.id not in self._clusters:
            url = self._stack.enter_context(variant_url(self._request, variant))
            hostnames = [f"w1.{variant.id}@interop", f"w2.{variant.id}@interop"]
            started = self._stack.enter_context(
                workers(variant, url, hostnames, config=variant.config(), events=True)
            )
            self._clusters[variant.id] = (url, started)
        url, started = self._clusters[variant.id]
        for worker in started:
            assert worker.process.poll() is None, f"shared worker died:\n{worker.log()}"
        return url, started

    def close(self) -> None:
        """Stop every worker, then release the namespaces (a later ``get`` starts anew)."""
        self._clusters = {}
        stack, self._stack = self._stack, contextlib.ExitStack()
        stack.close()
