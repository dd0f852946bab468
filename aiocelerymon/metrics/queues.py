"""Queue gauges, polled in the background instead of on every scrape.

celery-exporter asks the workers (``inspect stats`` and ``active_queues``, 1 s each) and the
broker on every scrape, so each scrape takes at least 2 s and its broker load grows with the
scrape rate. Here one poll runs every ``interval`` seconds whatever scrapes, an inspect finishes
as soon as every worker the State knows as alive has answered, and a scrape reads the last poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiocelerymon.metrics.collector import MetricsCollector, QueueSample

__all__ = ["QueuePoller"]

log = logging.getLogger("aiocelerymon.metrics")

#: Queue depth requests in flight at once.
DEPTH_CONCURRENCY = 16


def _processes(stats: Any) -> int:
    pool = stats.get("pool") if isinstance(stats, dict) else None
    processes = pool.get("processes") if isinstance(pool, dict) else None
    return len(processes) if isinstance(processes, list) else 0


class QueuePoller:
    """Feeds ``collector.update_queues`` from ``client`` (an :class:`aiocelerymon.Client`).

    Args:
        state: the monitor's State; its alive workers let an inspect finish early.
        interval: seconds between polls (> 0).
        timeout: total deadline of each inspect, in seconds (> 0).
    """

    def __init__(
        self,
        collector: MetricsCollector,
        client: Any,
        *,
        state: Any = None,
        interval: float = 15.0,
        timeout: float = 1.0,
    ) -> None:
        for name, value in (("interval", interval), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
                raise ValueError(f"queue poll {name} must be a positive number, not {value!r}")
        self.collector = collector
        self.client = client
        self.state = state
        self.interval = float(interval)
        self.timeout = float(timeout)
        #: Polls completed.
        self.polls = 0
        #: Whether the broker reports consumers (AMQP); learned from the first answer.
        self._counts_consumers = False

    def _alive(self) -> list[str] | None:
        if self.state is None:
            return None
        alive = [w.hostname for w in self.state.alive_workers()]
        return alive or None

    async def poll(self) -> list[QueueSample]:
        """One poll: ask the workers for their queues, then the broker for each queue's depth."""
        inspect = self.client.control.inspect(timeout=self.timeout, expected=self._alive())
        stats, active = await asyncio.gather(inspect.stats(), inspect.active_queues())
        processes = {node: _processes(s) for node, s in (stats or {}).items()}
        workers: dict[str, int] = {}
        pool: dict[str, int] = {}
        for node, queues in (active or {}).items():
            if not isinstance(queues, list):
                continue
            for info in queues:
                name = info.get("name") if isinstance(info, dict) else None
                if not isinstance(name, str):
                    continue
                workers[name] = workers.get(name, 0) + 1
                pool[name] = pool.get(name, 0) + processes.get(node, 0)
        names = list(dict.fromkeys([*self.collector.queue_names, *workers]))
        depths = await self._depths(names)
        samples = []
        for name, depth in zip(names, depths, strict=True):
            if depth is not None and depth.consumers is not None:
                self._counts_consumers = True
            if depth is None:  # missing: celery-exporter reports 0 messages (and 0 consumers)
                length, consumers = 0, (0 if self._counts_consumers else None)
            else:
                length, consumers = depth.messages, depth.consumers
            samples.append(
                QueueSample(name, length, consumers, workers.get(name, 0), pool.get(name, 0))
            )
        self.collector.update_queues(samples)
        self.polls += 1
        return samples

    async def _depths(self, names: Iterable[str]) -> list[Any]:
        gate = asyncio.Semaphore(DEPTH_CONCURRENCY)
        transport = self.client.transport

        async def depth(name: str) -> Any:
            async with gate:
                return await transport.queue_depth(name)

        return list(await asyncio.gather(*(depth(n) for n in names)))

    async def run(self) -> None:
        """Poll every ``interval`` seconds until cancelled; failures are counted and logged."""
        while True:
            try:
                await self.poll()
            except Exception as exc:
                errors = self.collector.queue_poll_errors = self.collector.queue_poll_errors + 1
                if errors <= 5 or errors % 100 == 0:
                    log.warning("queue poll failed (%d so far): %s", errors, exc)
            await asyncio.sleep(self.interval)
