"""Issue 12: events that leave nothing to merge, failing events, and late-sized heaps.

Where Celery's behaviour is the expectation, the same events go to ``celery.events.state``
too (through the differential harness) and both states are compared.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery.events import state as celery_state
from hypothesis import given, settings
from hypothesis import strategies as st

from aiocelerymon.events import state as state_mod
from aiocelerymon.events.state import State, Task
from tests.unit.events.test_state import received, task_ev, worker_ev
from tests.unit.events.test_state_differential import Pair, compare_states
from tests.unit.events.test_state_differential import _pinned_now as _pinned_now

# -- item 1: nothing to merge --


def test_a_late_event_with_nothing_to_merge_keeps_the_state() -> None:
    ours, celery = Task("u1"), celery_state.Task("u1")
    now = time.time()
    for task in (ours, celery):
        task.event("started", now, now)
        task.event("started", now + 1, now + 1)
        task.event("received", now + 2, now + 2)  # merges no key at all
    assert ours.state == celery.state == "STARTED"
    assert ours.received == celery.received is not None


def test_the_empty_key_tuple_compiles_to_a_no_op() -> None:
    merge = state_mod._merge_plan(())
    task = Task("u1")
    merge(task, {})
    assert task.state == "PENDING" and task.name is None


def test_a_plan_for_any_string_keys_stores_them() -> None:
    keys = ("name", "x-y", "", "'quote\"", "\\back", "ünï", "uuid", "root_id", "pid")
    fields = {key: i for i, key in enumerate(keys)}
    fields.update(uuid="u1", root_id="u1", name="t")
    task = Task("u1")
    state_mod._merge_plan(keys)(task, fields)
    assert task.name == "t" and task.root_id == "u1" and task.pid == 8
    assert all(task.__dict__[key] == fields[key] for key in ("x-y", "", "'quote\"", "\\back"))


_SLOT_KEYS = sorted(state_mod._MERGE_KIND)


@settings(max_examples=150, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(_SLOT_KEYS) | st.text(max_size=70),
        unique=True,
        max_size=12,
    ),
    st.sampled_from(["u1", "other", 7, None]),
)
def test_every_key_tuple_compiles_and_merges_as_the_slow_path(keys: list[str], value: Any) -> None:
    fields = dict.fromkeys(keys, value)
    compiled, slow = Task("u1"), Task("u1")
    state_mod._merge_plan(tuple(keys))(compiled, fields)
    Task._merge_slow(slow, fields)
    for key in keys:
        assert getattr(compiled, key, "unset") == getattr(slow, key, "unset"), key
    assert compiled.uuid == slow.uuid and vars(compiled) == vars(slow)


def test_late_received_with_nothing_mergeable_behaves_as_celery() -> None:
    pair = Pair(max_tasks_in_memory=10)
    pair.event(task_ev("started", clock=2, timestamp=1800000000.0))
    # A task-received without name/args/kwargs/...: nothing of it survives the merge rule.
    pair.event(task_ev("received", clock=1, timestamp=1799999999.0))
    pair.event(received("u1", clock=3, timestamp=1800000001.0))
    pair.compare()
    assert pair.ours.tasks["u1"].state == "STARTED"
    assert {t.uuid for t in pair.ours.tasks_by_type["tasks.add"]} == set()  # not created so


# -- a failing event changes nothing -----------------------------------------------------------


def snapshot(state: State) -> dict[str, Any]:
    """Everything an event may change, comparably."""
    tasks = {
        uuid: (dict(task.as_dict(), worker=getattr(task.worker, "hostname", None)), task.client)
        for uuid, task in state.tasks.data.items()
    }
    return {
        "tasks": list(state.tasks.data),
        "task_fields": tasks,
        "workers": {
            h: (list(w.heartbeats), w.active, dict(vars(w))) for h, w in state.workers.data.items()
        },
        "heap": [(c, t, o, getattr(x, "uuid", None)) for c, t, o, x in state._heap_entries()],
        "task_count": state.task_count,
        "by_type": {k: sorted(t.uuid for t in v) for k, v in state.tasks_by_type.items()},
        "by_worker": {k: sorted(t.uuid for t in v) for k, v in state.tasks_by_worker.items()},
        "children": {u: sorted(c.uuid for c in t.children) for u, t in state.tasks.data.items()},
        "parked": {k: sorted(t.uuid for t in v) for k, v in state._tasks_to_resolve.items()},
        "types": state.task_types(),
    }


def busy_state(**kwargs: Any) -> State:
    state = State(**kwargs)
    state.event(worker_ev("online"))
    state.event(received("p1", clock=1))
    state.event(received("c1", clock=2, parent_id="p1", root_id="p1"))
    state.event(task_ev("started", "c1", clock=3))
    return state


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(received("n1", name=["not", "hashable"], clock=9), id="unhashable-name"),
        pytest.param(received("n2", parent_id={"a": 1}, clock=9), id="unhashable-parent"),
        pytest.param(task_ev("succeeded", "c1", clock=9, local_received="soon"), id="bad-ts"),
        pytest.param(
            {**task_ev("started", "c1", hostname="w2@h"), "timestamp": "x"}, id="new-worker"
        ),
    ],
)
def test_a_failing_task_event_leaves_the_state_as_it_was(event: dict[str, Any]) -> None:
    state = busy_state()
    before = snapshot(state)
    with pytest.raises((TypeError, ValueError)):
        state.event(event)
    assert snapshot(state) == before
    # And the state still works.
    state.event(task_ev("succeeded", "c1", clock=10, result="5"))
    assert state.tasks["c1"].state == "SUCCESS"


def test_a_failure_inside_the_merge_undoes_the_new_task_and_its_eviction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = busy_state(max_tasks_in_memory=2)
    before = snapshot(state)

    def boom(self: Task, fields: Any) -> None:
        raise RuntimeError("merge failed")

    monkeypatch.setattr(Task, "_merge", boom)
    with pytest.raises(RuntimeError):
        state.event(received("new", clock=9))  # would evict c1 (p1 was read when c1 linked)
    with pytest.raises(RuntimeError):
        state.event(task_ev("succeeded", "c1", clock=10))
    assert snapshot(state) == before
    monkeypatch.undo()
    state.event(received("new", clock=11))
    assert list(state.tasks) == ["p1", "new"]


def test_a_failing_node_join_callback_keeps_no_worker() -> None:
    def refuse(worker: Any) -> None:
        raise RuntimeError("no")

    state = State(on_node_join=refuse)
    with pytest.raises(RuntimeError):
        state.event(worker_ev("online", "w9@h"))
    assert "w9@h" not in state.workers
    state.on_node_join = None
    state.event(worker_ev("online", "w9@h"))
    state.on_node_join = refuse
    before = snapshot(state)
    with pytest.raises(RuntimeError):
        state.event(worker_ev("online", "w9@h", active=5, timestamp=state_mod._now() + 1))
    assert snapshot(state) == before


# -- item 8: the heap is sized at the first event --


@pytest.mark.parametrize(("attr", "value"), [("heap_multiplier", 1), ("max_tasks_in_memory", 3)])
def test_sizes_changed_after_init_are_honoured_as_celery(attr: str, value: int) -> None:
    pair = Pair(max_tasks_in_memory=5, callbacks=False)
    setattr(pair.celery, attr, value)
    setattr(pair.ours, attr, value)
    for i in range(12):
        pair.event(received(f"u{i}", clock=2 * i + 1, timestamp=1800000000.0 + i))
        pair.event(task_ev("started", f"u{i}", clock=2 * i + 2, timestamp=1800000000.5 + i))
    pair.compare()
    compare_states(pair.celery, pair.ours)
    assert len(list(pair.ours.tasks_by_time())) == len(list(pair.celery.tasks_by_time()))
