"""The OpenAPI 3.1 document served at ``/api/openapi.json`` (every route, its parameters,
bodies and status codes), written out here rather than inferred so it says what Flower's
clients rely on."""

from __future__ import annotations

from typing import Any

from aiocelerymon._version import __version__

__all__ = ["openapi_document"]

_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _json(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"application/json": {"schema": schema or {"type": "object"}}}


def _resp(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if content is not None:
        out["content"] = content
    return out


def _q(name: str, schema: dict[str, Any], description: str, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}  # fmt: skip


_BOOL = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no", "on", "off"]}
_INT = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
_NUM = {"type": "number"}
_STR = {"type": "string"}

_REPLIES = {
    "type": "object",
    "description": "Each addressed node's reply: {ok: ...}, {error: ...}, or null (no reply).",
    "additionalProperties": {"anyOf": [{"type": "object"}, {"type": "null"}]},
}
_CONTROL = {
    "type": "object",
    "required": ["message", "replies"],
    "properties": {"message": _STR, "replies": _REPLIES},
}


def _form(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {
        "required": bool(required),
        "content": {"application/x-www-form-urlencoded": {"schema": schema}},
    }


def _control(summary: str, param: tuple[str, str], form: dict[str, Any] | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {
        "summary": summary,
        "tags": ["control"],
        "parameters": [_path(*param)],
        "responses": {
            "200": _resp("At least one node succeeded.", _json(_CONTROL)),
            "400": _resp("A missing or malformed argument.", _TEXT),
            "403": _resp("Every node that answered refused; or read-only mode.", _json(_CONTROL)),
            "404": _resp("Unknown worker or task.", _TEXT | _json(_CONTROL)),
            "502": _resp("The broker could not be reached.", _TEXT),
            "504": _resp("No node answered before the deadline.", _json(_CONTROL)),
            **(extra or {}),
        },
    }
    if form is not None:
        op["requestBody"] = form
    return {"post": op}


_WORKER = ("workername", "The worker's node name, e.g. celery@host.")


def openapi_document(url_prefix: str = "") -> dict[str, Any]:
    """The document; ``servers`` carries the URL prefix so clients build the right URLs."""
    paths: dict[str, Any] = {
        "/healthcheck": {
            "get": {
                "summary": "Liveness",
                "tags": ["meta"],
                "responses": {"200": _resp("OK", _TEXT)},
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["meta"],
                "responses": {"200": _resp("OpenAPI 3.1", _json())},
            }
        },
        "/api/stats": {
            "get": {
                "summary": "The monitor's ingestion health (not in Flower).",
                "tags": ["meta"],
                "responses": {"200": _resp("Counters", _json())},
            }
        },
        "/api/workers": {
            "get": {
                "summary": "Workers and their last inspect replies (Flower's ListWorkers).",
                "tags": ["workers"],
                "parameters": [
                    _q("refresh", _BOOL, "Inspect now; returns once every live worker answered."),
                    _q("workername", _STR, "One worker; its task lists are inspected too."),
                    _q("status", _BOOL, "Only {worker: alive}."),
                ],
                "responses": {
                    "200": _resp(
                        "{worker: {stats, active_queues, registered, conf, ...}}", _json()
                    ),
                    "400": _resp("A malformed argument.", _TEXT),
                    "404": _resp("Unknown worker.", _TEXT),
                    "503": _resp("The broker could not be reached.", _TEXT),
                },
            }
        },
        "/api/tasks": {
            "get": {
                "summary": "Tasks from the event stream, filtered, searched, sorted, paged.",
                "tags": ["tasks"],
                "parameters": [
                    _q("limit", {"type": "integer", "minimum": 0, "maximum": 2**31}, "Page size."),
                    _q("offset", {"type": "integer", "minimum": 0, "maximum": 2**31}, "Skip."),
                    _q(
                        "sort_by",
                        {
                            "type": "string",
                            "enum": [
                                "name",
                                "state",
                                "received",
                                "started",
                                "-name",
                                "-state",
                                "-received",
                                "-started",
                            ],
                        },
                        "Order; '-' descends.",
                    ),
                    _q("workername", _STR, "Exact worker name ('All': any)."),
                    _q("taskname", _STR, "Exact task name ('All': any)."),
                    _q("state", _STR, "Exact state ('All': any)."),
                    _q("received_start", _STR, "YYYY-MM-DD HH:MM, local time."),
                    _q("received_end", _STR, "YYYY-MM-DD HH:MM, local time."),
                    _q("started_start", _STR, "YYYY-MM-DD HH:MM, local time."),
                    _q("started_end", _STR, "YYYY-MM-DD HH:MM, local time."),
                    _q("search", _STR, "Flower's query language: field:value, OR, (), quotes."),
                ],
                "responses": {
                    "200": _resp("{uuid: task}, in order.", _json()),
                    "400": _resp("A malformed argument or query.", _TEXT | _json()),
                },
            }
        },
        "/api/task/types": {
            "get": {
                "summary": "Task names seen in events.",
                "tags": ["tasks"],
                "responses": {"200": _resp("{task-types: [...]}", _json())},
            }
        },
        "/api/task/info/{taskid}": {
            "get": {
                "summary": "One task.",
                "tags": ["tasks"],
                "parameters": [_path("taskid", "Task id.")],
                "responses": {
                    "200": _resp("The task.", _json()),
                    "404": _resp("Unknown task.", _TEXT),
                },
            }
        },
        "/api/task/events/{taskid}": {
            "get": {
                "summary": "A task's stored event timeline (ours: needs the task history).",
                "tags": ["tasks"],
                "parameters": [_path("taskid", "Task id.")],
                "responses": {
                    "200": _resp("{task-id, events: [{type, timestamp, fields}]}", _json()),
                    "404": _resp("Unknown task, or no history kept.", _TEXT),
                },
            }
        },
        "/api/history": {
            "get": {
                "summary": "The task history: store, stored tasks, gaps, writer health.",
                "tags": ["tasks"],
                "responses": {"200": _resp("{store, cluster, tasks, gaps, writer}", _json())},
            }
        },
        "/api/queues/length": {
            "get": {
                "summary": "Messages waiting in the workers' queues.",
                "tags": ["tasks"],
                "responses": {
                    "200": _resp("{active_queues: [{name, messages, consumers}]}", _json()),
                    "503": _resp("The broker could not be reached.", _TEXT),
                },
            }
        },
        "/api/task/send-task/{taskname}": {
            "post": {
                "summary": "Send a task by name (Celery's send_task).",
                "tags": ["tasks"],
                "parameters": [_path("taskname", "Task name.")],
                "requestBody": {
                    "required": False,
                    "content": _json(
                        {
                            "type": "object",
                            "properties": {
                                "args": {"type": "array"},
                                "kwargs": {"type": "object"},
                                "task_id": _STR,
                                "queue": _STR,
                                "exchange": _STR,
                                "routing_key": _STR,
                                "countdown": _NUM,
                                "eta": _STR,
                                "expires": _NUM,
                                "priority": {"type": "integer", "minimum": 0, "maximum": 255},
                                "time_limit": _NUM,
                                "soft_time_limit": _NUM,
                            },
                            "additionalProperties": False,
                        }
                    ),
                },
                "responses": {
                    "200": _resp("{task-id}", _json()),
                    "400": _resp("A malformed body.", _TEXT),
                    "403": _resp("Read-only mode.", _TEXT),
                    "413": _resp("Body too large.", _TEXT),
                    "502": _resp("The broker could not be reached.", _TEXT),
                },
            }
        },
        "/api/worker/shutdown/{workername}": _control(
            "Shut a worker down; waits for its worker-offline event.",
            _WORKER,
            extra={"202": _resp("Sent; the worker had not gone offline yet.", _json())},
        ),
        "/api/worker/pool/restart/{workername}": _control("Restart the pool.", _WORKER),
        "/api/worker/pool/grow/{workername}": _control(
            "Grow the pool.", _WORKER, _form({"n": _INT})
        ),
        "/api/worker/pool/shrink/{workername}": _control(
            "Shrink the pool.", _WORKER, _form({"n": _INT})
        ),
        "/api/worker/pool/autoscale/{workername}": _control(
            "Set autoscale bounds.", _WORKER, _form({"min": _INT, "max": _INT}, ["min", "max"])
        ),
        "/api/worker/queue/add-consumer/{workername}": _control(
            "Consume from a queue.", _WORKER, _form({"queue": _STR}, ["queue"])
        ),
        "/api/worker/queue/cancel-consumer/{workername}": _control(
            "Stop consuming from a queue.", _WORKER, _form({"queue": _STR}, ["queue"])
        ),
        "/api/task/revoke/{taskid}": _control(
            "Revoke a task (every live worker).",
            ("taskid", "Task id."),
            _form({"terminate": _BOOL, "signal": _STR}),
        ),
        "/api/task/timeout/{taskname}": _control(
            "Set a task's time limits (one worker, or all).",
            ("taskname", "Task name."),
            _form({"workername": _STR, "hard": _NUM, "soft": _NUM}),
        ),
        "/api/task/rate-limit/{taskname}": _control(
            "Set a task's rate limit (one worker, or all).",
            ("taskname", "Task name."),
            _form({"workername": _STR, "ratelimit": _STR}, ["ratelimit"]),
        ),
        "/api/events": {
            "get": {
                "summary": "The live event stream, as server-sent events (or /api/events/ws).",
                "tags": ["push"],
                "parameters": [
                    _q("type", _STR, "Event types, globs allowed, comma-separated or repeated."),
                    _q("worker", _STR, "Worker names (globs)."),
                    _q("taskname", _STR, "Task names (globs)."),
                    _q("state", _STR, "Task states."),
                    _q("snapshot", _BOOL, "Start with a resync message."),
                    _q(
                        "resync_limit",
                        {"type": "integer", "minimum": 0, "maximum": 1000},
                        "Tasks in a resync message.",
                    ),
                ],
                "responses": {
                    "200": _resp(
                        "text/event-stream of JSON messages",
                        {"text/event-stream": {"schema": _STR}},
                    ),
                    "400": _resp("A malformed argument.", _TEXT),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aiocelerymon",
            "version": __version__,
            "description": "Flower 2.2-compatible Celery monitoring and control API.",
        },
        "servers": [{"url": url_prefix.rstrip("/") or "/"}],
        "paths": paths,
    }
