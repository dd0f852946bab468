"""The page's counters: rates per second, runtime percentiles, running and stuck tasks."""

from __future__ import annotations

from typing import Any

import pytest

from aiocelerymon.events import State
from aiocelerymon.web.series import PageSeries, percentile

NOW = 1_700_000_000.0


def feed(series: PageSeries, state: State, **event: Any) -> None:
    event.setdefault("hostname", "w1@h")
    event.setdefault("local_received", event["timestamp"])
    state.event(event)
    series.on_event(event, state)


def run(series: PageSeries, state: State, uuid: str, name: str, at: float, runtime: float,
        outcome: str = "succeeded") -> None:  # fmt: skip
    feed(series, state, type="task-received", uuid=uuid, name=name, timestamp=at, clock=1)
    feed(series, state, type="task-started", uuid=uuid, timestamp=at, clock=2)
    end: dict[str, Any] = {"runtime": runtime} if outcome == "succeeded" else {}
    feed(series, state, type=f"task-{outcome}", uuid=uuid, timestamp=at + runtime, clock=3, **end)


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_rates_per_second_cluster_worker_and_type() -> None:
    series, state = PageSeries(clock=lambda: NOW + 10), State()
    run(series, state, "a", "proj.add", NOW, 0.5)
    run(series, state, "b", "proj.add", NOW + 0.1, 0.5)
    run(series, state, "c", "proj.fail", NOW + 2, 0.1, outcome="failed")
    run(series, state, "d", "proj.flaky", NOW + 3, 0.1, outcome="retried")
    rates = series.rates(60)
    t = rates["t"]
    assert len(t) == 60 and t[-1] == int(NOW + 10)
    at = t.index(int(NOW))
    assert rates["cluster"]["succeeded"][at] == 2
    assert rates["cluster"]["failed"][t.index(int(NOW + 2))] == 1
    assert rates["cluster"]["retried"][t.index(int(NOW + 3))] == 1
    assert sum(rates["cluster"]["succeeded"]) == 2
    assert set(rates["workers"]) == {"w1@h"}
    assert set(rates["tasks"]) == {"proj.add", "proj.fail", "proj.flaky"}
    assert sum(rates["tasks"]["proj.fail"]["failed"]) == 1
    assert series.counters["w1@h"]["task-succeeded"] == 2


def test_old_buckets_leave_the_horizon() -> None:
    clock = [NOW]
    series, state = PageSeries(horizon=10, clock=lambda: clock[0]), State()
    run(series, state, "a", "proj.add", NOW, 0.1)
    clock[0] = NOW + 30
    run(series, state, "b", "proj.add", NOW + 30, 0.1)
    assert sum(series.rates()["cluster"]["succeeded"]) == 1


def test_runtime_percentiles_per_type() -> None:
    series, state = PageSeries(), State()
    for i in range(100):
        run(series, state, f"t{i}", "proj.add", NOW + i, (i + 1) / 100)
    stats = series.runtimes()["proj.add"]
    assert stats["count"] == 100
    assert stats["p50"] == pytest.approx(0.505)
    assert stats["p99"] == pytest.approx(0.9901)
    assert stats["max"] == 1.0


def test_stuck_is_far_beyond_the_usual_runtime() -> None:
    series, state = PageSeries(clock=lambda: NOW + 100), State()
    for i in range(5):
        run(series, state, f"quick{i}", "proj.sleep", NOW + i, 0.2)
    feed(series, state, type="task-received", uuid="slow", name="proj.sleep", timestamp=NOW + 90,
         clock=10)  # fmt: skip
    feed(series, state, type="task-started", uuid="slow", timestamp=NOW + 90, clock=11)
    feed(series, state, type="task-received", uuid="fresh", name="proj.sleep",
         timestamp=NOW + 99.5, clock=12)  # fmt: skip
    feed(series, state, type="task-started", uuid="fresh", timestamp=NOW + 99.5, clock=13)
    # Never finished before: no usual runtime, so never called stuck.
    feed(series, state, type="task-received", uuid="new", name="proj.other", timestamp=NOW,
         clock=14)  # fmt: skip
    feed(series, state, type="task-started", uuid="new", timestamp=NOW, clock=15)
    stuck = series.stuck()
    assert [row["uuid"] for row in stuck] == ["slow"]
    assert stuck[0]["elapsed"] == pytest.approx(10) and stuck[0]["worker"] == "w1@h"
    feed(series, state, type="task-succeeded", uuid="slow", timestamp=NOW + 100, clock=16,
         runtime=10.0)  # fmt: skip
    assert series.stuck() == []
