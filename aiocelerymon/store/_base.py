"""The store's own types and its one small async interface.

Everything crossing the interface is plain data: a task is its ``State`` fields as
``Task.as_dict()`` gives them (the worker as its hostname, parent/root/children as ids), made
JSON-safe and with its large text fields truncated; a worker its last fields; an event the
event as received. Every row carries its ``cluster`` (a name; by default the broker URL with
its password removed), so one database holds several clusters without mixing them.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

__all__ = [
    "DEFAULT_FIELD_LIMIT",
    "TEXT_FIELDS",
    "Batch",
    "EventRecord",
    "Gap",
    "SearchNode",
    "Store",
    "TaskFilter",
    "TaskRecord",
    "WorkerRecord",
    "jsonable",
    "kwargs_pairs",
    "truncate",
]

#: Characters kept of each of args, kwargs, result, exception and traceback.
DEFAULT_FIELD_LIMIT = 16_384
#: Task fields that can be large and are truncated at the store's field limit.
TEXT_FIELDS = ("args", "kwargs", "result", "exception", "traceback")
#: Task fields the full-text search covers (Flower's ``search`` terms, plus the exception).
SEARCH_COLUMNS = ("uuid", "name", "state", "worker", "args", "kwargs", "result", "exception")
SORT_COLUMNS = frozenset({"name", "state", "received", "started"})

#: A parsed search (``aiocelerymon.web.search.parse_query``'s shape, casefolded values):
#: ``("all",)`` | ``("term", field or None, value)`` | ``("and"|"or", (child, ...))``.
SearchNode = tuple[Any, ...]


def truncate(value: Any, limit: int) -> Any:
    """``value`` as text cut to ``limit`` characters with a marker saying how much was cut."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot carry as its ``str`` (floats kept finite)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dumps(value: Any) -> str:
    """JSON text; what JSON cannot carry (sets, objects, bytes) as its ``str``."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def loads(raw: str | bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def kwargs_pairs(value: Any) -> frozenset[str]:
    """``{"key=value", ...}`` of a task's kwargs (a dict, or Celery's repr of one), casefolded."""
    mapping = value if isinstance(value, dict) else None
    if mapping is None and isinstance(value, str) and len(value) < 10_000:
        try:
            parsed = ast.literal_eval(value)  # Celery sends kwargs as their repr
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            mapping = parsed
    if not mapping:
        return frozenset()
    return frozenset(f"{_fold(k)}={_fold(v)}" for k, v in mapping.items())


def _fold(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").casefold()
    return str(value).casefold()


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task's latest row: ``fields`` is ``Task.as_dict()``'s shape, JSON-safe."""

    cluster: str
    uuid: str
    fields: dict[str, Any]

    def get(self, key: str) -> Any:
        return self.fields.get(key)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    cluster: str
    hostname: str
    #: The worker's fields (pid, freq, sw_*, loadavg, processed, active, last heartbeat).
    fields: dict[str, Any]
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event in a task's timeline."""

    cluster: str
    uuid: str
    type: str
    timestamp: float | None
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Gap:
    """A span when events may have been missed (``reason``: ``downtime``, ``reconnect``...)."""

    cluster: str
    start: float
    end: float
    reason: str


@dataclass(slots=True)
class Batch:
    """What one write stores, in one transaction: rows replace older rows of the same key."""

    tasks: list[TaskRecord] = field(default_factory=list)
    workers: list[WorkerRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    #: ``(cluster, time.time())``: the writer was alive then (restarts turn it into a gap).
    alive: tuple[str, float] | None = None

    def __len__(self) -> int:
        return len(self.tasks) + len(self.workers) + len(self.events) + len(self.gaps)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """``/api/tasks``'s filters for the store; None means no filter.

    ``name``, ``state`` and ``worker`` compare case-insensitively; a time range keeps tasks
    without that time (as Flower does); ``sort_by`` is one of ``name state received started``
    (``-`` for descending); without it the newest (last event) come first.
    """

    cluster: str
    name: str | None = None
    state: str | None = None
    worker: str | None = None
    received_start: float | None = None
    received_end: float | None = None
    started_start: float | None = None
    started_end: float | None = None
    search: SearchNode = ("all",)
    sort_by: str | None = None
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.sort_by and self.sort_by.lstrip("-") not in SORT_COLUMNS:
            raise ValueError(f"cannot sort by {self.sort_by!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must not be negative, not {self.limit!r}")
        if self.offset < 0:
            raise ValueError(f"offset must not be negative, not {self.offset!r}")


@runtime_checkable
class Store(Protocol):
    """Task history. Adapters: :mod:`aiocelerymon.store.sqlite`, :mod:`.postgresql`."""

    #: The database URL, password removed.
    url: str

    async def open(self) -> None:
        """Connect and create the schema (idempotent)."""

    async def aclose(self) -> None: ...

    async def write(self, batch: Batch) -> None:
        """Store ``batch`` in one transaction (upserts; events appended)."""

    async def get_task(self, cluster: str, uuid: str) -> TaskRecord | None: ...

    async def task_events(self, cluster: str, uuid: str) -> list[EventRecord]:
        """The task's events, oldest first."""

    async def query_tasks(self, query: TaskFilter) -> list[TaskRecord]:
        """The page of tasks matching ``query``, in its order."""

    async def recent_tasks(self, cluster: str, limit: int) -> list[TaskRecord]:
        """Up to ``limit`` tasks, newest (last event) first."""

    async def workers(self, cluster: str) -> list[WorkerRecord]: ...

    async def count_tasks(self, cluster: str) -> int: ...

    async def prune(
        self, cluster: str, *, before: float | None = None, keep: int | None = None
    ) -> int:
        """Delete tasks (and their events) whose last event is older than ``before``, and all
        but the newest ``keep``; returns how many tasks were deleted."""

    async def add_gap(self, gap: Gap) -> None: ...

    async def gaps(self, cluster: str, limit: int = 100) -> list[Gap]:
        """The latest gaps, newest first."""

    async def last_alive(self, cluster: str) -> float | None:
        """The last ``Batch.alive`` time written for ``cluster``."""
