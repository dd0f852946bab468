"""Task._merge's compiled plans store exactly what the key-by-key merge stores."""

from __future__ import annotations

from typing import Any

import pytest

from aiocelerymon.events import state as state_mod
from aiocelerymon.events.state import Task

UUID = "d5a1c7a0-2f4e-4c7b-9d7e-0a1b2c3d4e5f"

ODD_FIELDS: list[dict[Any, Any]] = [
    {"hostname": "celery@a", "pid": 12, "utcoffset": -1, "clock": 3, "uuid": UUID,
     "root_id": UUID, "name": "proj.add", "type": "task-received", "timestamp": 1.5},
    {"uuid": "other", "root_id": "someone-else", "parent_id": UUID, "pid": 0.0},
    {"it's": 1, 'a"b': 2, "with\nnewline": 3, "children": [1], "id": "x", "ready": 5},
    {"__class__": "nope", "__dict__": 1, "d": 2, "f": 3, "self": 4, "v": 5, "u": 6},
    {"hostname": b"bytes", "name": 7, "pid": float("nan"), "utcoffset": True},
    {1: "int key", None: "none key"},
]  # fmt: skip


def _attrs(task: Task) -> dict[str, Any]:
    out = dict(task.__dict__)
    for name in Task.__slots__:
        if name not in ("__dict__", "__weakref__") and hasattr(task, name):
            out[name] = getattr(task, name)
    return out


@pytest.mark.parametrize("fields", ODD_FIELDS)
def test_plan_matches_slow_merge(fields: dict[Any, Any]) -> None:
    fast, slow = Task(UUID), Task(UUID)
    fast._merge(fields)
    slow._merge_slow(fields)
    assert repr(_attrs(fast)) == repr(_attrs(slow))  # repr: NaN != NaN
    # The root_id equal to the uuid is the task's own object, as in the slow path.
    if fields.get("root_id") == UUID:
        assert fast.root_id is fast.uuid


def test_plans_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_mod, "_MERGE_PLANS", {})
    monkeypatch.setattr(state_mod, "_MERGE_PLANS_MAX", 3)
    task = Task(UUID)
    for i in range(10):
        task._merge({f"k{i}": i})
    assert len(state_mod._MERGE_PLANS) == 3
    assert task.__dict__["k9"] == 9


@pytest.mark.parametrize(
    "keys",
    [tuple(f"k{i}" for i in range(100)), ("x" * 1000,)],
    ids=["many keys", "long key"],
)
def test_odd_key_sets_are_not_compiled(keys: tuple[str, ...]) -> None:
    """A custom event with many or long keys would cost compile time and memory for good."""
    before = dict(state_mod._MERGE_PLANS)
    assert state_mod._merge_plan(keys) is Task._merge_slow
    assert before == state_mod._MERGE_PLANS
    task = Task(UUID)
    task._merge(dict.fromkeys(keys, 1))
    assert all(task.__dict__[k] == 1 for k in keys)
