"""Control routes (flower/api/control.py), which wait for the nodes' replies.

Flower sends shutdown and revoke blind and answers 200 whatever happened; for the others it
reads only the first reply. Here every call waits for the addressed nodes (or, broadcast,
every worker known to be alive) under ``--inspect-timeout`` as a total deadline, returns as
soon as they all answered, and reports each node: ``{"ok": ...}``, ``{"error": ...}`` or
``null`` (no reply). Status: 200 if any node succeeded, 403 if every answer was an error (as
Flower), 404 if the workers do not know the task, 504 if nobody answered, 502 if the broker
could not be reached. The ``message`` is Flower's text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aiocelerymon.exceptions import AiocelerymonError
from aiocelerymon.pipeline import EventFilter
from aiocelerymon.web._http import JSON, Arguments, error
from aiocelerymon.web.api._common import context, flat_replies, path_param
from aiocelerymon.web.audit import audit_log

#: Celery's reply to a rate/time limit for a task the worker does not have.
UNKNOWN_TASK = "unknown task"


def _is_error(value: Any) -> bool:
    return isinstance(value, dict) and "error" in value


def _is_ok(value: Any) -> bool:
    return isinstance(value, dict) and "ok" in value


def _reason(replies: dict[str, Any]) -> str:
    for value in replies.values():
        if _is_error(value):
            return str(value["error"])
    return "Unknown reason"


async def _call(
    request: Request,
    action: str,
    command: str,
    arguments: dict[str, Any],
    destination: list[str] | None,
) -> dict[str, Any]:
    """Send one command and collect ``{node: reply or None}``; writes the audit line."""
    ctx = context(request)
    expected = destination or ctx.inspector.alive() or None
    try:
        replies = await ctx.monitor.client.control.broadcast(
            command,
            arguments,
            destination=destination,
            reply=True,
            timeout=ctx.inspect_timeout,
            expected=None if destination else expected,
        )
    except (AiocelerymonError, OSError) as exc:
        audit_log(request, action, destination, {})
        raise error(502, f"Could not reach the broker: {exc}") from exc
    flat = flat_replies(replies, expected)
    audit_log(request, action, destination, flat)
    return flat


def _answer(
    replies: dict[str, Any],
    success: Callable[[dict[str, Any]], str],
    failure: Callable[[str], str],
    *,
    what: str,
) -> Response:
    answered = {n: v for n, v in replies.items() if v is not None}
    if not answered:
        nodes = ", ".join(sorted(replies)) or "any worker"
        return JSON({"message": f"No reply from {nodes} to {what}", "replies": replies}, 504)
    oks = [v for v in answered.values() if not _is_error(v)]
    if not oks:
        return JSON({"message": failure(_reason(replies)), "replies": replies}, 403)
    return JSON({"message": success(oks[0]), "replies": replies})


def _known_worker(request: Request, workername: str) -> None:
    if not context(request).inspector.known(workername):
        raise error(404, f"Unknown worker '{workername}'")


async def worker_shutdown(request: Request) -> Response:
    """Cast ``shutdown`` and wait for the worker's ``worker-offline`` event (Celery workers
    never reply to shutdown); a node that refuses replies with an error (403). 200 once the
    worker went offline, 202 if it had not within ``shutdown_timeout`` (a warm shutdown
    waits for running tasks)."""
    ctx = context(request)
    w = path_param(request, "workername")
    _known_worker(request, w)
    loop = asyncio.get_running_loop()
    end = loop.time() + ctx.shutdown_timeout
    with ctx.monitor.subscribe(
        maxsize=16, filter=EventFilter(types=["worker-offline"], workers=[w])
    ) as offline:
        call = asyncio.ensure_future(
            ctx.monitor.client.control.broadcast(
                "shutdown", {}, destination=[w], reply=True, timeout=ctx.inspect_timeout
            )
        )
        gone = asyncio.ensure_future(offline.get())
        try:
            while not gone.done():
                remaining = end - loop.time()
                if remaining <= 0:
                    break
                waiting = {gone} if call.done() else {gone, call}
                await asyncio.wait(waiting, timeout=remaining, return_when="FIRST_COMPLETED")
                if call.done() and (
                    call.exception() is not None
                    or _is_error(flat_replies(call.result(), [w]).get(w))
                ):
                    break
        finally:
            gone.cancel()
            if not call.done():
                call.cancel()
    exc = call.exception() if call.done() and not call.cancelled() else None
    if exc is not None:
        audit_log(request, "worker.shutdown", [w], {})
        raise error(502, f"Could not reach the broker: {exc}") from exc
    ok = call.done() and not call.cancelled()
    replies = flat_replies(call.result(), [w]) if ok else {w: None}
    is_offline = gone.done() and not gone.cancelled() and gone.exception() is None
    audit_log(request, "worker.shutdown", [w], {w: {"ok": "offline"}} if is_offline else replies)
    if _is_error(replies.get(w)):
        text = f"Failed to shut down '{w}': {_reason(replies)}"
        return JSON({"message": text, "replies": replies, "offline": False}, 403)
    body = {"message": "Shutting down!", "replies": replies, "offline": is_offline}
    return JSON(body, 200 if is_offline else 202)


async def pool_restart(request: Request) -> Response:
    w = path_param(request, "workername")
    _known_worker(request, w)
    replies = await _call(request, "worker.pool_restart", "pool_restart", {"reload": False}, [w])
    return _answer(
        replies,
        lambda _: f"Restarting '{w}' worker's pool",
        lambda r: f"Failed to restart the '{w}' pool: {r}",
        what="pool_restart",
    )


async def pool_grow(request: Request) -> Response:
    w = path_param(request, "workername")
    _known_worker(request, w)
    n = (await Arguments.read(request)).integer("n", 1)
    replies = await _call(request, "worker.pool_grow", "pool_grow", {"n": n}, [w])
    return _answer(
        replies,
        lambda _: f"Growing '{w}' worker's pool by {n}",
        lambda r: f"Failed to grow '{w}' worker's pool: {r}",
        what="pool_grow",
    )


async def pool_shrink(request: Request) -> Response:
    w = path_param(request, "workername")
    _known_worker(request, w)
    n = (await Arguments.read(request)).integer("n", 1)
    replies = await _call(request, "worker.pool_shrink", "pool_shrink", {"n": n}, [w])
    return _answer(
        replies,
        lambda _: f"Shrinking '{w}' worker's pool by {n}",
        lambda r: f"Failed to shrink '{w}' worker's pool: {r}",
        what="pool_shrink",
    )


async def pool_autoscale(request: Request) -> Response:
    w = path_param(request, "workername")
    _known_worker(request, w)
    args = await Arguments.read(request)
    low = args.integer("min", required=True)
    high = args.integer("max", required=True)
    replies = await _call(
        request, "worker.pool_autoscale", "autoscale", {"min": low, "max": high}, [w]
    )
    return _answer(
        replies,
        lambda _: f"Autoscaling '{w}' worker (min={low}, max={high})",
        lambda r: f"Failed to autoscale '{w}' worker: {r}",
        what="autoscale",
    )


async def add_consumer(request: Request) -> Response:
    w = path_param(request, "workername")
    _known_worker(request, w)
    queue = (await Arguments.read(request)).text("queue", required=True)
    replies = await _call(
        request, "worker.queue_add_consumer", "add_consumer", {"queue": queue}, [w]
    )
    return _answer(
        replies,
        lambda ok: str(ok.get("ok")),
        lambda r: f"Failed to add '{queue}' consumer to '{w}' worker: {r}",
        what="add_consumer",
    )


async def cancel_consumer(request: Request) -> Response:
    w = path_param(request, "workername")
    _known_worker(request, w)
    queue = (await Arguments.read(request)).text("queue", required=True)
    replies = await _call(
        request, "worker.queue_cancel_consumer", "cancel_consumer", {"queue": queue}, [w]
    )
    return _answer(
        replies,
        lambda ok: str(ok.get("ok")),
        lambda r: f"Failed to cancel '{queue}' consumer from '{w}' worker: {r}",
        what="cancel_consumer",
    )


async def task_revoke(request: Request) -> Response:
    taskid = path_param(request, "taskid")
    args = await Arguments.read(request)
    terminate = args.flag("terminate")
    signal = args.text("signal", "SIGTERM")
    replies = await _call(
        request,
        "task.revoke",
        "revoke",
        {"task_id": taskid, "terminate": terminate, "signal": signal},
        None,
    )
    return _answer(
        replies,
        lambda _: f"Revoked '{taskid}'",
        lambda r: f"Failed to revoke '{taskid}': {r}",
        what="revoke",
    )


def _limit_answer(
    replies: dict[str, Any], taskname: str, failure: Callable[[str], str], what: str
) -> Response:
    answered = [v for v in replies.values() if v is not None]
    if answered and all(
        _is_error(v) and str(v["error"]).startswith(UNKNOWN_TASK) for v in answered
    ):
        return JSON({"message": f"Unknown task '{taskname}'", "replies": replies}, 404)
    return _answer(replies, lambda ok: str(ok.get("ok")), failure, what=what)


async def task_timeout(request: Request) -> Response:
    """Any task the workers registered (Flower: only its own app's), one worker or all."""
    taskname = path_param(request, "taskname")
    args = await Arguments.read(request)
    workername = args.text("workername")
    hard = args.number("hard")
    soft = args.number("soft")
    if workername:
        _known_worker(request, workername)
    destination = [workername] if workername else None
    replies = await _call(
        request,
        "task.time_limit",
        "time_limit",
        {"task_name": taskname, "hard": hard, "soft": soft},
        destination,
    )
    return _limit_answer(
        replies, taskname, lambda r: f"Failed to set timeouts: '{r}'", "time_limit"
    )


async def task_rate_limit(request: Request) -> Response:
    taskname = path_param(request, "taskname")
    args = await Arguments.read(request)
    workername = args.text("workername")
    ratelimit = args.text("ratelimit", required=True)
    if workername:
        _known_worker(request, workername)
    destination = [workername] if workername else None
    replies = await _call(
        request,
        "task.rate_limit",
        "rate_limit",
        {"task_name": taskname, "rate_limit": ratelimit},
        destination,
    )
    return _limit_answer(
        replies, taskname, lambda r: f"Failed to set rate limit: '{r}'", "rate_limit"
    )


def routes() -> list[BaseRoute]:
    post = ["POST"]
    return [
        Route("/api/worker/shutdown/{workername:path}", worker_shutdown, methods=post),
        Route("/api/worker/pool/restart/{workername:path}", pool_restart, methods=post),
        Route("/api/worker/pool/grow/{workername:path}", pool_grow, methods=post),
        Route("/api/worker/pool/shrink/{workername:path}", pool_shrink, methods=post),
        Route("/api/worker/pool/autoscale/{workername:path}", pool_autoscale, methods=post),
        Route("/api/worker/queue/add-consumer/{workername:path}", add_consumer, methods=post),
        Route("/api/worker/queue/cancel-consumer/{workername:path}", cancel_consumer, methods=post),
        Route("/api/task/revoke/{taskid:path}", task_revoke, methods=post),
        Route("/api/task/timeout/{taskname:path}", task_timeout, methods=post),
        Route("/api/task/rate-limit/{taskname:path}", task_rate_limit, methods=post),
    ]
