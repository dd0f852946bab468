"""In-memory cluster state fed by Celery events, a drop-in for ``celery.events.state``.

:class:`State`, :class:`Worker` and :class:`Task` have the names, attributes and results of
Celery's classes (as Flower and ``celery events`` use them), quirks included (wire-protocol
reference §6). What differs is the cost. Celery keeps every event in a sorted list
(``bisect.insort``, and ``pop(0)`` once full: O(n) per event); here an event costs O(1)
amortised however many tasks are held, and a retained task takes about a fifth of the memory.

How:

* Time order (:class:`_TimeHeap`): each task event appends ``clock, timestamp, origin, key``
  to four columns (typed arrays for the numbers). The columns are sorted lazily, a chunk at a
  time, and trimmed to exactly what Celery's heap holds after the same events.
* Indexes and ``children`` are :class:`TaskSet` (a dict keyed by uuid). The LRU tells the
  state about every task it drops, which then leaves its indexes, its parent's ``children``
  and the parked children, in O(1). Celery's WeakSets lose it when it is garbage collected;
  Celery's ``Task`` is in a reference cycle, so that is at the next cyclic collection.
* :class:`Task` has slots for the fields a finished task has and an instance ``__dict__`` for
  the others; host names, task names and event types are interned, pids and utc offsets
  shared.

Differences from Celery (none shows with real event streams):

* A task dropped from ``tasks`` (by the LRU, ``clear`` or the user) is out of the indexes,
  ``children`` and ``tasks_by_time`` at once, even if something else still holds it. Celery
  keeps it there until it is collected.
* ``Task.parent`` / ``Task.root`` are looked up at every read (Celery caches the first answer,
  even ``None``, and the cache keeps the parent alive after the LRU dropped it).
* ``tasks_by_worker(hostname)`` skips tasks without a worker (seen only through ``task-sent``);
  Celery raises ``AttributeError`` on them.
* The order is kombu's ``timetuple`` order. When truthy and falsy clocks are mixed that order
  is not transitive and Celery's result depends on the insertion history; here the same
  comparison drives a sort, so such entries may come out in another order. Clocks or
  timestamps that do not compare raise ``TypeError`` when an ordered view is read (Celery:
  from ``event()``).
* ``event_callback``, ``on_node_join``, ``on_node_leave`` and ``handlers`` are read at every
  event (Celery binds them at the first event). There is no lock: a State belongs to one
  thread (asyncio). ``freeze_while`` runs the function, then clears if asked.
* ``max_tasks_in_memory`` of ``0``/``None`` means unbounded (Celery fails at the first event).
* The drift warning logs the raw timestamps (Celery converts them to ``datetime``, which
  raises for timestamps outside its range) and has its own wording.
* A task or worker event that fails (an unhashable ``name`` or ``parent_id``, a timestamp
  that does not convert, a failing ``on_node_join``) raises and leaves the state as it was;
  only ``event_count`` and the ``callback`` have seen it. Celery leaves such an event half
  applied.
* ``max_tasks_in_memory`` and ``heap_multiplier`` set on an instance after ``__init__`` size
  the time index at the first event, as Celery's; the ``tasks`` LRU keeps its size.
* Log records come from the ``aiocelerymon.events.state`` logger (Celery's:
  ``celery.events.state``): a filter or level set on Celery's name does not reach them.
* Event keys named like a :class:`Task` property (``children``, ``id``, ``ready``, ...) go to
  the instance ``__dict__`` without hiding the property (Celery: ``children`` is replaced).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import weakref
from array import array
from bisect import bisect_right, insort
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, MutableSet
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

__all__ = ["State", "Task", "Worker", "heartbeat_expires"]

logger = logging.getLogger(__name__)

#: How long past its last heartbeat a worker stays alive, in percent of its ``freq``.
HEARTBEAT_EXPIRE_WINDOW = 200
#: Seconds of difference between sent and received timestamps that trigger a warning.
HEARTBEAT_DRIFT_MAX = 16

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
#: States in which the task has finished (``celery.states.READY_STATES``).
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})

# celery.states precedence: a lower rank is a *later* state. Unknown (custom) states rank 2.
_RANK = {
    SUCCESS: 0,
    FAILURE: 1,
    REVOKED: 3,
    STARTED: 4,
    RECEIVED: 5,
    REJECTED: 6,
    RETRY: 7,
    PENDING: 8,
}
_CUSTOM_RANK = 2

#: Task event subject -> the state it sets. Other subjects set ``subject.upper()``.
_EVENT_STATE = {
    "sent": PENDING,
    "received": RECEIVED,
    "started": STARTED,
    "failed": FAILURE,
    "retried": RETRY,
    "succeeded": SUCCESS,
    "revoked": REVOKED,
    "rejected": REJECTED,
}

_K = TypeVar("_K")
_V = TypeVar("_V")
_intern = sys.intern


def _now() -> float:
    """Wall clock for :attr:`Worker.alive` (a function so tests can pin it)."""
    return time.time()


def heartbeat_expires(
    timestamp: float | Decimal,
    freq: float | Decimal = 60,
    expire_window: float = HEARTBEAT_EXPIRE_WINDOW,
) -> float:
    """Time at which a worker whose last heartbeat was at ``timestamp`` is considered gone."""
    # JSON decoders may give Decimal, which does not mix with float arithmetic.
    if isinstance(freq, Decimal):
        freq = float(freq)
    if isinstance(timestamp, Decimal):
        timestamp = float(timestamp)
    return timestamp + freq * (expire_window / 1e2)


# ---------------------------------------------------------------------------------------------
# LRU mapping


class LRUCache(MutableMapping[_K, _V]):
    """Mapping with kombu ``LRUCache`` behaviour, telling its owner about every value it drops.

    Reads through the mapping (``cache[key]``, ``get``) make a key the most recent; ``data``
    (an :class:`~collections.OrderedDict`, oldest first) reads without doing so, which is
    how the event path reads (Celery's dispatcher binds ``data.__getitem__``). Inserting a new
    key when full drops the least recent one; replacing an existing key keeps its place and
    drops nothing (kombu 5.7).
    """

    def __init__(
        self, limit: int | None = None, on_remove: Callable[[_V], object] | None = None
    ) -> None:
        self.limit = limit
        self.data: OrderedDict[_K, _V] = OrderedDict()
        self._on_remove = on_remove

    def __getitem__(self, key: _K) -> _V:
        data = self.data
        value = data[key]
        data.move_to_end(key)
        return value

    def __setitem__(self, key: _K, value: _V) -> None:
        data = self.data
        on_remove = self._on_remove
        if key in data:
            old = data[key]
            data[key] = value
            if on_remove is not None and old is not value:
                on_remove(old)
            return
        limit = self.limit
        if limit and len(data) >= limit:
            evicted = data.popitem(last=False)[1]
            if on_remove is not None:
                on_remove(evicted)
        data[key] = value

    def __delitem__(self, key: _K) -> None:
        value = self.data.pop(key)
        if self._on_remove is not None:
            self._on_remove(value)

    def __iter__(self) -> Iterator[_K]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __repr__(self) -> str:
        return repr(self.data)

    def keys(self) -> Any:  # the OrderedDict views, as kombu's LRUCache gives
        return self.data.keys()

    def values(self) -> Any:
        return self.data.values()

    def items(self) -> Any:
        return self.data.items()

    def popitem(self, last: bool = True) -> tuple[_K, _V]:
        item = self.data.popitem(last)
        if self._on_remove is not None:
            self._on_remove(item[1])
        return item

    def clear(self) -> None:
        values = list(self.data.values())
        self.data.clear()
        if self._on_remove is not None:
            for value in values:
                self._on_remove(value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add or replace all the items, then drop the least recent ones over the limit."""
        data = self.data
        on_remove = self._on_remove
        for key, value in dict(*args, **kwargs).items():
            old = data.get(key, _MISSING)
            data[key] = value
            if on_remove is not None and old is not _MISSING and old is not value:
                on_remove(old)
        limit = self.limit
        if limit:
            while len(data) > limit:
                self.popitem(last=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "data": self.data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.limit = state["limit"]
        self.data = state["data"]
        self._on_remove = None


_MISSING: Any = object()


def _insert(cache: LRUCache[_K, _V], key: _K, value: _V) -> tuple[_K, _V] | None:
    """``cache[key] = value`` for a new key; returns the item it evicted, to undo it."""
    data = cache.data
    evicted = None
    limit = cache.limit
    if limit and len(data) >= limit and key not in data:
        evicted = data.popitem(last=False)
        if cache._on_remove is not None:
            cache._on_remove(evicted[1])
    data[key] = value
    return evicted


def _save_attrs(obj: Any) -> tuple[list[tuple[str, Any]], dict[str, Any], list[Any]]:
    """What :func:`_restore_attrs` needs to put a :class:`Worker` back as it is now."""
    slots = [(name, getattr(obj, name, _MISSING)) for name in obj.__class__._fields]
    return slots, dict(obj.__dict__), list(obj.heartbeats)


def _restore_attrs(
    obj: Any, saved: tuple[list[tuple[str, Any]], dict[str, Any], list[Any]]
) -> None:
    slots, extra, heartbeats = saved
    for name, value in slots:
        if value is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(obj, name)
        else:
            setattr(obj, name, value)
    obj.__dict__.clear()
    obj.__dict__.update(extra)
    obj.heartbeats[:] = heartbeats


# ---------------------------------------------------------------------------------------------
# Worker

#: Host names already warned about clock drift (bounded, process wide, like Celery's memo).
_drift_warned: OrderedDict[Any, None] = OrderedDict()
_DRIFT_MEMO_MAX = 1000


def _warn_drift(hostname: Any, drift: int, local_received: Any, timestamp: Any) -> None:
    if hostname in _drift_warned:
        _drift_warned.move_to_end(hostname)
        return
    _drift_warned[hostname] = None
    if len(_drift_warned) > _DRIFT_MEMO_MAX:
        _drift_warned.popitem(last=False)
    logger.warning(
        "Clocks of %s and this monitor may be out of sync: events arrive %s s off "
        "(sent at %s, received at %s)",
        hostname,
        drift,
        timestamp,
        local_received,
    )


class Worker:
    """One worker: the fields of its last event, heartbeats, liveness."""

    heartbeat_max: ClassVar[int] = 4
    expire_window: ClassVar[float] = HEARTBEAT_EXPIRE_WINDOW
    _fields: ClassVar[tuple[str, ...]] = (
        "hostname",
        "pid",
        "freq",
        "heartbeats",
        "clock",
        "active",
        "processed",
        "loadavg",
        "sw_ident",
        "sw_ver",
        "sw_sys",
    )
    __slots__ = (*_fields, "_idc", "__dict__", "__weakref__")

    hostname: Any
    pid: Any
    freq: Any
    heartbeats: list[Any]
    clock: Any
    active: Any
    processed: Any
    loadavg: Any
    sw_ident: Any
    sw_ver: Any
    sw_sys: Any
    _idc: tuple[Any, Any, str] | None

    if TYPE_CHECKING:  # every event key becomes an attribute

        def __getattr__(self, name: str) -> Any: ...

    def __init__(
        self,
        hostname: Any = None,
        pid: Any = None,
        freq: Any = 60,
        heartbeats: list[Any] | None = None,
        clock: Any = 0,
        active: Any = None,
        processed: Any = None,
        loadavg: Any = None,
        sw_ident: Any = None,
        sw_ver: Any = None,
        sw_sys: Any = None,
    ) -> None:
        self.hostname = hostname
        self.pid = pid
        self.freq = freq
        self.heartbeats = [] if heartbeats is None else heartbeats
        self.clock = clock or 0
        self.active = active
        self.processed = processed
        self.loadavg = loadavg
        self.sw_ident = sw_ident
        self.sw_ver = sw_ver
        self.sw_sys = sw_sys
        self._idc = None

    def event(
        self,
        type_: str | None,
        timestamp: Any = None,
        local_received: Any = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply one event: copy its fields, then record the heartbeat ``local_received``.

        The state calls this for task events too, with ``type_=None``, no fields and, as
        Celery does, ``timestamp`` and ``local_received`` swapped: the task event's own
        timestamp is what lands in ``heartbeats``.
        """
        beats = None if type_ == "offline" else self._beats(timestamp, local_received)
        if fields:
            for key, value in fields.items():
                setattr(self, key, value)
        if type_ == "offline":
            self.heartbeats.clear()
        elif beats is not None:
            self.heartbeats[:] = beats

    def _beats(self, timestamp: Any, local_received: Any) -> list[Any] | None:
        """The heartbeats after recording ``local_received`` (None: unchanged), computed on a
        copy so that a value that does not compare or convert changes nothing."""
        if not local_received or not timestamp:
            return None
        drift = abs(int(local_received) - int(timestamp))
        if drift > HEARTBEAT_DRIFT_MAX:
            _warn_drift(self.hostname, drift, local_received, timestamp)
        heartbeats = self.heartbeats[:]
        count = len(heartbeats)
        if count >= self.heartbeat_max:
            del heartbeats[0]
        # ``count`` is the length before the drop, as in Celery.
        if count and local_received > heartbeats[-1]:
            heartbeats.append(local_received)
        else:
            insort(heartbeats, local_received)
        return heartbeats

    def update(self, f: Mapping[str, Any], **kw: Any) -> None:
        """Set every item of ``f`` (and ``kw``) as an attribute."""
        for key, value in (dict(f, **kw) if kw else f).items():
            setattr(self, key, value)

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    @property
    def heartbeat_expires(self) -> float:
        return heartbeat_expires(self.heartbeats[-1], self.freq, self.expire_window)

    @property
    def alive(self) -> bool:
        """Whether the last heartbeat is younger than ``freq`` times the expire window."""
        return bool(self.heartbeats and _now() < self.heartbeat_expires)

    @property
    def id(self) -> str:
        """``"hostname.pid"``; cached because every task event uses it as its origin."""
        hostname, pid, cached = self.hostname, self.pid, self._idc
        if cached is not None and cached[0] is hostname and cached[1] is pid:
            return cached[2]
        value = f"{hostname}.{pid}"
        self._idc = (hostname, pid, value)
        return value

    def __repr__(self) -> str:
        # Celery's format, unbalanced bracket included.
        return f"<Worker: {self.hostname} ({self.status_string} clock:{self.clock})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, self.__class__):
            return bool(self.hostname == other.hostname)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.hostname)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (
            self.hostname,
            self.pid,
            self.freq,
            self.heartbeats,
            self.clock,
            self.active,
            self.processed,
            self.loadavg,
            self.sw_ident,
            self.sw_ver,
            self.sw_sys,
        )


# ---------------------------------------------------------------------------------------------
# Task

#: Task fields with a slot, initialised to ``None``.
_TASK_NONE_SLOTS = (
    "name",
    "received",
    "started",
    "succeeded",
    "args",
    "kwargs",
    "eta",
    "expires",
    "retries",
    "worker",
    "result",
    "timestamp",
    "runtime",
    "root_id",
    "parent_id",
)
#: Fields every task event carries but Celery's Task has no default for: slots left unset,
#: so reading one before an event set it raises AttributeError as in Celery.
_TASK_WIRE_SLOTS = ("hostname", "pid", "utcoffset", "type", "local_received")

# How _merge stores each event key that has a slot (other keys go to the instance __dict__).
_PLAIN, _INTERN, _UUID, _ROOT, _NUMBER = range(5)
_MERGE_KIND: dict[str, int] = {
    **dict.fromkeys(_TASK_NONE_SLOTS, _PLAIN),
    "state": _PLAIN,
    "clock": _PLAIN,
    "local_received": _PLAIN,
    "cluster_state": _PLAIN,
    "worker": _PLAIN,
    "name": _INTERN,
    "hostname": _INTERN,
    "type": _INTERN,
    "uuid": _UUID,
    "root_id": _ROOT,
    "pid": _NUMBER,
    "utcoffset": _NUMBER,
}

#: Compiled :meth:`Task._merge` per key tuple. An event type always sends the same keys in
#: the same order, so a handful of plans serve a whole stream; the cap bounds odd streams.
_MERGE_PLANS: dict[tuple[Any, ...], Callable[[Any, Mapping[str, Any]], None]] = {}
_MERGE_PLANS_MAX = 512
#: Key sets larger than this, or with longer keys, are not compiled (Celery's events have ~15).
_MERGE_PLAN_KEYS = 64
_MERGE_PLAN_KEY_LEN = 64

#: One computation per kind, into local ``{v}``; ``{k}`` is the key's repr, ``u`` the uuid the
#: task has at that point. A ``_UUID`` local of ``_keep`` keeps the task's own uuid object.
_MERGE_CODE = {
    _PLAIN: "    {v} = f[{k}]",
    _INTERN: "    {v} = f[{k}]\n    if {v}.__class__ is str: {v} = _intern({v})",
    # Shared ints inline (the common case), the rest through _share_number.
    _NUMBER: "    {v} = f[{k}]\n    {v} = (_ints.get({v}) or _share({v})) if {v}.__class__ is int"
    " else _share({v})",
    _UUID: "    {v} = f[{k}]\n    if {v} == u and {v}.__class__ is u.__class__: {v} = _keep\n"
    "    else: u = {v}",
    _ROOT: "    {v} = f[{k}]\n    if {v} == u and {v}.__class__ is u.__class__: {v} = u",
}
#: The store of each kind, after every computation succeeded (stores cannot fail).
_MERGE_STORE = {
    _PLAIN: "    self.{a} = {v}",
    _INTERN: "    self.{a} = {v}",
    _NUMBER: "    self.{a} = {v}",
    _UUID: "    if {v} is not _keep: self.{a} = {v}",
    _ROOT: "    self.{a} = {v}",
}


def _merge_plan(keys: tuple[Any, ...]) -> Callable[[Any, Mapping[str, Any]], None]:
    """Compile the attribute stores of :meth:`Task._merge` for one key tuple.

    The generated function does what ``_merge_slow`` does, key by key in the same order,
    without the per-key dispatch: this is the hottest code of the event path.
    """
    if (
        len(_MERGE_PLANS) >= _MERGE_PLANS_MAX
        or len(keys) > _MERGE_PLAN_KEYS
        or not all(k.__class__ is str and len(k) <= _MERGE_PLAN_KEY_LEN for k in keys)
    ):
        # Odd key sets (custom events with many or long keys) would cost compile time and
        # memory for good; the key-by-key merge serves them.
        return Task._merge_slow
    # Every statement computes into a local first: nothing is stored until the last line, so
    # a value that fails (an odd ``__eq__``) leaves the task as it was.
    lines = ["def merge(self, f):", "    u = self.uuid"]
    stores: list[str] = []
    has_dict = False
    for key in keys:
        kind = _MERGE_KIND.get(key)
        if kind is None:
            if not has_dict:
                # Only now: reading __dict__ creates it, and most tasks need none.
                lines.append("    d = self.__dict__")
                has_dict = True
            stores.append(f"    d[{key!r}] = f[{key!r}]")
        else:  # slot names are identifiers
            lines.append(_MERGE_CODE[kind].format(v=f"v{len(stores)}", k=repr(key)))
            stores.append(_MERGE_STORE[kind].format(a=key, v=f"v{len(stores)}"))
    # An empty key tuple (a late event that contributes nothing) compiles to a no-op.
    lines.extend(stores or ["    pass"])
    namespace: dict[str, Any] = {
        "_intern": _intern,
        "_share": _share_number,
        "_ints": _numbers[int],
        "_keep": _MISSING,
    }
    try:
        # Safe with any input: event keys only ever appear as repr() string literals.
        exec(compile("\n".join(lines), "<aiocelerymon merge plan>", "exec"), namespace)
    except (SyntaxError, MemoryError, RecursionError, ValueError):  # pragma: no cover - total
        return Task._merge_slow
    merge: Callable[[Any, Mapping[str, Any]], None] = namespace["merge"]
    _MERGE_PLANS[keys] = merge
    return merge


# Shared copies of pid / utcoffset values, which repeat in every event of a worker.
_numbers: dict[type, dict[Any, Any]] = {int: {}, float: {}}
_NUMBERS_MAX = 4096


def _share_number(value: Any) -> Any:
    table = _numbers.get(value.__class__)
    if table is None or not value or value != value:
        # Not int/float, zero (0.0 == -0.0 would merge the signs) or NaN.
        return value
    shared = table.get(value)
    if shared is None:
        if len(table) >= _NUMBERS_MAX:
            table.clear()
        table[value] = shared = value
    return shared


class TaskSet(MutableSet["Task"]):
    """A set of tasks, equal when their uuids are (Celery's ``WeakSet``, without weak refs).

    Used for ``tasks_by_type[name]``, ``tasks_by_worker[hostname]`` and ``Task.children``;
    the state removes a task from them when it drops the task. Backed by a dict keyed by
    uuid, which takes about half the memory of a set of the same size.
    """

    __slots__ = ("_tasks",)

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._tasks: dict[Any, Task] = {}
        for task in tasks:
            self.add(task)

    def __contains__(self, task: object) -> bool:
        member = self._tasks.get(getattr(task, "uuid", _MISSING))
        return member is not None and bool(member == task)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: Task) -> None:
        """Add ``task`` unless an equal task (same uuid) is already in."""
        self._tasks.setdefault(task.uuid, task)

    def discard(self, task: Task) -> None:
        """Remove the task equal to ``task``, if any."""
        tasks = self._tasks
        member = tasks.get(task.uuid)
        if member is not None and member == task:
            del tasks[task.uuid]

    def update(self, tasks: Iterable[Task]) -> None:
        """Add every task of ``tasks``."""
        for task in tasks:
            self.add(task)

    def __repr__(self) -> str:
        return f"TaskSet({list(self._tasks.values())!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (list(self._tasks.values()),)


def _own(uuid: Any) -> Any:
    """A copy of a ``str`` uuid that no one else holds (see ``State._task_key``)."""
    if uuid.__class__ is str and len(uuid) > 1:
        return uuid[:1] + uuid[1:]  # concatenating two non-empty strings makes a new one
    return uuid


class _Related:
    """``Task.parent`` / ``Task.root``: the task named by ``<attr>_id`` in the cluster state.

    A non-data descriptor, so a value stored in the instance ``__dict__`` (an event key, or
    ``Task(**task.as_dict())``) wins, as with Celery's cached property. Not cached.
    """

    def __init__(self, id_attr: str) -> None:
        self.id_attr = id_attr

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Related: ...
    @overload
    def __get__(self, obj: Task, owner: type | None = None) -> Any: ...
    def __get__(self, obj: Task | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        task_id = getattr(obj, self.id_attr)
        try:
            # Same expression as Celery: a falsy id is returned as is.
            return task_id and obj.cluster_state.tasks.data[task_id]
        except KeyError:
            return None


class Task:
    """One task: every field of its events, merged in Celery's precedence order."""

    # Fields most tasks never get live on the class (Celery's defaults) and, once an event
    # sets them, in the instance __dict__: this keeps the slot table small.
    sent: Any = None
    failed: Any = None
    retried: Any = None
    revoked: Any = None
    rejected: Any = None
    exception: Any = None
    traceback: Any = None
    exchange: Any = None
    routing_key: Any = None
    client: Any = None

    _fields: ClassVar[tuple[str, ...]] = (
        "uuid",
        "name",
        "state",
        "received",
        "sent",
        "started",
        "rejected",
        "succeeded",
        "failed",
        "retried",
        "revoked",
        "args",
        "kwargs",
        "eta",
        "expires",
        "retries",
        "worker",
        "result",
        "exception",
        "timestamp",
        "runtime",
        "traceback",
        "exchange",
        "routing_key",
        "clock",
        "client",
        "root",
        "root_id",
        "parent",
        "parent_id",
        "children",
    )
    _info_fields: ClassVar[tuple[str, ...]] = (
        "args",
        "kwargs",
        "retries",
        "result",
        "eta",
        "runtime",
        "expires",
        "exception",
        "exchange",
        "routing_key",
        "root_id",
        "parent_id",
    )
    #: A late (logically earlier) event in one of these states only contributes these keys.
    merge_rules: ClassVar[dict[str, tuple[str, ...]]] = {
        RECEIVED: ("name", "args", "kwargs", "parent_id", "root_id", "retries", "eta", "expires"),
    }

    __slots__ = (
        "uuid",
        "state",
        "clock",
        "cluster_state",
        *_TASK_NONE_SLOTS,
        *_TASK_WIRE_SLOTS,
        "_children",  # set of child tasks, created on first use
        "_by_type",  # key of this task in State.tasks_by_type, if indexed
        "_by_worker",  # key of this task in State.tasks_by_worker, if indexed
        "_plink",  # parent id(s) this task was attached or parked under
        "__dict__",
        "__weakref__",
    )

    uuid: Any
    state: Any
    clock: Any
    cluster_state: Any
    name: Any
    received: Any
    started: Any
    succeeded: Any
    args: Any
    kwargs: Any
    eta: Any
    expires: Any
    retries: Any
    worker: Any
    result: Any
    timestamp: Any
    runtime: Any
    root_id: Any
    parent_id: Any
    hostname: Any
    pid: Any
    utcoffset: Any
    type: Any
    local_received: Any
    _children: TaskSet | None
    _by_type: Any
    _by_worker: Any
    _plink: Any

    parent = _Related("parent_id")
    root = _Related("root_id")

    if TYPE_CHECKING:  # every event key becomes an attribute

        def __getattr__(self, name: str) -> Any: ...

    def __init__(
        self,
        uuid: Any = None,
        cluster_state: Any = None,
        children: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.uuid = _own(uuid)
        self.cluster_state = cluster_state
        self.state = PENDING
        self.clock = 0
        self.name = self.received = self.started = self.succeeded = None
        self.args = self.kwargs = self.eta = self.expires = self.retries = None
        self.worker = self.result = self.timestamp = self.runtime = None
        self.root_id = self.parent_id = None
        self._children = self._by_type = self._by_worker = self._plink = None
        if children and cluster_state is not None:
            tasks = cluster_state.tasks
            # .get() refreshes recency, as Celery's lookup through the LRU does.
            found = [tasks.get(task_id) for task_id in children if task_id in tasks]
            if found:
                self._children = TaskSet(found)
        if kwargs:
            self._merge(kwargs)

    def _merge(self, fields: Mapping[str, Any]) -> None:
        """Store every key of ``fields`` as an attribute (Celery: ``__dict__.update``)."""
        keys = tuple(fields)
        merge = _MERGE_PLANS.get(keys)
        if merge is None:
            merge = _merge_plan(keys)
        merge(self, fields)

    def _merge_slow(self, fields: Mapping[str, Any]) -> None:
        """:meth:`_merge` one key at a time (key sets without a compiled plan).

        Every value is computed before the first store, so a failure changes nothing.
        """
        kinds = _MERGE_KIND
        uuid = self.uuid
        slots: list[tuple[str, Any]] = []
        extra: list[tuple[Any, Any]] = []
        for key, value in fields.items():
            kind = kinds.get(key)
            if kind is None:
                extra.append((key, value))
            elif kind == _PLAIN:
                slots.append((key, value))
            elif kind == _INTERN:
                slots.append((key, _intern(value) if value.__class__ is str else value))
            elif kind == _NUMBER:
                slots.append((key, _share_number(value)))
            # uuid / root_id: reuse the task's own uuid object when equal (root tasks have
            # root_id == uuid), rather than keep one more copy per event.
            elif value == uuid and value.__class__ is uuid.__class__:
                if kind == _ROOT:
                    slots.append((key, uuid))
            else:
                slots.append((key, value))
                if kind == _UUID:
                    uuid = value
        for key, value in slots:
            setattr(self, key, value)
        if extra:
            self.__dict__.update(extra)

    def event(
        self,
        type_: str,
        timestamp: Any = None,
        local_received: Any = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Merge one event (subject ``type_``) into this task.

        A built-in subject sets the attribute of the same name to ``timestamp``; any other
        subject is a custom state ``type_.upper()``. An event whose state ranks before the
        current one (it logically happened earlier) leaves the state alone and only merges
        its fields (for ``received``: just the ``merge_rules`` keys); otherwise the state and
        timestamp change and ``fields`` gets ``state``/``timestamp`` keys, as Celery's does.
        """
        if not fields:
            fields = {}  # a new dict, as Celery's ``fields or {}``
        known = _EVENT_STATE.get(type_)
        stamp = known is not None
        state = known if known is not None else type_.upper()
        current = self.state
        if (
            state != RETRY
            and current != RETRY
            and _RANK.get(state, _CUSTOM_RANK) > _RANK.get(current, _CUSTOM_RANK)
        ):
            keep = self.merge_rules.get(state)
            if keep is not None:
                fields = {key: value for key, value in fields.items() if key in keep}
        else:
            # Celery: fields.update(state=..., timestamp=...); same keys, same order.
            fields["state"] = state
            fields["timestamp"] = timestamp
        # Everything that can fail came first: a failing event leaves the task as it was.
        self._merge(fields)
        if stamp and type_ not in fields:  # (a field of the same name wins, as in Celery)
            setattr(self, type_, timestamp)

    @property
    def children(self) -> TaskSet:
        """Child tasks (those whose ``parent_id`` is this task) still held by the state."""
        children = self._children
        if children is None:
            children = self._children = TaskSet()
        return children

    @children.setter
    def children(self, value: TaskSet) -> None:
        self._children = value

    @property
    def id(self) -> Any:
        return self.uuid

    @property
    def origin(self) -> Any:
        """The worker's ``id``, or the client host name for a task seen only as sent."""
        return self.client if self.worker is None else self.worker.id

    @property
    def ready(self) -> bool:
        return self.state in READY_STATES

    def info(
        self, fields: Iterable[str] | None = None, extra: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The non-``None`` values of ``fields`` (default ``_info_fields``) plus ``extra``."""
        keys = list(self._info_fields if fields is None else fields) + list(extra or ())
        info = {}
        for key in keys:
            value = getattr(self, key, None)
            if value is not None:
                info[key] = value
        return info

    def as_dict(self) -> dict[str, Any]:
        """Every field of ``_fields``; ``children`` as ids, ``root``/``parent`` as ids."""
        get = object.__getattribute__
        out: dict[str, Any] = {}
        for key in self._fields:
            if key == "children":
                out[key] = [child.id for child in (self._children or ())]
            elif key == "root":
                out[key] = self.root_id
            elif key == "parent":
                out[key] = self.parent_id
            else:
                out[key] = get(self, key)
        return out

    def __repr__(self) -> str:
        return f"<Task: {self.name}({self.uuid}) {self.state} clock:{self.clock}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, self.__class__):
            return bool(self.uuid == other.uuid)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __reduce__(self) -> tuple[Any, ...]:
        return _depickle_task, (self.__class__, self.as_dict())


def _depickle_task(cls: type[Task], fields: dict[str, Any]) -> Task:
    return cls(**fields)


# ---------------------------------------------------------------------------------------------
# State

_Event = dict[str, Any]
_Task = Task
_Worker = Worker
_Callback = Callable[["State", _Event], object]
_NodeCallback = Callable[[Worker], object]

_SLACK_MIN = 64
_SORT_CHUNK = 4096


def _tt_lt(a_clock: Any, a_ts: Any, a_origin: Any, b_clock: Any, b_ts: Any, b_origin: Any) -> bool:
    """kombu ``timetuple.__lt__``: by clock when both are truthy, ties by origin, else time."""
    if a_clock and b_clock:
        if a_clock == b_clock:
            return bool(a_origin < b_origin)
        return bool(a_clock < b_clock)
    return bool(a_ts < b_ts)


def _first(pair: tuple[Any, ...]) -> Any:
    return pair[0]


class _TimeKey:
    """Sort key with kombu's (not always transitive) timetuple order, for mixed clocks."""

    __slots__ = ("clock", "origin", "ts")

    def __init__(self, clock: Any, ts: Any, origin: Any) -> None:
        self.clock, self.ts, self.origin = clock, ts, origin

    def __lt__(self, other: _TimeKey) -> bool:
        return _tt_lt(self.clock, self.ts, self.origin, other.clock, other.ts, other.origin)


class _TimeHeap:
    """Celery's ``State._taskheap`` (one entry per task event, kombu ``timetuple`` order),
    kept as four columns and sorted lazily instead of one ``insort`` per event.

    Entries are ``clock, timestamp, origin, key``. Clocks and timestamps live in typed arrays
    while they are ``int`` / ``float`` (as Celery sends them), so the heap keeps no number
    objects alive; any other value turns that column into a list. New entries are appended;
    ``settle`` sorts what was appended since the last call (plus the part of the sorted
    prefix it overlaps) and trims to ``cap``. The event path settles after ``_SORT_CHUNK``
    new entries or a quarter of the heap, whichever is more; a read settles the rest.
    """

    __slots__ = (
        "cap",
        "clocks",
        "falsy",
        "keys",
        "origins",
        "settle_at",
        "sorted",
        "times",
        "trim_at",
    )

    def __init__(self, cap: int) -> None:
        self.cap = cap  # entries Celery keeps (0: unbounded)
        # Trim once a quarter over the cap: bounded memory, amortised O(1) per event.
        self.trim_at = cap + max(_SLACK_MIN, cap // 4) if cap else sys.maxsize
        self.clear()

    def clear(self) -> None:
        self.clocks: Any = array("q")
        self.times: Any = array("d")
        self.origins: list[Any] = []
        self.keys: list[Any] = []
        self.sorted = 0  # leading entries known to be in order
        self.falsy = 0  # entries whose clock is falsy (those compare by timestamp)
        self._set_settle_point()

    def __len__(self) -> int:
        return len(self.keys)

    def resize(self, cap: int) -> None:
        """Hold ``cap`` entries from now on (0: unbounded)."""
        self.cap = cap
        self.trim_at = cap + max(_SLACK_MIN, cap // 4) if cap else sys.maxsize
        self._set_settle_point()

    def _set_settle_point(self) -> None:
        # The new entries can land anywhere in the sorted prefix (a worker whose Lamport
        # clock lags), so a settle may touch all of it: settling after a number of events
        # proportional to the size keeps that O(1) amortised per event.
        sorted_ = self.sorted
        self.settle_at = min(self.trim_at, sorted_ + max(_SORT_CHUNK, sorted_ >> 2))

    def push(
        self, clock: Any, timestamp: Any, origin: Any, key: Any, falsy: bool | None = None
    ) -> None:
        """Append one entry (the event path; with ``falsy = not clock`` given, never raises)."""
        if falsy is None:
            falsy = not clock
        clocks = self.clocks
        try:
            if clock.__class__ is not int and clocks.__class__ is not list:
                raise TypeError
            clocks.append(clock)
        except (TypeError, OverflowError):
            self.clocks = clocks = list(clocks)
            clocks.append(clock)
        times = self.times
        if timestamp.__class__ is not float and times.__class__ is not list:
            self.times = times = list(times)
        times.append(timestamp)
        self.origins.append(origin)
        keys = self.keys
        keys.append(key)
        if falsy:
            self.falsy += 1
        if len(keys) >= self.settle_at:
            try:
                self.settle()
            except TypeError:
                # Entries that do not compare: the ordered views raise when read (as Celery's
                # ``event()`` does at insort); the event itself is applied.
                self.settle_at = len(keys) + _SORT_CHUNK

    def _columns(self) -> tuple[Any, Any, list[Any], list[Any]]:
        return self.clocks, self.times, self.origins, self.keys

    def settle(self) -> None:
        """Sort, and trim to what Celery's heap would hold after the same events.

        Celery drops its smallest entry before inserting each new one once it holds ``cap``,
        so it holds the largest ``cap - 1`` of all earlier entries plus the newest one.
        """
        n = len(self.keys)
        if self.sorted >= n:
            self._set_settle_point()
            return
        cap = self.cap
        falsy = self.falsy
        newest = None
        if cap and n > cap:
            newest = [column.pop() for column in self._columns()]
            n -= 1
            if not newest[0]:
                falsy -= 1
        try:
            self._sort(self.sorted, n, falsy)
        except BaseException:
            if newest is not None:  # put the newest entry back: a failed sort changes nothing
                for column, value in zip(self._columns(), newest, strict=True):
                    column.append(value)
            raise
        if newest is not None:
            drop = n - cap + 1
            self.falsy -= sum(1 for clock in self.clocks[:drop] if not clock)
            for column in self._columns():
                del column[:drop]
            n -= drop
            clock, timestamp, origin = newest[0], newest[1], newest[2]
            clocks, times, origins = self.clocks, self.times, self.origins
            lo, hi = 0, n
            try:
                while lo < hi:  # bisect_right: insort puts it after the entries equal to it
                    mid = (lo + hi) >> 1
                    if _tt_lt(clock, timestamp, origin, clocks[mid], times[mid], origins[mid]):
                        hi = mid
                    else:
                        lo = mid + 1
            except TypeError:
                # It does not compare: keep it, unsorted, at the end (the next read raises).
                for column, value in zip(self._columns(), newest, strict=True):
                    column.append(value)
                self.sorted = n
                self._set_settle_point()
                raise
            for column, value in zip(self._columns(), newest, strict=True):
                column.insert(lo, value)
            n += 1
        self.sorted = n
        self._set_settle_point()

    def _sort(self, done: int, n: int, falsy: int) -> None:
        """Sort entries ``[0, n)`` stably; ``[0, done)`` is sorted, ``falsy`` clocks are 0."""
        if done >= n:
            return
        clocks, times, origins = self.clocks, self.times, self.origins
        keys: list[Any]
        if 0 < falsy < n:
            # Truthy and falsy clocks mixed: kombu's order is not transitive; sort by it anyway.
            keys = [
                (_TimeKey(clock, timestamp, origin), i)
                for i, (clock, timestamp, origin) in enumerate(
                    zip(clocks[:n], times[:n], origins[:n], strict=True)
                )
            ]
            keys.sort(key=_first)
            start = 0
        else:
            # Only the part of the sorted prefix that the new tail overlaps needs sorting.
            if not falsy:  # all clocks truthy: by clock, then origin
                tail_min: Any = min(zip(clocks[done:n], origins[done:n], strict=True))
                start = bisect_right(range(done), tail_min, key=lambda i: (clocks[i], origins[i]))
                keys = list(zip(clocks[start:n], origins[start:n], range(start, n), strict=True))
            else:  # no clocks at all: by timestamp
                tail_min = min(times[done:n])
                start = bisect_right(range(done), tail_min, key=times.__getitem__)
                keys = list(zip(times[start:n], range(start, n), strict=True))
            # The position breaks ties: equal entries stay in insertion order, as with insort.
            keys.sort()
        order = [key[-1] - start for key in keys]
        if order == list(range(len(order))):
            return
        for column in self._columns():
            values = column[start:n]
            reordered = [values[i] for i in order]
            if isinstance(column, array):
                column[start:n] = array(column.typecode, reordered)
            else:
                column[start:n] = reordered

    def fill(self, entries: Iterable[tuple[Any, Any, Any, Any]]) -> None:
        """Replace the content with ``entries`` (any order) and sort them."""
        self.clear()
        for entry in entries:
            self.push(*entry)
        self.settle()  # never trims: a State holds fewer tasks than its heap cap


class _TaskIndex(defaultdict[Any, TaskSet]):
    """``tasks_by_type`` / ``tasks_by_worker``: a defaultdict of task sets, also callable.

    ``index[key]`` is the raw set; ``index(key, limit=None, reverse=True)`` yields
    ``(uuid, task)`` in time order (Celery's ``CallableDefaultdict``).
    """

    def __init__(self, fun: Callable[..., Iterator[tuple[Any, Task]]]) -> None:
        super().__init__(TaskSet)
        self.fun = fun

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Task]]:
        return self.fun(*args, **kwargs)

    def __reduce__(self) -> Any:  # pickle as a plain dict; State rebuilds its own
        return dict, (dict(self),)


class State:
    """Cluster state: workers and tasks, updated by :meth:`event` for every event."""

    Worker: ClassVar[type[_Worker]] = _Worker
    Task: ClassVar[type[_Task]] = _Task
    heap_multiplier: ClassVar[int] = 4
    event_count: int = 0
    task_count: int = 0

    def __init__(
        self,
        callback: _Callback | None = None,
        workers: Mapping[Any, _Worker] | None = None,
        tasks: Mapping[Any, _Task] | None = None,
        taskheap: object = None,
        max_workers_in_memory: int = 5000,
        max_tasks_in_memory: int = 10000,
        on_node_join: _NodeCallback | None = None,
        on_node_leave: _NodeCallback | None = None,
        tasks_by_type: Mapping[Any, Iterable[Any]] | None = None,
        tasks_by_worker: Mapping[Any, Iterable[Any]] | None = None,
    ) -> None:
        del taskheap  # Celery rebuilds it from the tasks too
        self.event_callback = callback
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.on_node_join = on_node_join
        self.on_node_leave = on_node_leave
        self.handlers: dict[str, Callable[[str, _Event], Any]] = {}
        self._seen_types: set[Any] = set()
        self.workers: LRUCache[Any, _Worker] = self._adopt(workers, max_workers_in_memory, None)
        self.tasks: LRUCache[Any, _Task] = self._adopt(
            tasks, max_tasks_in_memory, self._forget_task
        )
        #: Children whose parent has not been seen yet, by parent id (bounded like tasks).
        self._tasks_to_resolve: LRUCache[Any, TaskSet] = LRUCache(max_tasks_in_memory)
        self.tasks_by_type = _TaskIndex(self._tasks_by_type)
        self.tasks_by_worker = _TaskIndex(self._tasks_by_worker)
        self._relink_index(self.tasks_by_type, tasks_by_type, "_by_type")
        self._relink_index(self.tasks_by_worker, tasks_by_worker, "_by_worker")
        self._heap = _TimeHeap((max_tasks_in_memory or 0) * self.heap_multiplier)
        #: The heap is sized again at the first event, from the attributes as they are then.
        self._heap_unsized = True
        self.rebuild_taskheap()

    @staticmethod
    def _adopt(
        given: Mapping[Any, Any] | None, limit: int, on_remove: Callable[[Any], object] | None
    ) -> LRUCache[Any, Any]:
        if isinstance(given, LRUCache):
            given._on_remove = on_remove
            return given
        cache: LRUCache[Any, Any] = LRUCache(limit, on_remove)
        if given:
            cache.update(given)
        return cache

    def _relink_index(
        self, index: _TaskIndex, ids: Mapping[Any, Iterable[Any]] | None, attr: str
    ) -> None:
        data = self.tasks.data
        for key, task_ids in (ids or {}).items():
            members = index[key]
            for task_id in task_ids:
                task = data.get(task_id)
                if task is not None:
                    members.add(task)
                    setattr(task, attr, key)

    # -- events --------------------------------------------------------------------------------

    def event(self, event: _Event) -> Any:
        """Apply one event; return ``((obj, created), subject)``, or ``None`` if ignored.

        ``obj`` is the :class:`Task` or :class:`Worker` the event is about. A handler in
        :attr:`handlers` for the event's group (text before the first ``-``) replaces the
        built-in handling and its result is returned as ``(result, subject)``. Task events
        missing ``uuid``/``hostname``/``timestamp``/``local_received``/``clock`` raise
        ``KeyError``; worker events missing ``hostname``/``timestamp``/``local_received``
        are ignored.
        """
        if self._heap_unsized:
            self._size_heap()
        # Counted first, failing or not, as in Celery; past this a failing event leaves the
        # state as it was (the handlers below undo their part).
        self.event_count += 1
        callback = self.event_callback
        if callback:
            callback(self, event)
        group, _, subject = event["type"].partition("-")
        handlers = self.handlers
        if handlers and group in handlers:
            return handlers[group](subject, event), subject
        if group == "task":
            return self._task_event(subject, event)
        if group == "worker":
            return self._worker_event(subject, event)
        return None

    def _size_heap(self) -> None:
        # Celery sizes its time index when the first event arrives, from the instance's
        # max_tasks_in_memory * heap_multiplier as they are then.
        self._heap_unsized = False
        self._heap.resize((self.max_tasks_in_memory or 0) * self.heap_multiplier)

    def _worker_event(self, subject: str, event: _Event) -> Any:
        try:
            hostname = event["hostname"]
            timestamp = event["timestamp"]
            local_received = event["local_received"]
        except KeyError:
            return None
        is_offline = subject == "offline"
        workers = self.workers
        worker = workers.data.get(hostname)
        created = False
        saved = None
        evicted: tuple[Any, _Worker] | None = None
        if worker is None:
            worker = self.Worker(hostname)
            # An unknown worker going offline is reported but not kept.
            if not is_offline:
                evicted = _insert(workers, hostname, worker)
                created = True
        else:
            saved = _save_attrs(worker)
        try:
            worker.event(subject, timestamp, local_received, event)
            on_node_join = self.on_node_join
            if on_node_join and (created or subject == "online"):
                on_node_join(worker)
            on_node_leave = self.on_node_leave
            leave = on_node_leave is not None and is_offline
            if on_node_leave is not None and is_offline:
                on_node_leave(worker)
        except BaseException:
            if created:
                workers.data.pop(hostname, None)
                if evicted is not None:
                    self._put_back(workers, evicted)
            elif saved is not None:
                _restore_attrs(worker, saved)
            raise
        if leave:  # (Celery drops a worker that went offline only with on_node_leave set)
            workers.pop(hostname, None)
        return (worker, created), subject

    def _task_event(self, subject: str, event: _Event) -> Any:
        # Same keys, same order as Celery: the first one missing is the KeyError.
        uuid = event["uuid"]
        hostname = event["hostname"]
        timestamp = event["timestamp"]
        local_received = event["local_received"]
        clock = event["clock"]
        if hostname.__class__ is str:
            hostname = _intern(hostname)
        # Everything that can fail on odd values runs before the first change, or is undone:
        # a failing event leaves the state as it was.
        tasks = self.tasks
        task_data = tasks.data
        task = task_data.get(uuid)
        created = task is None
        if task is None:
            task = self.Task(uuid, cluster_state=self)
        name = event.get("name")
        if name is not None:
            hash(name)  # it becomes an index key
        parent_id = event.get("parent_id")
        if parent_id:
            hash(parent_id)
        falsy_clock = not clock
        worker = None
        worker_created = False
        beats = None
        if subject != "sent":  # (sent by the client, not a worker)
            workers = self.workers
            worker = workers.data.get(hostname)
            if worker is None:
                worker = self.Worker(hostname)
                worker_created = True
            if local_received:
                # Argument order as in Celery: the event timestamp becomes the heartbeat.
                beats = worker._beats(local_received, timestamp)
            origin = worker.id
        else:
            origin = hostname
        evicted = _insert(tasks, task.uuid, task) if created else None
        worker_evicted = None
        if worker_created and worker is not None:
            worker_evicted = _insert(self.workers, hostname, worker)
        before = task.client if worker is None else task.worker
        try:
            if worker is None:
                task.client = hostname
            else:
                task.worker = worker
            task.event(subject, timestamp, local_received, event)
        except BaseException:
            if worker is None:
                task.client = before
            else:
                task.worker = before
            if created:
                task_data.pop(task.uuid, None)
                if evicted is not None:
                    self._put_back(tasks, evicted)
            if worker_created:
                self.workers.data.pop(hostname, None)
                if worker_evicted is not None:
                    self._put_back(self.workers, worker_evicted)
            raise
        # From here on nothing can fail: the values used as keys were hashed above.
        if beats is not None and worker is not None:
            worker.heartbeats[:] = beats
        self._heap.push(clock, timestamp, origin, self._task_key(task), falsy_clock)
        if subject == "received":
            self.task_count += 1
        name = task.name
        if name is not None:
            self._seen_types.add(name)
            if created:
                # Only a task created by an event that names it is indexed (Celery).
                self.tasks_by_type[name].add(task)
                task._by_type = name
                self.tasks_by_worker[hostname].add(task)
                task._by_worker = hostname
        parent_id = task.parent_id
        if parent_id:
            self._link_child(task, parent_id)
        resolve = self._tasks_to_resolve.data
        if resolve:
            parked = resolve.pop(uuid, None)
            if parked:
                task.children.update(parked)
        return (task, created), subject

    def _put_back(self, cache: LRUCache[Any, Any], item: tuple[Any, Any]) -> None:
        """Undo an eviction by :func:`_insert`: the item is the least recent again."""
        key, value = item
        cache.data[key] = value
        cache.data.move_to_end(key, last=False)
        if cache is self.tasks:
            self._reindex(value)

    def _reindex(self, task: _Task) -> None:
        """Undo :meth:`_forget_task` for a task that is held again."""
        if task._by_type is not None:
            self.tasks_by_type[task._by_type].add(task)
        if task._by_worker is not None:
            self.tasks_by_worker[task._by_worker].add(task)
        link = task._plink
        if link is not None:
            task_data = self.tasks.data
            resolve = self._tasks_to_resolve.data
            for parent_id in link if isinstance(link, list) else (link,):
                parent = task_data.get(parent_id)
                if parent is not None:
                    parent.children.add(task)
                else:
                    parked = resolve.get(parent_id)
                    if parked is not None:
                        parked.add(task)

    def _link_child(self, task: _Task, parent_id: Any) -> None:
        parent = self.tasks.data.get(parent_id)
        if parent is not None:
            # Celery reads the parent through the LRU, which refreshes its recency.
            self.tasks.data.move_to_end(parent_id)
            parent.children.add(task)
        else:
            resolve = self._tasks_to_resolve
            parked = resolve.data.get(parent_id)
            if parked is None:
                parked = resolve[parent_id] = TaskSet()
            else:
                resolve.data.move_to_end(parent_id)
            parked.add(task)
        # Remember where the task went, so dropping it later can undo this in O(1).
        # (A list when there are several: ids are hashable, so never lists themselves.)
        link = task._plink
        if link is None:
            task._plink = parent_id
        elif isinstance(link, list):
            if parent_id not in link:
                link.append(parent_id)
        elif link != parent_id:
            task._plink = [link, parent_id]

    def _forget_task(self, task: _Task) -> None:
        """The tasks LRU dropped ``task``: take it out of every index and child set."""
        key = task._by_type
        if key is not None:
            members = dict.get(self.tasks_by_type, key)
            if members is not None:
                members.discard(task)
        key = task._by_worker
        if key is not None:
            members = dict.get(self.tasks_by_worker, key)
            if members is not None:
                members.discard(task)
        link = task._plink
        if link is not None:
            task_data = self.tasks.data
            resolve = self._tasks_to_resolve.data
            for parent_id in link if isinstance(link, list) else (link,):
                parent = task_data.get(parent_id)
                if parent is None and parent_id == task.uuid:
                    parent = task  # its own parent: break the cycle
                if parent is not None and parent._children:
                    parent._children.discard(task)
                parked = resolve.get(parent_id)
                if parked:
                    parked.discard(task)

    def task_event(self, type_: str, fields: Mapping[str, Any]) -> Any:
        """Deprecated in Celery: ``event(dict(fields, type="task-" + type_))[0]``."""
        return self.event(dict(fields, type=f"task-{type_}"))[0]

    def worker_event(self, type_: str, fields: Mapping[str, Any]) -> Any:
        """Deprecated in Celery: ``event(dict(fields, type="worker-" + type_))[0]``."""
        return self.event(dict(fields, type=f"worker-{type_}"))[0]

    # -- time-ordered heap ---------------------------------------------------------------------

    @staticmethod
    def _task_key(task: _Task) -> Any:
        """What a heap entry holds to find its task again.

        Celery holds a weak reference, so entries of a task that has been dropped are skipped.
        Here an entry holds the task's uuid object itself, which costs nothing: each Task owns
        a private copy of its uuid (``_own``) and the tasks mapping is keyed by it, so the
        entry still names its task exactly when ``tasks[uuid].uuid is`` that object. Uuids
        that cannot be copied that way (not ``str``, or one character) use a weak reference.
        """
        uuid = task.uuid
        if uuid.__class__ is str and len(uuid) > 1:
            return uuid
        return weakref.ref(task)

    def _resolve_key(self, key: Any) -> _Task | None:
        """The task a heap entry names, or ``None`` if it is no longer held."""
        data = self.tasks.data
        if key.__class__ is str:
            task = data.get(key)
            return task if task is not None and task.uuid is key else None
        task = key()
        return task if task is not None and data.get(task.uuid) is task else None

    def rebuild_taskheap(self) -> None:
        """Rebuild the heap from the tasks held: one entry each, from their last event."""
        key = self._task_key
        self._heap.fill(
            (task.clock, task.timestamp, task.origin, key(task)) for task in self.tasks.values()
        )

    def _heap_entries(self) -> list[tuple[Any, Any, Any, _Task | None]]:
        """The heap as Celery's ``_taskheap`` would hold it: ``(clock, timestamp, origin,
        task or None)`` (for tests and debugging)."""
        heap = self._heap
        heap.settle()
        resolve = self._resolve_key
        return [
            (clock, timestamp, origin, resolve(key))
            for clock, timestamp, origin, key in zip(
                heap.clocks, heap.times, heap.origins, heap.keys, strict=True
            )
        ]

    # -- queries -------------------------------------------------------------------------------

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[Any, _Task]]:
        """``(uuid, task)`` in LRU order (oldest first), at most ``limit`` if truthy."""
        for index, row in enumerate(self.tasks.items()):
            yield row
            if limit and index + 1 >= limit:
                break

    def tasks_by_time(
        self, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[Any, _Task]]:
        """``(uuid, task)`` by event time, newest first unless ``reverse`` is false.

        ``limit`` counts heap entries (one per event), before duplicates are skipped, as in
        Celery: ``limit=3`` may yield fewer than 3 tasks.
        """
        self._heap.settle()
        keys = self._heap.keys[:]  # a snapshot: later events cannot shift it under the caller
        data = self.tasks.data
        resolve = self._resolve_key
        seen = set()
        for key in islice(reversed(keys) if reverse else keys, 0, limit):
            if key.__class__ is str:  # inlined _resolve_key, the common case
                task = data.get(key)
                if task is None or task.uuid is not key:
                    continue  # the task was dropped (Celery: its weak reference is dead)
            else:
                task = resolve(key)
            if task is not None:
                uuid = task.uuid
                if uuid not in seen:
                    seen.add(uuid)
                    yield uuid, task

    tasks_by_timestamp = tasks_by_time

    def _tasks_by_type(
        self, name: Any, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[Any, _Task]]:
        """``(uuid, task)`` of tasks named ``name``, in time order (``tasks_by_type(name)``)."""
        return islice(
            (
                (uuid, task)
                for uuid, task in self.tasks_by_time(reverse=reverse)
                if task.name == name
            ),
            0,
            limit,
        )

    def _tasks_by_worker(
        self, hostname: Any, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[Any, _Task]]:
        """``(uuid, task)`` of tasks run by ``hostname``, in time order."""
        return islice(
            (
                (uuid, task)
                for uuid, task in self.tasks_by_time(reverse=reverse)
                if task.worker is not None and task.worker.hostname == hostname
            ),
            0,
            limit,
        )

    def task_types(self) -> list[Any]:
        """Every task name seen, sorted."""
        return sorted(self._seen_types)

    def alive_workers(self) -> Iterator[_Worker]:
        """Workers whose last heartbeat has not expired."""
        return (worker for worker in self.workers.values() if worker.alive)

    # -- get or create -------------------------------------------------------------------------

    def get_or_create_worker(self, hostname: Any, **kwargs: Any) -> tuple[_Worker, bool]:
        """``(worker, created)``; ``kwargs`` update an existing worker or build a new one."""
        try:
            worker = self.workers[hostname]
        except KeyError:
            worker = self.workers[hostname] = self.Worker(hostname, **kwargs)
            return worker, True
        if kwargs:
            worker.update(kwargs)
        return worker, False

    def get_or_create_task(self, uuid: Any) -> tuple[_Task, bool]:
        """``(task, created)``; a new task is stored but not indexed (as in Celery)."""
        try:
            return self.tasks[uuid], False
        except KeyError:
            task = self.Task(uuid, cluster_state=self)
            self.tasks[task.uuid] = task
            return task, True

    # -- clearing ------------------------------------------------------------------------------

    def freeze_while(self, fun: Callable[..., _V], *args: Any, **kwargs: Any) -> _V:
        """Return ``fun(*args, **kwargs)``, then :meth:`clear` if ``clear_after=True``."""
        clear_after = kwargs.pop("clear_after", False)
        try:
            return fun(*args, **kwargs)
        finally:
            if clear_after:
                self._clear()

    def clear_tasks(self, ready: bool = True) -> None:
        """Drop finished tasks (all tasks if ``ready`` is false) and the whole heap."""
        self._clear_tasks(ready)

    def _clear_tasks(self, ready: bool = True) -> None:
        if ready:
            data = self.tasks.data
            done = [key for key, task in data.items() if task.state in READY_STATES]
            for key in done:
                self._forget_task(data.pop(key))
        else:
            self.tasks.clear()
        self._heap.clear()

    def clear(self, ready: bool = True) -> None:
        """Drop all workers, the tasks as :meth:`clear_tasks`, and reset the counters."""
        self._clear(ready)

    def _clear(self, ready: bool = True) -> None:
        self.workers.clear()
        self._clear_tasks(ready)
        self.event_count = 0
        self.task_count = 0

    # -- misc ----------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={self.task_count}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (
            self.event_callback,
            self.workers,
            self.tasks,
            None,
            self.max_workers_in_memory,
            self.max_tasks_in_memory,
            self.on_node_join,
            self.on_node_leave,
            {key: [task.id for task in members] for key, members in self.tasks_by_type.items()},
            {key: [task.id for task in members] for key, members in self.tasks_by_worker.items()},
        )
