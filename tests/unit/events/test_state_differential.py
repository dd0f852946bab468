"""The same event streams into ``celery.events.state.State`` and ours: everything must agree.

Streams: every golden capture (real Celery 5.5/5.6/5.7 workers on Redis and RabbitMQ), a long
seeded stream that makes the heap trim and sort in chunks, and hypothesis-generated adversarial
streams (out of order, late ``received``, retries, custom states, duplicates, unknown groups,
missing fields, offline with and without ``on_node_leave``, parents before and after children,
small LRUs, reads that refresh recency, clears).

Celery's ``Task`` sits in a reference cycle (bound methods in ``_serializer_handlers``), so
whether a task the LRU dropped is still in Celery's WeakSets depends on when the garbage
collector runs. ``_CeleryTask`` below only breaks that cycle: Celery then behaves as if each
collection ran at once, which is the behaviour ours implements. Left out, as documented in
``aiocelerymon.events.state``: heaps mixing truthy and falsy clocks, tasks held from outside
after the LRU dropped them, event keys that name Task/Worker internals, and
``tasks_by_worker(hostname)`` with tasks seen only as sent (asserted separately).
"""

from __future__ import annotations

import json
import random
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.events import state as celery_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiocelerymon.events import state as ours_state

GOLDEN = Path(__file__).parents[1] / "wire" / "golden"
NOW = 1_800_000_100.0  # "now" for Worker.alive; generated timestamps are around NOW - 100
BASE = NOW - 100

MISSING = object()
TASK_REQUIRED = ("uuid", "hostname", "timestamp", "local_received", "clock")
WORKER_REQUIRED = ("hostname", "timestamp", "local_received")
# Attributes that are not event data (or that Celery caches on read).
INTERNAL = {"cluster_state", "_serializer_handlers", "children", "root", "parent"}
WIRE = ("hostname", "pid", "utcoffset", "type", "local_received", "clock", "timestamp")


