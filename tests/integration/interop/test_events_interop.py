"""Real Celery workers' events through our receiver end in the right states.

Tasks that succeed, fail, retry, are revoked and report custom progress run on a real worker
(``-E``); the events arrive through aiocelerymon's receiver on both brokers and are fed to our
State and to Celery's own ``celery.events.state.State`` side by side: same final states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon.events.state import State
from tests.support.celery_worker import CeleryWorker, celery_worker
from tests.support.interop import VARIANTS, Variant, variant_url

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DEADLINE = 60.0
APP = "tests.integration.celery_app"


@dataclass
class Cluster:
    variant: Variant
    url: str
    worker: CeleryWorker

    def celery_app(self) -> Any:
        from celery import Celery

        app = Celery("sender", broker=self.url)
        app.conf.control_exchange = self.variant.namespace
        if self.variant.transport_options:
            app.conf.broker_transport_options = self.variant.transport_options
        return app


@pytest.fixture(scope="module", params=VARIANTS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    variant: Variant = request.param
    # Two pool processes: the long task being revoked must not block the others.
    with (
        variant_url(request, variant) as url,
        celery_worker(url, f"ev.{variant.id}@interop", concurrency=2, config=variant.config()) as w,
    ):
        yield Cluster(variant, url, w)


def _send_tasks(cluster: Cluster) -> dict[str, str]:
    app = cluster.celery_app()
    try:
        ids = {
            "ok": app.send_task(f"{APP}.add", (2, 2)).id,
            "failed": app.send_task(f"{APP}.fail").id,
            "retried": app.send_task(f"{APP}.retry_once").id,
            "progress": app.send_task(f"{APP}.progress", (2,)).id,
            "revoked": app.send_task(f"{APP}.sleep", (30,)).id,
        }
        return ids
    finally:
        app.close()


def _revoke(cluster: Cluster, task_id: str) -> None:
    app = cluster.celery_app()
    try:
        app.control.revoke(task_id, terminate=True, signal="SIGKILL")
    finally:
        app.close()


async def test_task_lifecycles_end_in_the_right_states(cluster: Cluster) -> None:
    from celery.events.state import State as CeleryState

    ours, theirs = State(), CeleryState()
    async with cluster.variant.client(cluster.url) as client:
        receiver = client.events.receiver()
        ids: dict[str, str] = {}
        revoke_sent = False
        async for ev in receiver.itercapture(timeout=DEADLINE):
            if not ids:  # subscribed and workers woken up: now produce the events
                ids = await asyncio.to_thread(_send_tasks, cluster)
            ours.event(dict(ev))
            theirs.event(dict(ev))
            pending = ours.tasks.get(ids["revoked"])
            if not revoke_sent and pending is not None and pending.state == "STARTED":
                await asyncio.to_thread(_revoke, cluster, ids["revoked"])
                revoke_sent = True
            if _done(ours, ids):
                break
        assert ids and _done(ours, ids), f"not all tasks finished: {_states(ours, ids)}"
    expected = {
        "ok": "SUCCESS",
        "failed": "FAILURE",
        "retried": "SUCCESS",
        "progress": "SUCCESS",
        "revoked": "REVOKED",
    }
    for key, state in expected.items():
        assert ours.tasks[ids[key]].state == state, key
        assert theirs.tasks[ids[key]].state == state, key
    ok = ours.tasks[ids["ok"]]
    assert (ok.result, ok.name, ok.worker.hostname) == ("4", f"{APP}.add", cluster.worker.hostname)
    assert "RuntimeError" in ours.tasks[ids["failed"]].exception
    assert ours.tasks[ids["retried"]].retried is not None  # it went through RETRY
    assert ours.tasks[ids["progress"]].current == 2  # custom event fields are kept
    assert ours.tasks[ids["revoked"]].terminated is True
    worker = ours.workers[cluster.worker.hostname]
    assert worker.alive and worker.sw_ident == "py-celery"
    assert ours.task_count == theirs.task_count
    assert sorted(ours.task_types()) == sorted(theirs.task_types())
    for task_id in ids.values():
        a, b = ours.tasks[task_id], theirs.tasks[task_id]
        assert (a.state, a.name, a.result, a.exception, a.retries) == (
            b.state,
            b.name,
            b.result,
            b.exception,
            b.retries,
        )


def _done(state: State, ids: dict[str, str]) -> bool:
    final = {"SUCCESS", "FAILURE", "REVOKED"}
    return all((t := state.tasks.get(i)) is not None and t.state in final for i in ids.values())


def _states(state: State, ids: dict[str, str]) -> dict[str, str | None]:
    return {k: getattr(state.tasks.get(i), "state", None) for k, i in ids.items()}
