"""Receiver, dispatcher, camera and dump format on the in-memory broker."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import aiocelerymon
from aiocelerymon.events import Camera, Dumper, StreamGap
from aiocelerymon.events.receiver import event_from_message
from aiocelerymon.events.snapshot import TokenBucket, parse_rate
from aiocelerymon.exceptions import ConfigurationError
from aiocelerymon.transports import Exchange, ExchangeKind, Message
from aiocelerymon.transports.memory import MemoryBroker
from aiocelerymon.wire import names
from aiocelerymon.wire.clock import LamportClock

GOLDEN = Path(__file__).parents[1] / "wire" / "golden"


@pytest.fixture
async def client():
    async with aiocelerymon.Client(f"memory://ev-{uuid.uuid4().hex}") as c:
        yield c


async def collect(receiver, n: int, **kw: Any) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(10):
        async for ev in receiver.itercapture(limit=n, wakeup=False, **kw):
            out.append(ev)
    return out


# -- receiver processing (Celery's event_from_message) ----------------------------------------


def test_task_sent_clock_is_placed_before_ours():
    clock = LamportClock(10)
    _, ev = event_from_message({"type": "task-sent", "clock": 999}, clock, local_offset=0)
    assert ev["clock"] == 9  # (ours or 1) - 1, whatever the client sent
    assert clock.value == 11


def test_clock_adjust_forward_and_timestamp_shift():
    clock = LamportClock(5)
    _, ev = event_from_message(
        {"type": "task-started", "clock": 20, "utcoffset": -2, "timestamp": 10_000.0},
        clock,
        local_offset=0,
    )
    assert clock.value == 21
    assert ev["timestamp"] == 10_000.0 + 2 * 3600  # Celery's adjust_timestamp quirk
    assert ev["local_received"] > 0
    _, blind = event_from_message({"type": "worker-heartbeat"}, clock, local_offset=0)
    assert blind["clock"] == 22  # missing clock -> forward()


async def test_receiver_calls_handlers_and_splits_task_multi(client):
    seen: dict[str, list[str]] = {"specific": [], "star": []}

    async def on_failed(ev):  # coroutine handlers are awaited
        seen["specific"].append(ev["uuid"])

    recv = client.events.receiver(
        handlers={"task-failed": on_failed, "*": lambda ev: seen["star"].append(ev["type"])}
    )
    task = asyncio.create_task(collect(recv, 3))
    await recv.ready.wait()
    d = client.events.dispatcher("w@h")
    await d.send("task-received", uuid="a", name="n", args="()", kwargs="{}")
    await d.send("task-failed", uuid="a", exception="E()", traceback="tb")
    await d.flush()  # task events wait for the next loop tick, as in a Celery worker
    await d.send("worker-heartbeat", freq=2.0)
    events = await task
    assert [e["type"] for e in events] == ["task-received", "task-failed", "worker-heartbeat"]
    assert seen == {"specific": ["a"], "star": ["task-received", "worker-heartbeat"]}
    assert recv.event_count == 3


async def test_dispatcher_batches_task_events_as_task_multi(client):
    ex = names.event_exchange()
    async with client.transport.subscribe(names.event_binding("raw")) as raw:
        d = client.events.dispatcher("w@h")
        for i in range(30):
            await d.send("task-started", uuid=str(i))
        await d.send("worker-online", freq=2.0)
        await d.flush()
        batches = []
        async with asyncio.timeout(5):
            while sum(len(b) for b in batches if isinstance(b, list)) < 30:
                dl = await raw.receive()
                body = json.loads(dl.body)
                assert dl.headers == {"hostname": "w@h"}
                assert dl.delivery_mode == 1
                batches.append(body if dl.routing_key == "task.multi" else dl.routing_key)
    lists = [b for b in batches if isinstance(b, list)]
    assert [len(b) for b in lists] == [24, 6]  # Celery's buffer_limit, then the remainder
    assert "worker.online" in batches  # worker events are never batched
    assert list(lists[0][0]) == [
        "hostname",
        "utcoffset",
        "pid",
        "clock",
        "uuid",
        "timestamp",
        "type",
    ]
    assert ex.durable


async def test_malformed_messages_are_counted_and_skipped(client):
    recv = client.events.receiver()
    task = asyncio.create_task(collect(recv, 1))
    await recv.ready.wait()
    ex = names.event_exchange()
    for bad in (b"not json", b"[1, 2]", b'"text"', b'{"no": "type"}'):
        await client.transport.publish(Message(bad), ex, "task.x")
    await client.transport.publish(
        Message(b"{}", content_type="application/x-python-serialize", content_encoding="binary"),
        ex,
        "task.x",
    )
    d = client.events.dispatcher("w@h")
    await d.send("worker-heartbeat")
    [ev] = await task
    assert ev["type"] == "worker-heartbeat"
    assert recv.malformed == 5


async def test_input_that_used_to_end_the_stream_is_counted_and_skipped(client):
    """Valid JSON that overflows the timestamp shift, nesting deeper than any parser takes,
    an encoding name that is not one, and events Celery's State refuses (its merge rules
    raise): each is counted, and the stream goes on."""
    state = aiocelerymon.State()
    recv = client.events.receiver(handlers={"*": state.event})
    task = asyncio.create_task(collect(recv, 1))
    await recv.ready.wait()
    ex = names.event_exchange()
    bad_bodies = [
        b'{"type": "worker-heartbeat", "hostname": "a@h", "timestamp": 1.0, "utcoffset": 1'
        + b"0" * 400
        + b"}",
        b"[" * 5000 + b"]" * 5000,
    ]
    for body in bad_bodies:
        await client.transport.publish(Message(body), ex, "worker.x")
    await client.transport.publish(Message(b"{}", content_encoding="x" * 10_000), ex, "worker.x")
    refused_by_state = [
        {"type": "task-received", "hostname": "a@h", "timestamp": 1.0},  # no uuid
        {"type": "worker-online", "hostname": ["not", "hashable"], "timestamp": 1.0},
    ]
    for ev in refused_by_state:
        await client.transport.publish(Message(json.dumps(ev).encode()), ex, "worker.x")
    d = client.events.dispatcher("w@h")
    await d.send("worker-heartbeat")
    [ev] = await task
    assert ev["type"] == "worker-heartbeat"
    assert (recv.malformed, recv.handler_errors) == (3, 2)
    assert list(state.workers) == ["w@h"]


async def test_reconnect_is_reported_as_a_gap(client):
    recv = client.events.receiver()
    out: list[Any] = []

    async def run():
        async for item in recv.itercapture(wakeup=False, gaps=True, timeout=20):
            out.append(item)
            if isinstance(item, dict) and item.get("n") == 2:
                return

    task = asyncio.create_task(run())
    await recv.ready.wait()
    d = client.events.dispatcher("w@h")
    await d.send("worker-heartbeat", n=1)
    assert isinstance(client.transport, aiocelerymon.transports.memory.MemoryTransport)
    client.transport.broker.drop_connections()
    await client.transport.wait_connected(10)
    await d.send("worker-heartbeat", n=2)
    await asyncio.wait_for(task, 20)
    assert [type(i).__name__ for i in out] == ["dict", "StreamGap", "dict"]
    assert isinstance(out[1], StreamGap) and out[1].generation == 1
    assert recv.gaps == 1


async def test_wakeup_casts_heartbeat_after_subscribing(client):
    async with client.transport.subscribe(names.node_binding("w@h")) as node_queue:
        recv = client.events.receiver()
        task = asyncio.create_task(recv.capture(timeout=5))
        await recv.ready.wait()
        request = await asyncio.wait_for(node_queue.receive(), 5)
        body = json.loads(request.body)
        assert (body["method"], "ticket" in body) == ("heartbeat", False)
        task.cancel()


async def test_named_durable_queue_survives_restart(client):
    # A pipeline restarts with the same node_id and finds what arrived meanwhile.
    def pipeline() -> aiocelerymon.Client:
        return aiocelerymon.Client(
            client.transport.url,
            event_queue_durable=True,
            event_queue_exclusive=False,
            event_queue_expires=None,
        )

    async with pipeline() as first:
        recv = first.events.receiver(node_id="pipeline")
        assert recv.queue == "celeryev.pipeline"
        await collect_until_ready(recv)
    d = client.events.dispatcher("w@h")
    await d.send("worker-heartbeat", n=7)
    assert MemoryBroker.get(client.transport.broker.name).message_count("celeryev.pipeline") == 1
    async with pipeline() as second:
        [ev] = await collect(second.events.receiver(node_id="pipeline"), 1)
    assert ev["n"] == 7


async def collect_until_ready(recv) -> None:
    task = asyncio.create_task(recv.capture(wakeup=False))
    await recv.ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- dump format: line for line what celery's own Dumper prints ------------------------------


def _golden_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted((GOLDEN / "amqp" / "celery-5.6.3").glob("*.json")):
        cap = json.loads(path.read_text())
        if cap.get("exchange") != "celeryev":
            continue
        body = json.loads(cap["body"])
        events.extend(body if isinstance(body, list) else [body])
    return events


def test_dump_lines_match_celerys_dumper():
    from celery.events.dumper import Dumper as CeleryDumper

    events = _golden_events()
    assert {e["type"] for e in events} >= {"worker-online", "task-received", "task-succeeded"}
    clock = LamportClock()
    processed = [event_from_message(dict(e), clock)[1] for e in events]
    theirs_out = io.StringIO()
    theirs = CeleryDumper(out=theirs_out)
    for ev in processed:
        theirs.on_event(dict(ev))
    ours = Dumper()
    assert [ours.format(ev) for ev in processed] == theirs_out.getvalue().splitlines()


def test_dump_line_without_fields_keeps_celerys_trailing_space():
    line = Dumper().format({"type": "worker-offline", "hostname": "h", "timestamp": 0.0})
    assert line == "h [1970-01-01 00:00:00+00:00] shutdown "


# -- camera -----------------------------------------------------------------------------------


def test_rates():
    assert parse_rate("10/m") == pytest.approx(10 / 60)
    assert parse_rate("5") == 5.0
    assert parse_rate(None) == 0.0
    with pytest.raises(ConfigurationError):
        parse_rate("ten/s")
    bucket = TokenBucket(rate=0.0, capacity=1)
    assert bucket.can_consume() is True
    assert bucket.can_consume() is False  # no refill at rate 0


async def test_camera_shoots_async_and_clears_after():
    class State:
        cleared = 0

        def clear(self):
            self.cleared += 1

    shots: list[Any] = []
    shot = asyncio.Event()

    class Cam(Camera):
        clear_after = True

        async def on_shutter(self, state):
            shots.append(state)
            shot.set()

    state = State()
    async with Cam(state, freq=0.01) as cam:
        await asyncio.wait_for(shot.wait(), 5)
    assert shots[0] is state
    assert cam.shots == len(shots) >= 2  # the timer's, plus the last one on close
    assert state.cleared == cam.shots


async def test_camera_maxrate_limits_shots():
    cam = Camera(object(), maxrate="1/h")
    await cam.capture()
    await cam.capture()
    assert cam.shots == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"freq": 0}, {"freq": -1.0}, {"freq": float("nan")}, {"freq": float("inf")},
     {"cleanup_freq": 0}, {"maxrate": "-1/s"}, {"maxrate": "inf"}, {"maxrate": -3}],
)  # fmt: skip
def test_camera_refuses_intervals_and_rates_that_would_spin_or_never_fire(kwargs):
    with pytest.raises(ConfigurationError):
        Camera(object(), **kwargs)


class _ClosedPipe(Camera):
    def on_shutter(self, state: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")


async def test_camera_timer_ends_on_a_closed_output_and_says_so():
    """`--camera` into `| head`: the shutter cannot succeed again; wait()/aclose() raise it
    instead of logging one error per shot forever."""
    cam = _ClosedPipe(object(), freq=0.01)
    await cam.start()
    with pytest.raises(BrokenPipeError):
        await asyncio.wait_for(cam.wait(), 5)
    with pytest.raises(BrokenPipeError):
        await cam.aclose()


def test_exchange_used_is_celeryev():
    assert names.event_exchange() == Exchange("celeryev", ExchangeKind.TOPIC, True, False)