class _CeleryTask(celery_state.Task):  # type: ignore[misc]
    """Celery's Task without its reference cycle: a dropped task dies at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ref = weakref.ref(self)
        self._serializer_handlers = {
            "children": lambda _: [child.id for child in ref().children],
            "root": lambda _: ref().root_id,
            "parent": lambda _: ref().parent_id,
        }


class _CeleryState(celery_state.State):  # type: ignore[misc]
    Task = _CeleryTask


@pytest.fixture(autouse=True)
def _pinned_now(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery's Worker.alive takes time.time as a default argument; ours calls _now().
    monkeypatch.setattr(celery_state.Worker.alive.fget, "__defaults__", (lambda: NOW,))
    monkeypatch.setattr(ours_state, "_now", lambda: NOW)


# -- harness ----------------------------------------------------------------------------------


class Pair:
    """A Celery State and ours, built alike, fed alike, with recording callbacks."""

    def __init__(self, *, callbacks: bool = True, **kwargs: Any) -> None:
        self.log: dict[str, list[Any]] = {"celery": [], "ours": []}
        self.celery = _CeleryState(**self._callbacks("celery", callbacks), **kwargs)
        self.ours = ours_state.State(**self._callbacks("ours", callbacks), **kwargs)

    def _callbacks(self, side: str, on: bool) -> dict[str, Any]:
        if not on:
            return {}
        log = self.log[side]
        return {
            "callback": lambda state, event: log.append(("event", event.get("type"))),
            "on_node_join": lambda worker: log.append(("join", worker.hostname)),
            "on_node_leave": lambda worker: log.append(("leave", worker.hostname)),
        }

    def event(self, event: dict[str, Any]) -> None:
        """Feed a copy of ``event`` to each (both mutate it); compare the results."""
        results = [_apply(state.event, dict(event)) for state in (self.celery, self.ours)]
        assert results[0] == results[1], event

    def read(self, uuid: Any) -> None:
        """A user read through the LRU (refreshes recency), on both."""
        assert (uuid in self.celery.tasks) == (uuid in self.ours.tasks)
        if uuid in self.celery.tasks:
            assert self.celery.tasks[uuid].uuid == self.ours.tasks[uuid].uuid

    def compare(self) -> None:
        compare_states(self.celery, self.ours)
        assert self.log["celery"] == self.log["ours"]


def _apply(fun: Callable[[dict[str, Any]], Any], event: dict[str, Any]) -> Any:
    """``fun(event)`` summarised without keeping the objects alive (see module docstring)."""
    try:
        result = fun(event)
    except KeyError as exc:
        return ("KeyError", exc.args)
    if result is None:
        return None
    (obj, created), subject = result
    if isinstance(obj, celery_state.Task | ours_state.Task):
        return ("task", obj.uuid, created, subject)
    if isinstance(obj, celery_state.Worker | ours_state.Worker):
        return ("worker", obj.hostname, created, subject)
    return ("other", obj, created, subject)


def _plain(value: Any) -> Any:
    if isinstance(value, celery_state.Worker | ours_state.Worker):
        return ("worker", value.hostname)
    return value


def task_view(task: Any, keys: set[str]) -> dict[str, Any]:
    """``as_dict()`` and the attributes ``keys`` (``MISSING`` if absent), comparably."""
    view = task.as_dict()
    # Celery's as_dict() fills its cached root/parent properties; forget them again.
    vars(task).pop("root", None)
    vars(task).pop("parent", None)
    view["children"] = sorted(view["children"])
    view["worker"] = _plain(view["worker"])
    view["attrs"] = {key: _plain(getattr(task, key, MISSING)) for key in sorted(keys)}
    view["repr"] = repr(task)
    view["info"] = task.info()
    view["misc"] = (task.id, task.ready, task.origin, task == task, hash(task))
    return view


def worker_view(worker: Any, keys: set[str]) -> dict[str, Any]:
    view = {key: getattr(worker, key) for key in worker._fields}
    view["attrs"] = {key: getattr(worker, key, MISSING) for key in sorted(keys)}
    view["live"] = (worker.alive, worker.status_string, worker.id, repr(worker))
    if worker.heartbeats:
        view["expires"] = worker.heartbeat_expires
    return view


def _uuids(pairs: Iterator[tuple[Any, Any]]) -> list[Any]:
    return [uuid for uuid, _ in pairs]


def compare_states(celery: Any, ours: Any) -> None:
    assert (celery.event_count, celery.task_count) == (ours.event_count, ours.task_count)
    assert repr(celery) == repr(ours)
    # LRU order matters: it decides what is dropped next.
    assert list(celery.tasks.keys()) == list(ours.tasks.keys())
    assert list(celery.workers.keys()) == list(ours.workers.keys())
    for uuid, task in celery.tasks.data.items():
        other = ours.tasks.data[uuid]
        # Every event key either one stored (ours keeps most in slots, not in vars()).
        keys = (set(vars(task)) | set(vars(other)) | set(WIRE)) - INTERNAL
        assert task_view(task, keys) == task_view(other, keys), uuid
    for hostname, worker in celery.workers.data.items():
        other = ours.workers.data[hostname]
        keys = set(vars(worker)) | set(vars(other))
        assert worker_view(worker, keys) == worker_view(other, keys), hostname
    assert [w.hostname for w in celery.alive_workers()] == [
        w.hostname for w in ours.alive_workers()
    ]
    assert celery.task_types() == ours.task_types()
    # The heap itself: same entries (dead ones included), same order.
    celery_heap = [
        (e[0], e[1], e[2], None if e[3]() is None else e[3]().uuid) for e in celery._taskheap
    ]
    ours_heap = [
        (c, t, o, None if task is None else task.uuid) for c, t, o, task in ours._heap_entries()
    ]
    assert celery_heap == ours_heap
    for limit in (None, 1, 3, 7):
        for reverse in (True, False):
            assert _uuids(celery.tasks_by_time(limit=limit, reverse=reverse)) == _uuids(
                ours.tasks_by_time(limit=limit, reverse=reverse)
            )
    assert _uuids(celery.itertasks(2)) == _uuids(ours.itertasks(2))
    # Raw indexes: same keys, same members.
    for index in ("tasks_by_type", "tasks_by_worker"):
        raw_celery, raw_ours = getattr(celery, index), getattr(ours, index)
        assert set(raw_celery) == set(raw_ours), index
        for key in raw_celery:
            assert {t.uuid for t in raw_celery[key]} == {t.uuid for t in raw_ours[key]}, key
    for name in [*celery.task_types(), "never.seen"]:
        for limit in (None, 2):
            assert _uuids(celery.tasks_by_type(name, limit=limit)) == _uuids(
                ours.tasks_by_type(name, limit=limit)
            )
            assert _uuids(celery.tasks_by_type(name, reverse=False)) == _uuids(
                ours.tasks_by_type(name, reverse=False)
            )
    # tasks_by_worker(hostname): Celery raises on tasks without a worker (documented).
    workerless = any(t.worker is None for _, t in celery.tasks_by_time())
    for hostname in {t.hostname for t in celery.tasks.data.values()} | {"nobody"}:
        if workerless:
            with pytest.raises(AttributeError):
                list(celery.tasks_by_worker(hostname))
        else:
            assert _uuids(celery.tasks_by_worker(hostname)) == _uuids(
                ours.tasks_by_worker(hostname)
            )
    # Children waiting for their parent.
    assert {
        parent: {t.uuid for t in members} for parent, members in celery._tasks_to_resolve.items()
    } == {parent: {t.uuid for t in members} for parent, members in ours._tasks_to_resolve.items()}


# -- golden captures --------------------------------------------------------------------------

GOLDEN_ORDER = [
    "worker-online",
    "worker-heartbeat",
    "task-sent",
    "task-multi",
    "task-multi-2",
    "task-multi-3",
    "worker-heartbeat-requested",
    "worker-offline",
]


def golden_events(directory: Path) -> list[dict[str, Any]]:
    """The capture's events in scenario order, ``local_received`` added as a receiver does."""
    events = []
    for name in GOLDEN_ORDER:
        doc = json.loads((directory / f"{name}.json").read_text())
        body = json.loads(doc["body_text"] if "body_text" in doc else doc["body"])
        for event in body if isinstance(body, list) else [body]:
            event["local_received"] = event["timestamp"] + 0.004
            events.append(event)
    return events


