"""Task routes: list, types, info, queue lengths, send-task (flower/api/tasks.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aiocelerymon.exceptions import AiocelerymonError
from aiocelerymon.pipeline.history import StoredTask
from aiocelerymon.store import TaskFilter
from aiocelerymon.web._http import JSON, Arguments, error
from aiocelerymon.web.api._common import context, path_param
from aiocelerymon.web.audit import audit_log
from aiocelerymon.web.search import QuerySyntaxError, TaskQuery, parse_query, parse_time

#: ``send-task`` body options (Celery's ``send_task`` keywords we carry on the wire).
SEND_OPTIONS = frozenset({
    "task_id", "countdown", "eta", "expires", "priority", "queue", "exchange", "routing_key",
    "time_limit", "soft_time_limit", "shadow", "headers", "retries",
})  # fmt: skip
MAX_BODY = 1024 * 1024


def task_dict(task: Any) -> dict[str, Any]:
    """Flower's shape: ``Task.as_dict()`` with the worker as its hostname."""
    info: dict[str, Any] = task.as_dict()
    worker = info.pop("worker", None)
    if worker is not None:
        info["worker"] = getattr(worker, "hostname", worker)
    return info


def _all(value: str | None) -> str | None:
    return None if value in (None, "", "All") else value  # Flower's "All" means no filter


async def list_tasks(request: Request) -> Response:
    ctx = context(request)
    args = Arguments(request)
    try:
        times = {
            key: parse_time(args.text(key))
            for key in ("received_start", "received_end", "started_start", "started_end")
        }
    except ValueError as exc:
        raise error(
            400,
            "Invalid received_start or received_end, expected format 'YYYY-MM-DD HH:MM'",
        ) from exc
    try:
        query = TaskQuery(
            limit=args.integer("limit"),
            offset=args.integer("offset", 0),
            sort_by=args.text("sort_by"),
            worker=_all(args.text("workername")),
            taskname=_all(args.text("taskname")),
            state=_all(args.text("state")),
            search=args.values.get("search", [""])[-1],
            **times,
        )
    except QuerySyntaxError as exc:
        return JSON({"error": str(exc)}, status_code=400)
    except ValueError as exc:
        raise error(400, str(exc)) from exc
    memory = ctx.monitor.state.tasks.data
    candidates: list[Any] = list(memory.values())
    if ctx.history is not None:
        candidates += await _from_history(ctx, query, memory)
    page = query.run(candidates)
    return JSON({str(task.uuid): task_dict(task) for task in page})


async def _from_history(ctx: Any, query: TaskQuery, memory: Any) -> list[Any]:
    """Stored tasks that may make the page, and are not in memory.

    The store is asked for the first ``offset + limit`` matches in the page's order (every
    filter runs in SQL, on its indexes); the page is then cut from those together with the
    State's matches, the State's fresher version winning. Tasks changed since the last write
    (the writer's pending rows) are in memory. Without ``limit``, at most ``max_tasks``
    stored tasks are added (Flower's unlimited answer is everything in memory).
    """
    history = ctx.history
    cap = ctx.monitor.state.max_tasks_in_memory or 100_000
    limit = cap if query.limit is None else max(query.offset, 0) + max(query.limit, 0)
    search = parse_query(query.search)
    found = await history.store.query_tasks(
        TaskFilter(
            cluster=history.cluster,
            name=query.taskname,
            state=query.state,
            worker=query.worker,
            received_start=query.received_start,
            received_end=query.received_end,
            started_start=query.started_start,
            started_end=query.started_end,
            search=search,
            sort_by=query.sort_by,
            limit=limit,
        )
    )
    extra = [StoredTask(r) for r in found if r.uuid not in memory]
    # Pending tasks the State has evicted since (their row is not written yet).
    extra += [t for t in history.pending() if t.uuid not in memory]
    return extra


async def task_types(request: Request) -> Response:
    return JSON({"task-types": context(request).monitor.state.task_types()})


async def task_info(request: Request) -> Response:
    ctx = context(request)
    taskid = path_param(request, "taskid")
    task: Any = ctx.monitor.state.tasks.data.get(taskid)
    if task is None and ctx.history is not None:
        record = await ctx.history.store.get_task(ctx.history.cluster, taskid)
        task = None if record is None else StoredTask(record)
    if task is None:
        raise error(404, f"Unknown task '{taskid}'")
    return JSON(task_dict(task))


