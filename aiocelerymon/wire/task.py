"""Celery's task message, protocol 2 (celery/app/amqp.py ``as_task_v2``), for ``send_task``.

Headers carry the task's identity and options, the body is ``[args, kwargs, embed]``. A worker
of any Celery 5.x version executes it as if ``app.send_task`` had sent it; the repr fields
are what its ``task-received`` event reports.
"""

from __future__ import annotations

import datetime
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiocelerymon.wire import codec
from aiocelerymon.wire.entities import Exchange, ExchangeKind, Message

__all__ = ["DEFAULT_QUEUE", "task_exchange", "task_message"]

#: ``task_default_queue`` (also the exchange and routing key Celery derives from it).
DEFAULT_QUEUE = "celery"
#: Celery's ``argsrepr``/``kwargsrepr`` length limit (``saferepr`` maxlen).
REPR_MAX = 1024


def _repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_MAX else text[: REPR_MAX - 3] + "..."


def _iso(value: float | datetime.datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    else:
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=float(value))
    return when.isoformat()


def task_exchange(name: str = DEFAULT_QUEUE) -> Exchange:
    """The direct exchange Celery declares for a queue of the same name (durable)."""
    return Exchange(name, ExchangeKind.DIRECT, durable=True)


def task_message(
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    task_id: str | None = None,
    countdown: float | None = None,
    eta: datetime.datetime | str | None = None,
    expires: float | datetime.datetime | str | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    group_id: str | None = None,
    shadow: str | None = None,
    priority: int = 0,
    headers: Mapping[str, Any] | None = None,
    serializer: str = "json",
) -> Message:
    """One task message; ``countdown`` (seconds from now) wins over ``eta`` as in Celery."""
    task_id = task_id or str(uuid.uuid4())
    kwargs = dict(kwargs or {})
    if countdown is not None:
        eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=float(countdown))
    message_headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": _iso(eta),
        "expires": _iso(expires),
        "group": group_id,
        "group_index": None,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": _repr(tuple(args)),
        "kwargsrepr": _repr(kwargs),
        "origin": f"{os.getpid()}@{socket.gethostname()}",
        "ignore_result": False,
        **(headers or {}),
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body, content_type, encoding = codec.encode([list(args), kwargs, embed], serializer)
    return Message(
        body=body,
        content_type=content_type,
        content_encoding=encoding,
        headers=message_headers,
        delivery_mode=2,
        priority=priority,
    )