GOLDEN_DIRS = sorted(GOLDEN.glob("*/celery-*"))


def test_golden_captures_exist() -> None:
    assert {d.parent.name for d in GOLDEN_DIRS} == {"amqp", "redis"}
    assert len(GOLDEN_DIRS) >= 6


@pytest.mark.parametrize("directory", GOLDEN_DIRS, ids=lambda d: f"{d.parent.name}-{d.name}")
@pytest.mark.parametrize("leave", [True, False], ids=["on_node_leave", "no_leave_callback"])
def test_golden_stream(directory: Path, leave: bool) -> None:
    events = golden_events(directory)
    assert [e["type"] for e in events][:3] == ["worker-online", "worker-heartbeat", "task-sent"]
    pair = Pair(callbacks=leave)
    now = events[1]["timestamp"] + 1  # alive right after the heartbeat...
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(celery_state.Worker.alive.fget, "__defaults__", (lambda: now,))
        patch.setattr(ours_state, "_now", lambda: now)
        for event in events[:2]:
            pair.event(event)
        pair.compare()
        assert [w.hostname for w in pair.ours.alive_workers()] == [events[0]["hostname"]]
    for event in events[2:]:
        pair.event(event)
        pair.compare()
    task = next(iter(pair.ours.tasks.values()))
    assert task.state == "SUCCESS" and task.client and task.worker is not None
    assert (events[-1]["hostname"] in pair.ours.workers) is not leave


def test_golden_all_versions_in_one_state() -> None:
    """Every capture, both brokers, one after the other, with a small LRU."""
    pair = Pair(max_tasks_in_memory=3, max_workers_in_memory=2)
    for directory in GOLDEN_DIRS:
        for event in golden_events(directory):
            pair.event(event)
    pair.compare()
    assert len(pair.ours.tasks) == 3


