"""What ``GET /api/workers`` shows: the last inspect replies per worker, as Flower keeps them.

Flower 2.2 (flower/inspector.py) runs one kombu inspect per method in threads and always waits
out ``--inspect-timeout``. Here every method of a refresh runs concurrently on one reply queue
under one total deadline, and each finishes as soon as every worker known to be alive (from
the event stream's heartbeats) has answered, so ``refresh=1`` takes one round trip when the
cluster is healthy. Concurrent refreshes of the same scope share one run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiocelerymon.pipeline import Monitor

__all__ = ["Inspector"]

log = logging.getLogger("aiocelerymon.web")

#: Flower's ``Inspector.inspect_methods``; the task lists only for one named worker.
METHODS = ("stats", "active_queues", "registered", "scheduled", "active", "reserved", "revoked",
           "conf")  # fmt: skip
TASK_METHODS = frozenset({"scheduled", "active", "reserved", "revoked"})


class Inspector:
    """``workers[name][method] = reply`` plus ``timestamp``, refreshed on demand."""

    def __init__(self, monitor: Monitor, timeout: float = 1.0) -> None:
        if not timeout > 0:
            raise ValueError(f"inspect timeout must be a positive number, not {timeout!r}")
        self.monitor = monitor
        self.timeout = timeout
        self.workers: dict[str, dict[str, Any]] = {}
        self._running: dict[str | None, asyncio.Task[None]] = {}

    def known(self, name: str | None) -> bool:
        """Flower's ``is_worker`` (seen by inspect), or seen in the event stream."""
        return bool(name) and (name in self.workers or name in self.monitor.state.workers)

    def alive(self) -> list[str]:
        return [str(w.hostname) for w in self.monitor.state.alive_workers()]

    async def refresh(self, workername: str | None = None) -> None:
        """Inspect every worker (or one); returns when done. Raises on a broker failure."""
        task = self._running.get(workername)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(workername))
            self._running[workername] = task
            task.add_done_callback(lambda t: self._forget(workername, t))
        await asyncio.shield(task)

    def _forget(self, workername: str | None, task: asyncio.Task[None]) -> None:
        if self._running.get(workername) is task:
            del self._running[workername]
        if not task.cancelled() and task.exception() is not None:
            log.warning("worker inspection failed: %s", task.exception())

    async def first(self, timeout: float) -> None:
        """The inspection at start (Flower's ``update_workers()``), not shared with requests:
        nobody is known alive yet, so it cannot finish early and must not hold a
        ``refresh=1`` up for the whole deadline."""
        await self._refresh(None, timeout)

    async def _refresh(self, workername: str | None, timeout: float | None = None) -> None:
        methods = METHODS if workername else tuple(m for m in METHODS if m not in TASK_METHODS)
        destination = [workername] if workername else None
        expected = None if workername else self.alive() or None
        inspect = self.monitor.client.control.inspect(
            destination=destination, timeout=timeout or self.timeout, expected=expected
        )
        calls = []
        for method in methods:
            call = getattr(inspect, method)
            calls.append(call(safe=True) if method == "active" else call())
        results = await asyncio.gather(*calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for method, result in zip(methods, results, strict=True):
            if isinstance(result, BaseException) or not result:
                continue
            for node, reply in result.items():
                if reply is not None:
                    self._update(str(node), method, reply)
        if errors and len(errors) == len(results):
            raise errors[0]

    def _update(self, node: str, method: str, reply: Any) -> None:
        if method == "stats" and isinstance(reply, dict):
            consumer = reply.get("consumer") or reply
            broker = consumer.get("broker") if isinstance(consumer, dict) else None
            if isinstance(broker, dict):
                # As Flower (its issue #1512): the alternates list is not worth showing.
                broker.pop("alternates", None)
        info = self.workers.setdefault(node, {})
        info[method] = reply
        info["timestamp"] = time.time()

    def forget_worker(self, name: str) -> None:
        self.workers.pop(name, None)

    def active_queue_names(self) -> list[str]:
        names = {
            str(q["name"])
            for info in self.workers.values()
            for q in info.get("active_queues") or ()
            if isinstance(q, dict) and q.get("name")
        }
        return sorted(names)

    async def aclose(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
