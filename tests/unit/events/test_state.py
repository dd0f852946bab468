"""Behaviour of aiocelerymon.events.state: Celery's State semantics, rule by rule.

Each expectation here is what ``celery.events.state`` does (test_state_differential.py checks
the same streams against Celery itself); the few documented differences are tested as such.
"""

from __future__ import annotations

import logging
import pickle
from decimal import Decimal
from typing import Any

import pytest

from aiocelerymon.events import state as state_mod
from aiocelerymon.events.state import State, Task, TaskSet, Worker, heartbeat_expires

T0 = 1_700_000_000.0


def task_ev(subject: str, uuid: str = "u1", **fields: Any) -> dict[str, Any]:
    """A task event as the receiver hands it over (``local_received`` added)."""
    event: dict[str, Any] = {
        "hostname": "w1@h",
        "utcoffset": 0,
        "pid": 7,
        "clock": 1,
        "uuid": uuid,
        "timestamp": T0,
        "type": f"task-{subject}",
    }
    event.update(fields)
    event.setdefault("local_received", event["timestamp"] + 0.1)
    return event


def worker_ev(subject: str, hostname: str = "w1@h", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "hostname": hostname,
        "utcoffset": 0,
        "pid": 7,
        "clock": 1,
        "freq": 2.0,
        "active": 0,
        "processed": 0,
        "loadavg": [0.1, 0.2, 0.3],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "timestamp": T0,
        "type": f"worker-{subject}",
    }
    event.update(fields)
    event.setdefault("local_received", event["timestamp"] + 0.1)
    return event