async def task_events(request: Request) -> Response:
    """``{"task-id": ..., "events": [{type, timestamp, fields}]}``: the stored timeline
    (ours; Flower keeps none). 404 when no history is kept or the task is unknown to it."""
    ctx = context(request)
    taskid = path_param(request, "taskid")
    if ctx.history is None:
        raise error(404, "No task history is kept (serve --db)")
    events = await ctx.history.store.task_events(ctx.history.cluster, taskid)
    if not events and await ctx.history.store.get_task(ctx.history.cluster, taskid) is None:
        raise error(404, f"Unknown task '{taskid}'")
    return JSON(
        {
            "task-id": taskid,
            "events": [
                {"type": e.type, "timestamp": e.timestamp, "fields": e.fields} for e in events
            ],
        }
    )


async def history_info(request: Request) -> Response:
    """The task history: store, cluster, stored tasks, gaps (downtime), writer health."""
    ctx = context(request)
    history = ctx.history
    if history is None:
        return JSON({"store": None})
    store = history.store
    gaps = await store.gaps(history.cluster)
    return JSON(
        {
            "store": store.url,
            "cluster": history.cluster,
            "tasks": await store.count_tasks(history.cluster),
            "warmed": history.warmed,
            "gaps": [{"start": g.start, "end": g.end, "reason": g.reason} for g in gaps],
            "writer": None if history.writer is None else history.writer.stats.as_dict(),
        }
    )


async def queue_lengths(request: Request) -> Response:
    """``{"active_queues": [{"name", "messages", "consumers"}]}`` for the workers' queues."""
    ctx = context(request)
    names = ctx.inspector.active_queue_names() or list(ctx.default_queues)
    transport = ctx.monitor.client.transport
    try:
        depths = await asyncio.gather(*(transport.queue_depth(name) for name in names))
    except (AiocelerymonError, OSError) as exc:
        raise error(503, f"Failed to read queue lengths: {exc}") from exc
    queues = []
    for name, depth in zip(names, depths, strict=True):
        if depth is None:
            continue  # not declared on the broker (Flower's Redis answer would say 0)
        queues.append({"name": name, "messages": depth.messages, "consumers": depth.consumers})
    return JSON({"active_queues": queues})


async def send_task(request: Request) -> Response:
    ctx = context(request)
    taskname = path_param(request, "taskname")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise error(413, "Request body too large")
    try:
        options = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise error(400, str(exc)) from exc
    if not isinstance(options, dict):
        raise error(400, "invalid options")
    task_args = options.pop("args", [])
    task_kwargs = options.pop("kwargs", {})
    if not isinstance(task_args, list):
        raise error(400, "args must be an array")
    if not isinstance(task_kwargs, dict):
        raise error(400, "kwargs must be an object")
    unknown = sorted(set(options) - SEND_OPTIONS)
    if unknown:
        raise error(400, f"Unknown option(s): {', '.join(unknown)}")
    for key in ("countdown", "time_limit", "soft_time_limit", "expires"):
        value = options.get(key)
        if value is not None and not isinstance(value, (int, float, str)):
            raise error(400, f"Invalid option {key}")
    for key in ("countdown", "time_limit", "soft_time_limit"):
        if isinstance(options.get(key), str):
            try:
                options[key] = float(options[key])
            except ValueError as exc:
                raise error(400, f"Invalid option {key}") from exc
    for key in ("priority", "retries"):
        if key in options and not (
            isinstance(options[key], int)
            and not isinstance(options[key], bool)
            and 0 <= options[key] <= 255
        ):
            raise error(400, f"Invalid option {key}")
    for key in ("task_id", "queue", "exchange", "routing_key", "shadow", "eta"):
        if options.get(key) is not None and not isinstance(options[key], str):
            raise error(400, f"Invalid option {key}")
    if options.get("headers") is not None and not isinstance(options["headers"], dict):
        raise error(400, "Invalid option headers")
    try:
        task_id = await ctx.monitor.client.send_task(taskname, task_args, task_kwargs, **options)
    except (AiocelerymonError, OSError) as exc:
        audit_log(request, "task.send", taskname, {})
        raise error(502, f"Could not publish the task: {exc}") from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise error(400, f"Invalid task arguments: {exc}") from exc
    audit_log(request, "task.send", taskname, {"broker": {"ok": f"sent {task_id}"}})
    return JSON({"task-id": task_id})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/tasks", list_tasks, methods=["GET"]),
        Route("/api/task/types", task_types, methods=["GET"]),
        Route("/api/queues/length", queue_lengths, methods=["GET"]),
        Route("/api/task/info/{taskid:path}", task_info, methods=["GET"]),
        Route("/api/task/events/{taskid:path}", task_events, methods=["GET"]),
        Route("/api/history", history_info, methods=["GET"]),
        Route("/api/task/send-task/{taskname:path}", send_task, methods=["POST"]),
    ]
