"""Read routes the page needs beyond Flower's API (``/api/page/...``), all GET (viewer role).

* ``/api/page/workers``: the dashboard rows (event-stream state and Flower's per-worker task
  counters) and the cluster totals.
* ``/api/page/tasks``: one page of the tasks table with the number of matches, so the table
  can page through 100,000 tasks. ``q`` is the search language of ``/api/tasks`` (Flower's:
  ``state:FAILURE worker:w1@h name:proj.add`` plus free text over args, kwargs and result).
* ``/api/page/series``: succeeded / failed / retried per second (cluster, per worker, per
  task type), runtime percentiles per task type and queue depth over time.
* ``/api/page/stuck``: running tasks far beyond their type's usual runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aiocelerymon.exceptions import AiocelerymonError
from aiocelerymon.web._http import JSON, Arguments, error
from aiocelerymon.web.api._common import context
from aiocelerymon.web.api.tasks import task_dict
from aiocelerymon.web.search import QuerySyntaxError, TaskQuery
from aiocelerymon.web.series import PageSeries

if TYPE_CHECKING:
    from aiocelerymon.web.app import WebContext

__all__ = ["QUEUE_SAMPLE_INTERVAL", "routes", "series_of"]

log = logging.getLogger("aiocelerymon.web")

#: Queue depths are sampled this often while anyone reads the page's data.
QUEUE_SAMPLE_INTERVAL = 2.0
#: A page sampler stops when nobody asked for page data for this long.
SAMPLER_IDLE = 60.0
PAGE_LIMIT_MAX = 500
#: Long values in table rows are cut here (the task detail shows them whole).
CELL_CHARS = 200
_ROW_FIELDS = ("uuid", "name", "state", "received", "started", "succeeded", "failed",
               "retried", "revoked", "timestamp", "runtime", "retries", "args", "kwargs",
               "result", "exception")  # fmt: skip


def series_of(request: Request) -> PageSeries:
    series: PageSeries = request.app.state.aiocelerymon_series
    return series


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > CELL_CHARS:
        return value[:CELL_CHARS] + "…"
    return value


def _row(task: Any, stuck: set[str]) -> dict[str, Any]:
    row = {key: _cut(getattr(task, key, None)) for key in _ROW_FIELDS}
    worker = task.worker
    row["worker"] = getattr(worker, "hostname", None)
    row["stuck"] = task.uuid in stuck
    return row


async def page_workers(request: Request) -> Response:
    ctx = context(request)
    series = series_of(request)
    _touch(request, ctx)
    now = time.time()
    rows = []
    totals = {"workers": 0, "online": 0, "active": 0, "processed": 0, "succeeded": 0,
              "failed": 0, "retried": 0}  # fmt: skip
    for name, worker in ctx.monitor.state.workers.items():
        counts = series.counters.get(str(name), {})
        info = ctx.inspector.workers.get(str(name), {})
        stats = info.get("stats")
        pool = stats.get("pool") if isinstance(stats, dict) else None
        if not isinstance(pool, dict):
            pool = {}
        beats = worker.heartbeats
        row = {
            "hostname": worker.hostname,
            "alive": worker.alive,
            "active": worker.active,
            "processed": worker.processed,
            "succeeded": counts.get("task-succeeded", 0),
            "failed": counts.get("task-failed", 0),
            "retried": counts.get("task-retried", 0),
            "received": counts.get("task-received", 0),
            "loadavg": worker.loadavg,
            "sw_ident": worker.sw_ident,
            "sw_ver": worker.sw_ver,
            "sw_sys": worker.sw_sys,
            "pid": worker.pid,
            "freq": worker.freq,
            "last_heartbeat": beats[-1] if beats else None,
            "concurrency": pool.get("max-concurrency"),
        }
        rows.append(row)
        totals["workers"] += 1
        totals["online"] += bool(row["alive"])
        for key in ("active", "processed", "succeeded", "failed", "retried"):
            value = row[key]
            totals[key] += value if isinstance(value, int) else 0
    rows.sort(key=lambda r: (not r["alive"], str(r["hostname"])))
    stats_ = ctx.monitor.stats.as_dict()
    return JSON({"now": now, "workers": rows, "totals": totals, "ingestion": stats_})


async def page_tasks(request: Request) -> Response:
    ctx = context(request)
    args = Arguments(request)
    limit = args.integer("limit", 50)
    offset = args.integer("offset", 0)
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise error(400, f"limit must be between 1 and {PAGE_LIMIT_MAX}")
    if offset < 0:
        raise error(400, "offset must not be negative")
    state = args.text("state") or None
    try:
        query = TaskQuery(
            limit=limit,
            offset=offset,
            sort_by=args.text("sort_by") or None,
            state=None if state in (None, "All") else state,
            worker=args.text("workername") or None,
            taskname=args.text("taskname") or None,
            search=args.values.get("q", [""])[-1],
        )
    except QuerySyntaxError as exc:
        return JSON({"error": str(exc)}, status_code=400)
    except ValueError as exc:
        raise error(400, str(exc)) from exc
    tasks = list(ctx.monitor.state.tasks.data.values())
    # One pass to count the matches (the table shows "1-50 of N"), one to pick the page.
    matching = query.matching(tasks)
    page = query.page(matching)
    stuck = series_of(request).stuck_ids()
    by_state = {str(k): n for k, n in Counter(t.state for t in tasks).items()}
    return JSON({
        "total": len(matching),
        "offset": offset,
        "limit": limit,
        "tasks": [_row(task, stuck) for task in page],
        "states": by_state,
        "all": len(tasks),
    })  # fmt: skip


async def page_series(request: Request) -> Response:
    ctx = context(request)
    series = series_of(request)
    _touch(request, ctx)
    window = Arguments(request).integer("window", 300)
    if not 10 <= window <= series.horizon:
        raise error(400, f"window must be between 10 and {series.horizon} seconds")
    return JSON({
        "rates": series.rates(window),
        "runtimes": series.runtimes(),
        "queues": series.queues(),
    })  # fmt: skip


async def page_task(request: Request) -> Response:
    """``{"task": ...}`` as ``/api/task/info`` has it, or ``{"task": null}`` (not seen yet):
    a task page opened as the task is sent waits for its first event without an error."""
    taskid = str(request.path_params["taskid"])
    task = context(request).monitor.state.tasks.data.get(taskid)
    return JSON({"task": None if task is None else task_dict(task)})


async def page_worker(request: Request) -> Response:
    """One worker's inspect replies (refreshed with ``refresh=1``, as ``/api/workers``) and
    its event-stream summary; ``{"info": {}, ...}`` for a worker that has not answered yet."""
    ctx = context(request)
    name = str(request.path_params["workername"])
    if Arguments(request).flag("refresh"):
        try:
            await ctx.inspector.refresh(name)
        except (AiocelerymonError, OSError) as exc:
            raise error(503, f"Failed to update workers: {exc}") from exc
    worker = ctx.monitor.state.workers.data.get(name)
    summary = None
    if worker is not None:
        beats = worker.heartbeats
        summary = {"hostname": worker.hostname, "alive": worker.alive, "pid": worker.pid,
                   "freq": worker.freq, "loadavg": worker.loadavg, "sw_ident": worker.sw_ident,
                   "sw_ver": worker.sw_ver, "sw_sys": worker.sw_sys,
                   "last_heartbeat": beats[-1] if beats else None}  # fmt: skip
    return JSON({"info": ctx.inspector.workers.get(name, {}), "summary": summary})


async def page_stuck(request: Request) -> Response:
    return JSON({"stuck": series_of(request).stuck()})


# -- queue depth sampling ----------------------------------------------------------------------


def _touch(request: Request, ctx: WebContext) -> None:
    """Start the queue sampler if it is not running (it stops when nobody looks)."""
    request.app.state.aiocelerymon_page_seen = time.monotonic()
    running = getattr(request.app.state, "aiocelerymon_sampler", None)
    if running is None or running.done():
        task = asyncio.ensure_future(_sample_queues(request.app.state, ctx, series_of(request)))
        request.app.state.aiocelerymon_sampler = task
        ctx.background.add(task)
        task.add_done_callback(ctx.background.discard)


async def _sample_queues(app_state: Any, ctx: WebContext, series: PageSeries) -> None:
    transport = ctx.monitor.client.transport
    while ctx.monitor.running:
        if time.monotonic() - app_state.aiocelerymon_page_seen > SAMPLER_IDLE:
            return
        names = ctx.inspector.active_queue_names() or list(ctx.default_queues)
        try:
            async with asyncio.timeout(max(ctx.inspect_timeout, QUEUE_SAMPLE_INTERVAL)):
                depths = await asyncio.gather(*(transport.queue_depth(n) for n in names))
        except (AiocelerymonError, OSError, TimeoutError) as exc:
            log.debug("queue depth sample failed: %s", exc)
        else:
            # Redis deletes a list once it is empty, so a queue "not found" there is one with
            # no message waiting; on RabbitMQ it is undeclared, charted as 0 all the same.
            series.add_queue_sample(
                {n: 0 if d is None else d.messages for n, d in zip(names, depths, strict=True)}
            )
        await asyncio.sleep(QUEUE_SAMPLE_INTERVAL)


async def stop_sampler(app_state: Any) -> None:
    task = getattr(app_state, "aiocelerymon_sampler", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def routes() -> list[BaseRoute]:
    get = ["GET"]
    return [
        Route("/api/page/workers", page_workers, methods=get),
        Route("/api/page/tasks", page_tasks, methods=get),
        Route("/api/page/series", page_series, methods=get),
        Route("/api/page/stuck", page_stuck, methods=get),
        Route("/api/page/task/{taskid:path}", page_task, methods=get),
        Route("/api/page/worker/{workername:path}", page_worker, methods=get),
    ]