# -- a long seeded stream ---------------------------------------------------------------------


def _long_stream(seed: int, n_tasks: int, lag: int) -> Iterator[dict[str, Any]]:
    """received/started/succeeded per task from 4 workers, clocks interleaved out of order.

    With ``lag`` > 1, worker 3's clock runs ``lag`` times slower (no gossip to sync it), so
    its entries land far back in the already sorted heap.
    """
    rng = random.Random(seed)
    clocks = [0] * 4
    pending = []
    for i in range(n_tasks):
        worker = rng.randrange(4)
        for step, kind in enumerate(("received", "started", "succeeded")):
            pending.append((i + 4 * step + rng.randint(0, 5), kind, f"task-{i:05d}", worker))
    pending.sort()
    for n, (_, kind, uuid, worker) in enumerate(pending):
        clocks[worker] = max(clocks) + 1 if rng.random() < 0.1 else clocks[worker] + 1
        event = {
            "hostname": f"celery@w{worker}",
            "pid": 100 + worker,
            "clock": clocks[worker] // lag + 1 if worker == 3 else clocks[worker],
            "uuid": uuid,
            "timestamp": BASE + n * 0.001,
            "local_received": BASE + n * 0.001 + 0.002,
            "type": f"task-{kind}",
        }
        if kind == "received":
            event.update(name=f"tasks.t{rng.randrange(3)}", args="[]", kwargs="{}")
        yield event


@pytest.mark.parametrize(
    ("max_tasks", "n_tasks", "lag"),
    [
        (25, 700, 1),  # heavy trimming
        (2000, 2500, 1),  # chunked sorting, no trimming
        (2000, 2500, 40),  # chunked sorting, one worker's clock far behind
        (300, 2000, 40),  # trimming with the lagging clock
    ],
)
def test_long_stream(max_tasks: int, n_tasks: int, lag: int) -> None:
    pair = Pair(max_tasks_in_memory=max_tasks)
    for n, event in enumerate(_long_stream(max_tasks, n_tasks, lag)):
        pair.event(event)
        if n % 997 == 0:
            pair.compare()
    pair.compare()


# -- generated adversarial streams --------------------------------------------------------------

UUIDS = ["t0", "t1", "t2", "t3", "t4", "t5", "x"]  # "x": a one-character uuid
HOSTS = ["w0@h", "w1@h", "w2@h", "client@h"]
NAMES = ["tasks.a", "tasks.b", None]
TASK_SUBJECTS = [
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
    "progress",
    "cancelled",
]


@st.composite
def task_events(draw: st.DrawFn, clock_mode: str) -> dict[str, Any]:
    subject = draw(st.sampled_from(TASK_SUBJECTS))
    timestamp = BASE + draw(st.floats(0, 100, allow_nan=False))
    event: dict[str, Any] = {
        "hostname": draw(st.sampled_from(HOSTS)),
        "utcoffset": draw(st.sampled_from([0, 0.0, -2])),
        "pid": draw(st.sampled_from([11, 12])),
        "clock": draw(st.integers(1, 40))
        if clock_mode == "clock"
        else draw(st.sampled_from([0, None])),
        "uuid": draw(st.sampled_from(UUIDS)),
        "timestamp": timestamp,
        "type": f"task-{subject}",
        # Mostly on time, sometimes late by more than the drift limit, sometimes unset.
        "local_received": draw(
            st.sampled_from([timestamp + 0.01, timestamp + 0.5, timestamp + 30, 0])
        ),
    }
    if subject in ("sent", "received") or draw(st.booleans()):
        if draw(st.booleans()):
            event["name"] = draw(st.sampled_from(NAMES))
        event.update(args="[1]", kwargs="{}", retries=draw(st.integers(0, 2)), eta=None)
        if draw(st.booleans()):
            event["parent_id"] = draw(st.sampled_from([*UUIDS, None]))
        if draw(st.booleans()):
            event["root_id"] = draw(st.sampled_from(UUIDS))
    if subject == "succeeded":
        event.update(result=draw(st.sampled_from(["5", "None"])), runtime=0.25)
    if subject in ("failed", "retried"):
        event.update(exception="KeyError('k')", traceback="Traceback...")
    if subject == "progress":
        event["done"] = draw(st.integers(0, 100))
    if subject == "sent":
        event.update(queue="celery", exchange="", routing_key="celery")
    return event