def received(uuid: str = "u1", name: str | None = "tasks.add", **fields: Any) -> dict[str, Any]:
    return task_ev("received", uuid, name=name, args="[2, 3]", kwargs="{}", **fields)


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Pin the clock Worker.alive uses; assign ``now[0]`` to move it."""
    clock = [T0]
    monkeypatch.setattr(state_mod, "_now", lambda: clock[0])
    return clock


@pytest.fixture(autouse=True)
def _fresh_drift_memo() -> None:
    state_mod._drift_warned.clear()


def uuids(pairs: Any) -> list[str]:
    return [uuid for uuid, _ in pairs]


# -- dispatch -----------------------------------------------------------------------------------


def test_event_returns_object_created_and_subject() -> None:
    state = State()
    (task, created), subject = state.event(received())
    assert (created, subject, task.uuid, task.state) == (True, "received", "u1", "RECEIVED")
    (again, created), subject = state.event(task_ev("started"))
    assert (again is task, created, subject) == (True, False, "started")
    (worker, created), subject = state.event(worker_ev("online", hostname="w9@h"))
    assert (worker.hostname, created, subject) == ("w9@h", True, "online")


def test_group_is_text_before_first_dash_and_subject_the_rest() -> None:
    state = State()
    (task, _), subject = state.event(task_ev("foo-bar"))
    assert subject == "foo-bar"
    assert task.state == "FOO-BAR"  # custom state: subject.upper()


def test_unknown_groups_count_but_do_nothing() -> None:
    state = State()
    assert state.event({"type": "foo-bar"}) is None
    assert state.event({"type": "taskx-received"}) is None
    assert state.event_count == 2
    assert not state.tasks and not state.workers


def test_event_without_type_raises_after_counting() -> None:
    seen: list[Any] = []
    state = State(callback=lambda s, e: seen.append(e))
    with pytest.raises(KeyError):
        state.event({"uuid": "u1"})
    assert state.event_count == 1 and len(seen) == 1


def test_handlers_per_group_win_over_builtin() -> None:
    state = State()
    calls: list[tuple[str, dict[str, Any]]] = []
    state.handlers["task"] = lambda subject, event: calls.append((subject, event)) or "handled"
    assert state.event(received()) == ("handled", "received")
    assert calls[0][0] == "received"
    assert not state.tasks and state.task_count == 0 and state.event_count == 1
    state.handlers["custom"] = lambda subject, event: subject.upper()
    assert state.event({"type": "custom-thing-x"}) == ("THING-X", "thing-x")


def test_event_callback_is_called_first() -> None:
    order: list[str] = []
    state = State(callback=lambda s, e: order.append(f"cb:{s.event_count}:{len(s.tasks)}"))
    state.event(received())
    assert order == ["cb:1:0"]  # event_count already incremented, task not yet created
    with pytest.raises(KeyError):
        state.event({"type": "task-received"})
    assert order[-1] == "cb:2:1"


def test_event_count_and_task_count() -> None:
    state = State()
    state.event(received())
    state.event(received())  # duplicates count
    state.event(task_ev("started"))
    state.event(worker_ev("heartbeat"))
    state.event({"type": "worker-heartbeat"})  # ignored, still counted
    assert (state.event_count, state.task_count) == (5, 2)
    assert repr(state) == "<State: events=5 tasks=2>"


@pytest.mark.parametrize("missing", ["uuid", "hostname", "timestamp", "local_received", "clock"])
def test_task_event_missing_required_field_raises_keyerror(missing: str) -> None:
    state = State()
    event = received()
    del event[missing]
    with pytest.raises(KeyError) as info:
        state.event(event)
    assert info.value.args == (missing,)
    assert not state.tasks


def test_task_keyerror_names_first_missing_in_celery_order() -> None:
    event = {"type": "task-received", "timestamp": T0}
    with pytest.raises(KeyError) as info:
        State().event(event)
    assert info.value.args == ("uuid",)
    event["uuid"] = "u1"
    with pytest.raises(KeyError) as info:
        State().event(event)
    assert info.value.args == ("hostname",)


@pytest.mark.parametrize("missing", ["hostname", "timestamp", "local_received"])
def test_worker_event_missing_required_field_is_ignored(missing: str) -> None:
    joined: list[Worker] = []
    state = State(on_node_join=joined.append)
    event = worker_ev("online")
    del event[missing]
    assert state.event(event) is None
    assert not state.workers and not joined and state.event_count == 1


def test_event_dict_gets_state_and_timestamp_like_celery() -> None:
    event = task_ev("started")
    State().event(event)
    assert event["state"] == "STARTED"
    late = received()
    state = State()
    state.event(task_ev("succeeded"))
    state.event(late)
    assert "state" not in late  # a late event leaves the dict alone


# -- workers ------------------------------------------------------------------------------------


def test_worker_fields_are_copied(now: list[float]) -> None:
    state = State()
    (worker, _), _ = state.event(worker_ev("heartbeat", pid=42, clock=9, active=3, custom="x"))
    assert (worker.pid, worker.clock, worker.active, worker.freq) == (42, 9, 3, 2.0)
    assert worker.loadavg == [0.1, 0.2, 0.3] and worker.sw_ver == "5.7.0"
    assert (worker.type, worker.timestamp, worker.utcoffset) == ("worker-heartbeat", T0, 0)
    assert worker.local_received == T0 + 0.1
    assert worker.custom == "x"
    assert worker.id == "w1@h.42"


def test_on_node_join_on_create_and_on_online() -> None:
    joined: list[str] = []
    state = State(on_node_join=lambda w: joined.append(w.hostname))
    state.event(worker_ev("heartbeat"))  # created: join
    state.event(worker_ev("heartbeat"))  # known: no join
    state.event(worker_ev("online"))  # online always joins
    assert joined == ["w1@h", "w1@h"]


def test_offline_with_on_node_leave_removes_worker() -> None:
    left: list[Worker] = []
    state = State(on_node_leave=left.append)
    state.event(worker_ev("online"))
    (worker, created), _ = state.event(worker_ev("offline", timestamp=T0 + 5))
    assert left == [worker] and created is False
    assert "w1@h" not in state.workers
    assert worker.heartbeats == [] and worker.timestamp == T0 + 5


def test_offline_without_on_node_leave_keeps_worker_offline(now: list[float]) -> None:
    state = State()
    state.event(worker_ev("online"))
    assert state.workers["w1@h"].alive
    state.event(worker_ev("offline"))
    worker = state.workers["w1@h"]
    assert worker.heartbeats == [] and not worker.alive
    assert worker.status_string == "OFFLINE" and list(state.alive_workers()) == []


def test_offline_of_unknown_worker_is_not_stored() -> None:
    joined: list[Worker] = []
    left: list[Worker] = []
    state = State(on_node_join=joined.append, on_node_leave=left.append)
    (worker, created), subject = state.event(worker_ev("offline", hostname="ghost@h"))
    assert (created, subject, worker.hostname) == (False, "offline", "ghost@h")
    assert "ghost@h" not in state.workers and joined == [] and left == [worker]
    state = State()
    state.event(worker_ev("offline", hostname="ghost@h"))
    assert "ghost@h" not in state.workers


def test_heartbeats_keep_four_newest_sorted() -> None:
    state = State()
    for received_at in (T0 + 3, T0 + 1, T0 + 2, T0 + 5, T0 + 4, T0 + 6):
        state.event(worker_ev("heartbeat", timestamp=received_at, local_received=received_at))
    # At four, the first (oldest position) entry goes before each insert.
    assert state.workers["w1@h"].heartbeats == [T0 + 3, T0 + 4, T0 + 5, T0 + 6]


def test_heartbeat_records_local_received_for_worker_events() -> None:
    state = State()
    state.event(worker_ev("heartbeat", timestamp=T0, local_received=T0 + 7))
    assert state.workers["w1@h"].heartbeats == [T0 + 7]


def test_heartbeat_needs_truthy_timestamp_and_local_received() -> None:
    state = State()
    state.event(worker_ev("heartbeat", local_received=0))
    state.event(worker_ev("heartbeat", timestamp=0, local_received=T0))
    assert state.workers["w1@h"].heartbeats == []


def test_task_events_feed_heartbeats_with_the_event_timestamp() -> None:
    # Celery calls Worker.event(None, local_received, timestamp): arguments swapped.
    state = State()
    state.event(received(timestamp=T0, local_received=T0 + 9))
    worker = state.workers["w1@h"]
    assert worker.heartbeats == [T0]
    assert worker.freq == 60 and worker.pid is None  # created by a task event: defaults
    state.event(task_ev("started", timestamp=T0 + 1, local_received=0))
    assert worker.heartbeats == [T0]  # no local_received: no heartbeat


def test_drift_warning_once_per_host(caplog: pytest.LogCaptureFixture) -> None:
    state = State()
    with caplog.at_level(logging.WARNING, logger="aiocelerymon.events.state"):
        state.event(worker_ev("heartbeat", local_received=T0 + 16.9))  # int diff 16: quiet
        assert caplog.records == []
        state.event(worker_ev("heartbeat", local_received=T0 + 20))
        state.event(worker_ev("heartbeat", local_received=T0 + 30))
        state.event(worker_ev("heartbeat", hostname="w2@h", local_received=T0 - 30))
    assert [r.args[0] for r in caplog.records] == ["w1@h", "w2@h"]  # type: ignore[index]
    assert caplog.records[0].args[1] == 20  # type: ignore[index]


def test_alive_window_is_twice_freq(now: list[float]) -> None:
    state = State()
    state.event(worker_ev("heartbeat", freq=2.0, local_received=T0))
    worker = state.workers["w1@h"]
    assert worker.heartbeat_expires == T0 + 4
    now[0] = T0 + 3.99
    assert worker.alive and worker.status_string == "ONLINE"
    assert [w.hostname for w in state.alive_workers()] == ["w1@h"]
    now[0] = T0 + 4
    assert not worker.alive and worker.status_string == "OFFLINE"
    assert list(state.alive_workers()) == []


def test_alive_default_freq_60_for_workers_seen_through_tasks(now: list[float]) -> None:
    state = State()
    state.event(received(timestamp=T0))
    now[0] = T0 + 119
    assert state.workers["w1@h"].alive
    now[0] = T0 + 120
    assert not state.workers["w1@h"].alive


def test_worker_without_heartbeats_is_not_alive(now: list[float]) -> None:
    assert not Worker("w@h").alive


def test_heartbeat_expires_accepts_decimal() -> None:
    assert heartbeat_expires(Decimal("10.5"), Decimal(2)) == 14.5
    assert heartbeat_expires(10, 60) == 130
    assert heartbeat_expires(10, 1, expire_window=100) == 11


def test_worker_repr_id_eq_hash(now: list[float]) -> None:
    worker = Worker("w1@h", pid=5, clock=3)
    assert repr(worker) == "<Worker: w1@h (OFFLINE clock:3)"  # no closing bracket, as Celery
    assert worker.id == "w1@h.5"
    worker.pid = 6
    assert worker.id == "w1@h.6"
    assert worker == Worker("w1@h") and hash(worker) == hash("w1@h")
    assert worker != Worker("w2@h")


def test_worker_update_and_reduce() -> None:
    worker = Worker("w1@h", freq=5)
    worker.update({"pid": 1}, active=2)
    assert (worker.pid, worker.active, worker.freq) == (1, 2, 5)
    copy = pickle.loads(pickle.dumps(worker))
    assert (copy.hostname, copy.pid, copy.freq, copy.active) == ("w1@h", 1, 5, 2)


def test_get_or_create_worker() -> None:
    state = State()
    worker, created = state.get_or_create_worker("w1@h", pid=3)
    assert created and worker.pid == 3 and state.workers["w1@h"] is worker
    again, created = state.get_or_create_worker("w1@h", pid=4)
    assert again is worker and not created and worker.pid == 4


# -- tasks: fields and states -------------------------------------------------------------------


def test_every_event_key_becomes_an_attribute() -> None:
    state = State()
    state.event(task_ev("sent", hostname="client@h", queue="q1", exchange="", routing_key="rk"))
    (task, _), _ = state.event(received(root_id="u1", parent_id=None, retries=0, eta=None))
    state.event(task_ev("progress", done=40, extra={"a": 1}))
    state.event(task_ev("succeeded", result="5", runtime=0.5))
    assert (task.name, task.args, task.kwargs, task.result, task.runtime) == (
        "tasks.add",
        "[2, 3]",
        "{}",
        "5",
        0.5,
    )
    assert (task.queue, task.routing_key, task.exchange) == ("q1", "rk", "")
    assert (task.done, task.extra) == (40, {"a": 1})
    assert (task.hostname, task.pid, task.utcoffset, task.type) == ("w1@h", 7, 0, "task-succeeded")
    assert (task.root_id, task.parent_id, task.retries, task.client) == ("u1", None, 0, "client@h")
    assert task.local_received == T0 + 0.1 and task.clock == 1


def test_new_task_defaults_and_unset_wire_fields() -> None:
    task = Task("u1")
    assert (task.state, task.clock, task.name, task.worker, task.sent, task.exception) == (
        "PENDING",
        0,
        None,
        None,
        None,
        None,
    )
    for name in ("hostname", "pid", "utcoffset", "type", "local_received", "nope"):
        with pytest.raises(AttributeError):
            getattr(task, name)


@pytest.mark.parametrize(
    ("subject", "state_name"),
    [
        ("sent", "PENDING"),
        ("received", "RECEIVED"),
        ("started", "STARTED"),
        ("failed", "FAILURE"),
        ("retried", "RETRY"),
        ("succeeded", "SUCCESS"),
        ("revoked", "REVOKED"),
        ("rejected", "REJECTED"),
    ],
)
def test_builtin_subject_sets_state_and_timestamp_attribute(subject: str, state_name: str) -> None:
    state = State()
    (task, _), _ = state.event(task_ev(subject, timestamp=T0 + 3))
    assert task.state == state_name
    assert getattr(task, subject) == T0 + 3 and task.timestamp == T0 + 3


def test_custom_state_from_subject_without_timestamp_attribute() -> None:
    state = State()
    state.event(task_ev("started"))
    (task, _), _ = state.event(task_ev("progress", timestamp=T0 + 1))
    assert task.state == "PROGRESS" and task.timestamp == T0 + 1
    with pytest.raises(AttributeError):
        task.progress  # noqa: B018
    state.event(task_ev("started", timestamp=T0 + 2))  # a custom state outranks STARTED
    assert task.state == "PROGRESS"
    state.event(task_ev("succeeded", timestamp=T0 + 3))
    assert task.state == "SUCCESS"


def test_late_received_keeps_state_and_merges_only_its_keep_list() -> None:
    state = State()
    state.event(task_ev("started", timestamp=T0 + 1, clock=5))
    state.event(task_ev("succeeded", timestamp=T0 + 2, clock=6, result="5"))
    (task, _), _ = state.event(
        received(timestamp=T0, clock=4, hostname="w2@h", retries=1, root_id="r", parent_id="p")
    )
    assert task.state == "SUCCESS"
    assert (task.name, task.args, task.retries, task.root_id, task.parent_id) == (
        "tasks.add",
        "[2, 3]",
        1,
        "r",
        "p",
    )
    # Not on the keep list: stays from the later events.
    assert (task.timestamp, task.clock, task.hostname) == (T0 + 2, 6, "w1@h")
    assert task.received == T0  # the timestamp attribute is always set
    assert task.worker.hostname == "w2@h"  # set by the state before merging


def test_other_late_events_merge_every_key() -> None:
    state = State()
    state.event(task_ev("succeeded", timestamp=T0 + 2, clock=6, result="5"))
    (task, _), _ = state.event(
        task_ev("failed", timestamp=T0 + 1, clock=5, hostname="w2@h", exception="E")
    )
    assert task.state == "SUCCESS"
    assert (task.exception, task.timestamp, task.clock, task.hostname) == ("E", T0 + 1, 5, "w2@h")
    assert task.failed == T0 + 1


@pytest.mark.parametrize(
    ("subjects", "final"),
    [
        (["failed", "succeeded"], "SUCCESS"),
        (["succeeded", "failed"], "SUCCESS"),
        (["started", "retried", "started"], "STARTED"),
        (["started", "retried"], "RETRY"),
        (["succeeded", "retried"], "RETRY"),  # RETRY bypasses precedence both ways
        (["retried", "received"], "RECEIVED"),
        (["revoked", "started"], "REVOKED"),
        (["started", "revoked"], "REVOKED"),
        (["received", "rejected"], "RECEIVED"),
        (["received", "sent"], "RECEIVED"),
        (["progress", "failed"], "FAILURE"),
        (["failed", "progress"], "FAILURE"),
        (["progress", "revoked"], "PROGRESS"),
        (["progress", "cancelled"], "CANCELLED"),  # two custom states: equal rank, later wins
    ],
)
def test_state_precedence(subjects: list[str], final: str) -> None:
    state = State()
    for n, subject in enumerate(subjects):
        state.event(task_ev(subject, timestamp=T0 + n, clock=n + 1))
    assert state.tasks["u1"].state == final


def test_ready_origin_id_and_info() -> None:
    state = State()
    (task, _), _ = state.event(task_ev("sent", hostname="client@h", args="[1]"))
    assert task.origin == "client@h" and task.worker is None and task.id == "u1"
    assert not task.ready
    state.event(task_ev("succeeded", pid=9, result="5", runtime=0.1))
    assert task.origin == "w1@h.None"  # a worker seen only through tasks has no pid
    state.event(worker_ev("heartbeat", pid=9))
    assert task.origin == "w1@h.9"
    assert task.ready
    assert task.info() == {"args": "[1]", "result": "5", "runtime": 0.1}
    assert task.info(fields=["name", "state"], extra=["hostname"]) == {
        "state": "SUCCESS",
        "hostname": "w1@h",
    }
    for name in ("FAILURE", "REVOKED"):
        task.state = name
        assert task.ready
    task.state = "RETRY"
    assert not task.ready


def test_info_skips_none_values() -> None:
    task = Task("u1", args="[]", kwargs=None, retries=0)
    assert task.info() == {"args": "[]", "retries": 0}


def test_task_repr_and_as_dict() -> None:
    state = State()
    state.event(received("p1"))
    (task, _), _ = state.event(received("c1", parent_id="p1", root_id="p1", clock=2))
    assert repr(task) == "<Task: tasks.add(c1) RECEIVED clock:2>"
    parent = state.tasks["p1"]
    as_dict = parent.as_dict()
    assert list(as_dict) == list(Task._fields)
    assert as_dict["children"] == ["c1"]
    assert task.as_dict()["root"] == "p1" and task.as_dict()["parent"] == "p1"
    assert as_dict["worker"] is state.workers["w1@h"] and as_dict["state"] == "RECEIVED"


def test_task_pickles_through_as_dict() -> None:
    state = State()
    (task, _), _ = state.event(received(result="x"))
    copy = pickle.loads(pickle.dumps(task))
    assert copy == task and copy.name == "tasks.add" and copy.state == "RECEIVED"
    assert copy.worker.hostname == "w1@h" and copy.cluster_state is None


def test_task_eq_hash_by_uuid() -> None:
    assert Task("a") == Task("a") and hash(Task("a")) == hash("a")
    assert Task("a") != Task("b")
    assert Task("a") != "a"


def test_get_or_create_task_is_not_indexed() -> None:
    state = State()
    task, created = state.get_or_create_task("u1")
    assert created and state.tasks["u1"] is task and task.cluster_state is state
    assert state.get_or_create_task("u1") == (task, False)
    state.event(received())
    assert "tasks.add" in state.task_types()
    assert len(state.tasks_by_type["tasks.add"]) == 0  # existed before the event named it


# -- indexes and ordered views ------------------------------------------------------------------


def test_indexes_filled_only_when_created_by_an_event_with_a_name() -> None:
    state = State()
    state.event(received("a", name="tasks.x"))
    state.event(task_ev("started", "b", hostname="w2@h"))
    state.event(received("b", name="tasks.x"))  # late name: not indexed
    state.event(received("c", name=None))
    state.event(task_ev("sent", "d", hostname="client@h", name="tasks.y"))
    assert {t.uuid for t in state.tasks_by_type["tasks.x"]} == {"a"}
    assert {t.uuid for t in state.tasks_by_type["tasks.y"]} == {"d"}
    assert {t.uuid for t in state.tasks_by_worker["w1@h"]} == {"a"}
    assert {t.uuid for t in state.tasks_by_worker["client@h"]} == {"d"}  # the event's hostname
    assert "w2@h" not in state.tasks_by_worker
    assert state.task_types() == ["tasks.x", "tasks.y"]  # sorted, late names included


def test_index_is_a_defaultdict_of_task_sets() -> None:
    state = State()
    assert len(state.tasks_by_type["nothing"]) == 0
    assert "nothing" in state.tasks_by_type
    assert isinstance(state.tasks_by_type["nothing"], TaskSet)


def test_tasks_by_time_newest_first_unique() -> None:
    state = State()
    state.event(received("a", clock=1))
    state.event(received("b", clock=2))
    state.event(task_ev("started", "a", clock=3))
    state.event(received("c", clock=4))
    assert uuids(state.tasks_by_time()) == ["c", "a", "b"]
    assert uuids(state.tasks_by_time(reverse=False)) == ["a", "b", "c"]
    assert uuids(state.tasks_by_timestamp()) == ["c", "a", "b"]
    # limit counts heap entries before duplicates are dropped.
    assert uuids(state.tasks_by_time(limit=2)) == ["c", "a"]
    assert uuids(state.tasks_by_time(limit=0)) == []


def test_time_order_by_clock_then_origin_then_arrival() -> None:
    state = State()
    state.event(received("late", clock=9, timestamp=T0))
    state.event(received("b", clock=5, hostname="w2@h", timestamp=T0 + 9))
    state.event(received("a", clock=5, hostname="w1@h", timestamp=T0 + 9))  # origin w1@h.7 < w2@h.7
    state.event(received("a2", clock=5, hostname="w1@h", timestamp=T0 - 9))  # same key: arrival
    assert uuids(state.tasks_by_time(reverse=False)) == ["a", "a2", "b", "late"]


def test_time_order_by_timestamp_without_clocks() -> None:
    state = State()
    state.event(received("b", clock=0, timestamp=T0 + 2))
    state.event(received("a", clock=None, timestamp=T0 + 1))
    state.event(received("c", clock=0, timestamp=T0 + 3))
    assert uuids(state.tasks_by_time()) == ["c", "b", "a"]


def test_callable_indexes_yield_in_time_order() -> None:
    state = State()
    state.event(received("a", name="x", clock=3))
    state.event(received("b", name="x", clock=1, hostname="w2@h"))
    state.event(received("c", name="y", clock=2))
    state.event(task_ev("started", "a", clock=5))
    # Heap: b@1 c@2 a@3 a@5. Newest first a (its latest entry), then b.
    assert uuids(state.tasks_by_type("x")) == ["a", "b"]
    assert uuids(state.tasks_by_type("x", reverse=False)) == ["b", "a"]
    assert uuids(state.tasks_by_type("x", limit=1)) == ["a"]
    assert uuids(state.tasks_by_worker("w1@h")) == ["a", "c"]
    assert uuids(state.tasks_by_worker("w2@h", limit=1)) == ["b"]


def test_tasks_by_worker_skips_tasks_without_worker() -> None:
    # Documented difference: Celery raises AttributeError for a task only seen as sent.
    state = State()
    state.event(task_ev("sent", "s", hostname="client@h"))
    state.event(received("r", clock=2))
    assert uuids(state.tasks_by_worker("w1@h")) == ["r"]


def test_itertasks_in_lru_order_with_limit() -> None:
    state = State()
    for uuid in "abc":
        state.event(received(uuid))
    assert uuids(state.itertasks()) == ["a", "b", "c"]
    assert uuids(state.itertasks(2)) == ["a", "b"]
    assert uuids(state.itertasks(0)) == ["a", "b", "c"]  # falsy limit: all


# -- parents and children -----------------------------------------------------------------------


def test_child_after_parent_joins_parent_children() -> None:
    state = State()
    state.event(received("p"))
    state.event(received("c", parent_id="p"))
    assert {t.uuid for t in state.tasks["p"].children} == {"c"}


def test_child_before_parent_is_parked_then_resolved() -> None:
    state = State()
    state.event(received("c1", parent_id="p"))
    state.event(received("c2", parent_id="p"))
    assert {t.uuid for t in state._tasks_to_resolve["p"]} == {"c1", "c2"}
    state.event(task_ev("started", "p"))
    assert {t.uuid for t in state.tasks["p"].children} == {"c1", "c2"}
    assert "p" not in state._tasks_to_resolve


def test_parking_map_is_bounded_like_tasks() -> None:
    state = State(max_tasks_in_memory=2)
    state.event(received("c1", parent_id="p1"))
    state.event(received("c2", parent_id="p2"))
    state.event(received("c3", parent_id="p3"))
    assert list(state._tasks_to_resolve) == ["p2", "p3"]


def test_parent_lookup_refreshes_parent_recency() -> None:
    state = State(max_tasks_in_memory=3)
    state.event(received("p"))
    state.event(received("x"))
    state.event(received("c", parent_id="p"))  # reads p through the LRU
    assert list(state.tasks) == ["x", "c", "p"]
    state.event(received("y"))  # full: drops the least recent, x
    assert list(state.tasks) == ["c", "p", "y"]


def test_dropped_child_leaves_parent_children() -> None:
    state = State(max_tasks_in_memory=2)
    state.event(received("c", parent_id="p"))
    state.event(received("p"))
    assert {t.uuid for t in state.tasks["p"].children} == {"c"}
    state.event(received("z"))  # drops c
    assert "c" not in state.tasks and len(state.tasks["p"].children) == 0


def test_dropped_parked_child_leaves_parking() -> None:
    state = State(max_tasks_in_memory=1)
    state.event(received("c", parent_id="p"))
    state.event(received("z"))  # drops c
    assert len(state._tasks_to_resolve["p"]) == 0


def test_parent_and_root_are_looked_up_every_time() -> None:
    # Documented difference: Celery caches the first answer.
    state = State()
    (child, _), _ = state.event(received("c", parent_id="p", root_id="r"))
    assert child.parent is None and child.root is None
    state.event(received("p"))
    state.event(received("r"))
    assert child.parent is state.tasks["p"] and child.root is state.tasks["r"]
    assert Task("x").parent is None  # a falsy id is returned as is (None)


def test_task_children_argument_resolves_known_ids() -> None:
    state = State()
    state.event(received("a"))
    task = Task("p", cluster_state=state, children=["a", "missing"])
    assert [t.uuid for t in task.children] == ["a"]
    assert len(Task("p", children=["a"]).children) == 0  # no cluster state


# -- LRU ----------------------------------------------------------------------------------------


def test_tasks_lru_is_fifo_by_creation_on_the_event_path() -> None:
    state = State(max_tasks_in_memory=2)
    state.event(received("a"))
    state.event(received("b"))
    state.event(task_ev("started", "a"))  # event path: no recency refresh
    state.event(received("c"))
    assert list(state.tasks) == ["b", "c"]


def test_user_reads_refresh_recency() -> None:
    state = State(max_tasks_in_memory=2)
    state.event(received("a"))
    state.event(received("b"))
    assert state.tasks["a"].uuid == "a"  # a read through the mapping
    state.event(received("c"))
    assert list(state.tasks) == ["a", "c"]
    assert state.tasks.get("a") is not None
    assert "c" in state.tasks  # membership does not refresh
    state.event(received("d"))
    assert list(state.tasks) == ["a", "d"]


def test_workers_lru() -> None:
    state = State(max_workers_in_memory=2)
    for host in ("a@h", "b@h", "c@h"):
        state.event(worker_ev("heartbeat", hostname=host))
    assert list(state.workers) == ["b@h", "c@h"]
    state.event(received(hostname="d@h"))  # task events create workers too
    assert list(state.workers) == ["c@h", "d@h"]


@pytest.mark.parametrize("prefix", ["", "task-"], ids=["weakref-keys", "uuid-keys"])
def test_dropped_task_leaves_indexes_and_time_order(prefix: str) -> None:
    # One-character uuids are found again through weak references, longer ones by identity.
    a, b, c = (f"{prefix}{x}" for x in "abc")
    state = State(max_tasks_in_memory=2)
    state.event(received(a, name="x"))
    state.event(received(b, name="x", clock=2))
    state.event(received(c, name="x", clock=3))
    assert {t.uuid for t in state.tasks_by_type["x"]} == {b, c}
    assert {t.uuid for t in state.tasks_by_worker["w1@h"]} == {b, c}
    assert uuids(state.tasks_by_time()) == [c, b]
    # Recreated under the same uuid: the old entries do not name the new task.
    state.event(task_ev("started", a, clock=4))
    assert uuids(state.tasks_by_time()) == [a, c]
    assert uuids(state.tasks_by_time(reverse=False)) == [c, a]
    assert [e[3] and e[3].uuid for e in state._heap_entries()] == [None, None, c, a]
    assert {t.uuid for t in state.tasks_by_type["x"]} == {c}  # no name: not indexed


def test_lru_mapping_api() -> None:
    state = State(max_tasks_in_memory=3)
    for uuid in "abc":
        state.event(received(uuid, name="x"))
    tasks = state.tasks
    assert tasks.limit == 3 and len(tasks) == 3 and list(tasks.keys()) == ["a", "b", "c"]
    assert [t.uuid for t in tasks.values()] == ["a", "b", "c"]
    assert next(iter(tasks)) == "a"
    del tasks["b"]
    assert {t.uuid for t in state.tasks_by_type["x"]} == {"a", "c"}
    popped = tasks.pop("a")
    assert popped.uuid == "a" and {t.uuid for t in state.tasks_by_type["x"]} == {"c"}
    tasks.clear()
    assert len(state.tasks_by_type["x"]) == 0 and uuids(state.tasks_by_time()) == []


def test_lru_replacing_a_key_keeps_its_place() -> None:
    state = State(max_tasks_in_memory=2)
    state.event(received("a", name="x"))
    state.event(received("b"))
    replacement = Task("a")
    state.tasks["a"] = replacement
    assert list(state.tasks) == ["a", "b"] and state.tasks.data["a"] is replacement
    assert len(state.tasks_by_type["x"]) == 0  # the replaced task left the index


def test_lru_update_trims_oldest() -> None:
    state = State(max_tasks_in_memory=2)
    state.event(received("a", name="x"))
    state.tasks.update({"b": Task("b"), "c": Task("c")})
    assert list(state.tasks) == ["b", "c"] and len(state.tasks_by_type["x"]) == 0


# -- clearing -----------------------------------------------------------------------------------


def _mixed_state() -> State:
    state = State()
    state.event(worker_ev("heartbeat"))
    state.event(received("done", name="x"))
    state.event(task_ev("succeeded", "done", clock=2))
    state.event(received("busy", name="x", clock=3))
    return state


def test_clear_keeps_unready_tasks_and_types() -> None:
    state = _mixed_state()
    state.clear()
    assert list(state.tasks) == ["busy"] and not state.workers
    assert (state.event_count, state.task_count) == (0, 0)
    assert state.task_types() == ["x"]
    assert {t.uuid for t in state.tasks_by_type["x"]} == {"busy"}
    assert uuids(state.tasks_by_time()) == []  # the heap is emptied


def test_clear_not_ready_drops_all_tasks() -> None:
    state = _mixed_state()
    state.clear(ready=False)
    assert not state.tasks and len(state.tasks_by_type["x"]) == 0


def test_clear_tasks_keeps_workers_and_counters() -> None:
    state = _mixed_state()
    state.clear_tasks()
    assert list(state.tasks) == ["busy"] and list(state.workers) == ["w1@h"]
    assert state.event_count == 4
    state.event(task_ev("started", "busy", clock=9))
    assert uuids(state.tasks_by_time()) == ["busy"]
    state.clear_tasks(ready=False)
    assert not state.tasks


def test_clear_goes_through_clear_tasks_hook() -> None:
    calls: list[bool] = []

    class Flowerish(State):
        def _clear_tasks(self, ready: bool = True) -> None:
            calls.append(ready)
            super()._clear_tasks(ready)

    state = Flowerish()
    state.clear(ready=False)
    state.clear_tasks()
    assert calls == [False, True]


def test_freeze_while() -> None:
    state = _mixed_state()
    assert state.freeze_while(lambda a, b=0: (a, b, len(state.tasks)), 1, b=2) == (1, 2, 2)
    assert len(state.tasks) == 2
    assert state.freeze_while(len, state.tasks, clear_after=True) == 2
    assert list(state.tasks) == ["busy"] and state.event_count == 0
    state.event(received("again"))
    with pytest.raises(ZeroDivisionError):
        state.freeze_while(lambda: 1 / 0, clear_after=True)
    assert state.event_count == 0  # cleared even though fun raised


# -- time heap: the cap and the sorting machinery -----------------------------------------------


def test_heap_cap_keeps_newest_even_if_smallest() -> None:
    # Celery pops the smallest entry, then inserts: the newest survives even when smallest.
    state = State(max_tasks_in_memory=1)  # cap: 4 entries
    for clock in (10, 11, 12, 13):
        state.event(task_ev("progress", clock=clock))
    state.event(task_ev("progress", clock=1))
    assert [e[0] for e in state._heap_entries()] == [1, 11, 12, 13]
    state.event(task_ev("progress", clock=14))  # now 1 is the smallest and goes
    assert [e[0] for e in state._heap_entries()] == [11, 12, 13, 14]


def test_heap_cap_equals_four_times_max_tasks() -> None:
    state = State(max_tasks_in_memory=2)
    for clock in range(1, 30):
        state.event(task_ev("progress", clock=clock))
    assert [e[0] for e in state._heap_entries()] == list(range(22, 30))


def test_unbounded_heap_when_max_tasks_is_zero() -> None:
    state = State(max_tasks_in_memory=0)
    for n in range(50):
        state.event(received(f"t{n}", clock=n + 1))
    assert len(state.tasks) == 50 and len(state._heap_entries()) == 50


def test_event_path_sorts_in_growing_chunks_not_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sorts: list[tuple[int, int]] = []
    original = state_mod._TimeHeap._sort

    def counting(self: Any, done: int, n: int, falsy: int) -> None:
        sorts.append((done, n))
        original(self, done, n, falsy)

    monkeypatch.setattr(state_mod._TimeHeap, "_sort", counting)
    chunk = state_mod._SORT_CHUNK
    state = State(max_tasks_in_memory=1_000_000)
    for n in range(12 * chunk):
        state.event(received(f"t{n}", clock=(n * 7919) % 10_007 + 1))  # far out of order
    # A chunk, or a quarter of what is already sorted once that is more.
    assert sorts[:4] == [
        (0, chunk),
        (chunk, 2 * chunk),
        (2 * chunk, 3 * chunk),
        (3 * chunk, 4 * chunk),
    ]
    assert all(n - done == max(chunk, done // 4) for done, n in sorts)
    assert len(sorts) == 8
    clocks = [e[0] for e in state._heap_entries()]
    assert len(clocks) == 12 * chunk and clocks == sorted(clocks)


def test_heap_columns_fall_back_to_lists_for_other_types() -> None:
    state = State()
    state.event(received("a", clock=2**70, timestamp=T0))  # too big for int64
    state.event(received("b", clock=3, timestamp=int(T0)))  # int timestamp
    state.event(received("c", clock=True, timestamp=T0))
    heap = state._heap
    assert isinstance(heap.clocks, list) and isinstance(heap.times, list)
    assert [type(e[0]) for e in state._heap_entries()] == [bool, int, int]
    assert uuids(state.tasks_by_time()) == ["a", "b", "c"]


def test_mixed_truthy_and_falsy_clocks_still_order_pairwise() -> None:
    # Not a total order (documented): only check that what is comparable is in order.
    state = State()
    state.event(received("a", clock=0, timestamp=T0 + 1))
    state.event(received("b", clock=5, timestamp=T0 + 2))
    state.event(received("c", clock=0, timestamp=T0 + 3))
    assert uuids(state.tasks_by_time(reverse=False)) == ["a", "b", "c"]


def test_rebuild_taskheap_one_entry_per_task() -> None:
    state = State()
    state.event(received("a", clock=5))
    state.event(task_ev("started", "a", clock=6))
    state.event(received("b", clock=2))
    state.rebuild_taskheap()
    assert [(e[0], e[3].uuid) for e in state._heap_entries()] == [(2, "b"), (6, "a")]


# -- memory-related behaviour ------------------------------------------------------------------


def test_repeated_strings_are_shared() -> None:
    state = State()
    uuid = "".join(["abc", "-def"])
    (first, _), _ = state.event(received(uuid, hostname="".join(["w1", "@h"])))
    (second, _), _ = state.event(received("other", hostname="".join(["w1", "@h"])))
    assert first.hostname is second.hostname
    assert first.type is second.type and first.name is second.name
    assert first.uuid == uuid and first.uuid is not uuid  # the task's own copy
    state.event(task_ev("started", "".join(["abc", "-def"]), root_id=uuid))
    assert first.root_id is first.uuid
    assert next(iter(state.tasks)) is first.uuid


def test_task_uses_slots_and_dict_only_for_extra_keys() -> None:
    state = State()
    (task, _), _ = state.event(received())
    state.event(task_ev("succeeded", result="5", runtime=0.1))
    assert vars(task) == {}
    state.event(task_ev("progress", done=1))
    assert vars(task) == {"done": 1}


def test_task_set_equality_by_uuid() -> None:
    tasks = TaskSet([Task("a"), Task("b")])
    assert Task("a") in tasks and Task("c") not in tasks and "a" not in tasks
    first = next(iter(tasks))
    tasks.add(Task("a"))  # an equal task is already in: kept as is
    assert len(tasks) == 2 and next(iter(tasks)) is first
    tasks.discard(Task("a"))
    assert {t.uuid for t in tasks} == {"b"}
    assert pickle.loads(pickle.dumps(tasks)) == tasks


# -- pickling (Flower's --persistent) -----------------------------------------------------------


def test_state_pickle_round_trip() -> None:
    state = State(max_tasks_in_memory=50)
    state.event(worker_ev("heartbeat"))
    state.event(received("p", name="x"))
    state.event(received("c", name="y", parent_id="p", clock=2))
    state.event(task_ev("succeeded", "c", clock=3, result="1"))
    copy = pickle.loads(pickle.dumps(state))
    assert list(copy.tasks) == ["c", "p"] and list(copy.workers) == ["w1@h"]  # p was bumped
    assert copy.tasks["c"].state == "SUCCESS" and copy.tasks["c"].result == "1"
    assert {t.uuid for t in copy.tasks_by_type["y"]} == {"c"}
    assert uuids(copy.tasks_by_time()) == ["c", "p"]
    assert copy.max_tasks_in_memory == 50
    # The unpickled state keeps its indexes in step with its LRU.
    del copy.tasks["c"]
    assert len(copy.tasks_by_type["y"]) == 0