@st.composite
def worker_events(draw: st.DrawFn) -> dict[str, Any]:
    subject = draw(st.sampled_from(["online", "heartbeat", "heartbeat", "offline"]))
    timestamp = BASE + draw(st.floats(0, 100, allow_nan=False))
    event: dict[str, Any] = {
        "hostname": draw(st.sampled_from(HOSTS)),
        "utcoffset": 0,
        "pid": draw(st.sampled_from([11, 12])),
        "clock": draw(st.integers(1, 40)),
        "freq": draw(st.sampled_from([2.0, 5, 60])),
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "timestamp": timestamp,
        "type": f"worker-{subject}",
        "local_received": draw(st.sampled_from([timestamp + 0.01, timestamp + 20, 0])),
    }
    if subject != "offline" or draw(st.booleans()):
        event.update(active=draw(st.integers(0, 3)), processed=7, loadavg=[0.1, 0.2, 0.3])
    return event


@st.composite
def operations(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """State options and a list of operations: events, duplicates, reads, clears."""
    options = {
        "max_tasks_in_memory": draw(st.sampled_from([1, 2, 3, 5, 1000])),
        "max_workers_in_memory": draw(st.sampled_from([1, 2, 5000])),
        "callbacks": draw(st.booleans()),
    }
    clock_mode = draw(st.sampled_from(["clock", "clock", "time"]))
    ops: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(
            st.sampled_from(["task"] * 8 + ["worker"] * 2 + ["dup", "odd", "drop", "read", "clear"])
        )
        if kind == "task":
            ops.append(("event", draw(task_events(clock_mode))))
        elif kind == "worker":
            ops.append(("event", draw(worker_events())))
        elif kind == "dup" and ops and ops[-1][0] == "event":
            ops.append(ops[draw(st.integers(0, len(ops) - 1))])
        elif kind == "odd":  # unknown groups and custom subjects
            event = draw(task_events(clock_mode))
            event["type"] = draw(st.sampled_from(["foo-bar", "task", "worker", "heartbeat"]))
            ops.append(("event", event))
        elif kind == "drop":  # a required field missing
            event = draw(st.one_of(task_events(clock_mode), worker_events()))
            required = TASK_REQUIRED if event["type"].startswith("task") else WORKER_REQUIRED
            del event[draw(st.sampled_from(required))]
            ops.append(("event", event))
        elif kind == "read":
            ops.append(("read", draw(st.sampled_from(UUIDS))))
        elif kind == "clear":
            ops.append((draw(st.sampled_from(["clear", "clear_tasks"])), draw(st.booleans())))
    return options, ops


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(operations())
def test_generated_streams(case: tuple[dict[str, Any], list[tuple[str, Any]]]) -> None:
    options, ops = case
    pair = Pair(**options)
    for n, (kind, arg) in enumerate(ops):
        if kind == "event":
            pair.event(arg)
        elif kind == "read":
            pair.read(arg)
        else:
            for state in (pair.celery, pair.ours):
                getattr(state, kind)(ready=arg)
        if n % 20 == 19:
            pair.compare()
    pair.compare()


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(task_events("clock"), min_size=1, max_size=30))
def test_custom_handlers_win(events: list[dict[str, Any]]) -> None:
    """A handler registered for a group replaces the built-in handling in both."""
    pair = Pair(max_tasks_in_memory=4)
    for state in (pair.celery, pair.ours):
        state.handlers["task"] = lambda subject, event: (event["uuid"], subject)
    for event in events:
        results = [state.event(dict(event)) for state in (pair.celery, pair.ours)]
        assert results[0] == results[1]
    pair.compare()
    assert len(pair.ours.tasks) == 0
