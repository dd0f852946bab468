"""End-to-end event ingestion (broker -> decode -> State): ours vs Celery's Receiver + State.

Both sides get the same stream (``benchmarks/streams.py``: the same task ids and fields; the
timestamps are taken when each side's copy is built), as envelopes built with our wire encoders
(byte-for-byte what Celery workers send, see the golden tests). Two streams:

* **batched**: worker task events (received/started/succeeded) from 4 workers in ``task.multi``
  lists of 24, no ``task-sent``: a loaded cluster.
* **singles**: ``task-sent`` on, and every event its own message (a quiet cluster, and the worst
  case for message count).

Each consumer runs in its own subprocess (``python -m benchmarks.ingest consume ...``) and measures
itself: events that arrived, wall time from the first event to the end marker, and CPU time
(``time.process_time``) of that process over the same span. So the CPU figure is the consuming
process only; the broker and the producer are elsewhere.

* **RabbitMQ**: a durable, non-exclusive event queue ``celeryev.<node>`` bound to ``celeryev`` by
  ``#`` (declared exactly as Celery's receiver declares it with ``event_queue_durable=True``,
  ``event_queue_exclusive=False``, no TTL/expiry), pre-filled with the whole stream, then drained.
  Each side gets its own queue filled with the same messages.
* **Redis**: the consumer subscribes; once the pattern is live (``PUBSUB NUMPAT``) a separate
  process publishes the stream at full speed. Redis pub/sub drops what a subscriber cannot take
  (and disconnects one whose output buffer passes its limit), so we count what arrived.

The stream ends with a ``worker-offline`` event from ``bench@end``; both sides stop on it (or
after ``IDLE`` seconds without events when it was dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aiocelerymon.wire.entities import Message
from aiocelerymon.wire.event import event, event_message
from aiocelerymon.wire.kombu_redis import encode_envelope
from benchmarks.streams import WORKERS, task_events

BATCH = 24
END_HOST = "bench@end"
#: Seconds without an event after which a consumer gives up waiting for the end marker.
IDLE = 3.0
MAX_TASKS = 100_000


# -- the streams ------------------------------------------------------------------------------


def stream(kind: str, tasks: int) -> list[tuple[str, Message]]:
    """``(routing_key, message)`` pairs of one stream, ending with the end marker."""
    out: list[tuple[str, Message]] = []
    if kind == "batched":
        pending: dict[str, list[dict[str, Any]]] = {}
        for _, ev in task_events(tasks, sent=False):
            batch = pending.setdefault(ev["hostname"], [])
            batch.append(ev)
            if len(batch) == BATCH:
                out.append(("task.multi", event_message(batch, ev["hostname"])))
                pending[ev["hostname"]] = []
        for host, batch in pending.items():
            if batch:
                out.append(("task.multi", event_message(batch, host)))
    elif kind == "singles":
        for rk, ev in task_events(tasks, sent=True):
            out.append((rk, event_message(ev, ev["hostname"])))
    else:
        raise ValueError(kind)
    end = event("worker-offline", hostname=END_HOST, clock=10**9, freq=2.0, sw_ident="bench")
    out.append(("worker.offline", event_message(end, END_HOST)))
    return out


def _shape(kind: str, tasks: int) -> tuple[int, int]:
    """``(events, messages)`` of :func:`stream`, without building it (end marker included)."""
    if kind == "singles":
        events = tasks * 4
        return events + 1, events + 1
    per_worker = [len(range(w, tasks, WORKERS)) * 3 for w in range(WORKERS)]
    return tasks * 3 + 1, sum(-(-n // BATCH) for n in per_worker) + 1


# -- consumers (each in its own subprocess) ---------------------------------------------------


class _Meter:
    """Counts events; remembers wall and CPU time of the first and the last one."""

    def __init__(self) -> None:
        self.events = self.stamped = 0
        self.first_wall = self.first_cpu = self.last_wall = self.last_cpu = 0.0

    def first(self) -> None:
        self.first_wall, self.first_cpu = time.perf_counter(), time.process_time()

    def last(self) -> None:
        self.last_wall, self.last_cpu = time.perf_counter(), time.process_time()
        self.stamped = self.events

    def result(self, **extra: Any) -> dict[str, Any]:
        # Rates use the events up to the last stamp (after an idle end that is a bit earlier).
        return {
            "events": self.events,
            "timed_events": self.stamped,
            "seconds": max(self.last_wall - self.first_wall, 1e-9),
            "cpu": max(self.last_cpu - self.first_cpu, 1e-9),
            **extra,
        }


def _consume_ours(url: str, node_id: str) -> dict[str, Any]:
    from aiocelerymon import Client
    from aiocelerymon.events.state import State

    state = State(max_tasks_in_memory=MAX_TASKS)
    meter = _Meter()
    feed = state.event

    async def main() -> dict[str, Any]:
        async with Client(
            url,
            event_queue_durable=True,
            event_queue_exclusive=False,
            event_queue_ttl=None,
            event_queue_expires=None,
        ) as client:
            receiver = client.events.receiver(handlers={"*": feed}, node_id=node_id)
            print("ready", flush=True)
            async for ev in receiver.itercapture(wakeup=False, timeout=None):
                if meter.events == 0:
                    meter.first()
                meter.events += 1
                if ev["hostname"] == END_HOST:
                    break
                if meter.events % 4096 == 0:
                    meter.last()
            meter.last()
            return meter.result(malformed=receiver.malformed, tasks=len(state.tasks))

    async def guarded() -> dict[str, Any]:
        task = asyncio.ensure_future(main())
        # The end marker may be dropped (Redis): stop IDLE seconds after the last event.
        seen = -1
        while not task.done():
            await asyncio.wait([task], timeout=IDLE)
            if not task.done() and meter.events == seen:
                task.cancel()
            seen = meter.events
        return task.result() if not task.cancelled() else meter.result(ended="idle")

    return asyncio.run(guarded())


def _consume_celery(url: str, node_id: str) -> dict[str, Any]:
    from celery import Celery
    from celery.events.state import State

    app = Celery("bench", broker=url, set_as_current=False)
    app.conf.update(
        event_queue_durable=True,
        event_queue_exclusive=False,
        event_queue_ttl=None,
        event_queue_expires=None,
    )
    state = State(max_tasks_in_memory=MAX_TASKS)
    meter = _Meter()
    feed = state.event
    extra: dict[str, Any] = {}
    with app.connection_for_read() as conn:
        holder: list[Any] = []

        def on_event(ev: dict[str, Any]) -> None:
            if meter.events == 0:
                meter.first()
            meter.events += 1
            feed(ev)
            if ev["hostname"] == END_HOST:
                holder[0].should_stop = True
            elif meter.events % 4096 == 0:
                meter.last()

        recv = app.events.Receiver(conn, handlers={"*": on_event}, node_id=node_id)
        holder.append(recv)
        recv.on_consume_ready = lambda *a, **k: print("ready", flush=True)
        try:
            recv.capture(limit=None, timeout=IDLE, wakeup=False)
            meter.last()
        except TimeoutError:
            extra["ended"] = "idle"  # the last event was stamped before the idle wait
        except Exception as exc:  # e.g. Redis dropped us: client-output-buffer-limit
            meter.last()
            extra["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return meter.result(tasks=len(state.tasks), **extra)


# -- producers --------------------------------------------------------------------------------


def _publish_redis(url: str, kind: str, tasks: int) -> None:
    """Publish the stream on Redis pub/sub at full speed (own process).

    Every PUBLISH is packed before the first is sent, then the whole lot goes out in large
    writes and the replies are read at the end: the publisher costs next to nothing, so the
    consumer (or redis-server) is what limits the rate.
    """
    import redis

    from aiocelerymon.wire.kombu_redis import RedisNaming

    naming = RedisNaming()
    commands = [
        (
            "PUBLISH",
            naming.publish_channel("celeryev", rk),
            encode_envelope(m, exchange="celeryev", routing_key=rk),
        )
        for rk, m in stream(kind, tasks)
    ]
    client = redis.Redis.from_url(url)
    conn = client.connection_pool.get_connection()
    try:
        chunks = [
            conn.pack_commands(commands[start : start + 512])
            for start in range(0, len(commands), 512)
        ]
        for chunk in chunks:
            conn.send_packed_command(chunk)
        for _ in commands:
            conn.read_response()
    finally:
        client.connection_pool.release(conn)
        client.close()


def _prefill_amqp(url: str, node_id: str, messages: list[tuple[str, Message]]) -> None:
    """Declare the event queue as Celery's receiver would (durable variant) and fill it."""
    from kombu import Connection, Exchange, Producer, Queue

    exchange = Exchange("celeryev", type="topic")
    queue = Queue(
        f"celeryev.{node_id}",
        exchange=exchange,
        routing_key="#",
        durable=True,
        auto_delete=False,
        exclusive=False,
    )
    with Connection(url) as conn:
        channel = conn.channel()
        bound = queue(channel)
        bound.declare()
        bound.purge()
        producer = Producer(channel, exchange=exchange)
        for rk, m in messages:
            producer.publish(
                m.body,
                routing_key=rk,
                content_type=m.content_type,
                content_encoding=m.content_encoding,
                headers=dict(m.headers),
                delivery_mode=1,
            )
        deadline = time.monotonic() + 60
        while bound.queue_declare(passive=True).message_count < len(messages):
            if time.monotonic() > deadline:
                raise RuntimeError("RabbitMQ never held the whole pre-filled stream")
            time.sleep(0.05)
        channel.close()


def _delete_amqp_queue(url: str, node_id: str) -> None:
    from kombu import Connection

    with Connection(url) as conn:
        conn.default_channel.queue_delete(f"celeryev.{node_id}")


# -- orchestration ----------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ingest", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _await_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"consumer did not start: {line!r}")


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"consumer failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _numpat(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.pubsub_numpat())
    finally:
        client.close()


@contextlib.contextmanager
def _unlimited_pubsub_buffer(url: str) -> Iterator[None]:
    """Let Redis buffer whatever a subscriber has not read yet (default: drop it past 32 MB),
    and put the server's setting back afterwards (the ping rows run on the same server).

    A full-speed publisher of 24-event batches (~13 KB each) outruns any Python consumer, and
    with the default ``client-output-buffer-limit`` Redis then disconnects both sides within
    a second, so the rows would measure the limit rather than the consumers.
    """
    import redis

    client = redis.Redis.from_url(url)
    try:
        before = client.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
        client.config_set("client-output-buffer-limit", "pubsub 0 0 0")
        yield
    finally:
        with contextlib.suppress(NameError):
            client.config_set("client-output-buffer-limit", before)
        client.close()


def _run_redis(url: str, side: str, kind: str, tasks: int) -> dict[str, Any]:
    before = _numpat(url)
    consumer = _spawn("consume", side, url, f"bench-{side}-{uuid.uuid4().hex[:8]}")
    try:
        _await_ready(consumer)
        deadline = time.monotonic() + 30
        while _numpat(url) <= before:  # both receivers PSUBSCRIBE once the loop polls
            if time.monotonic() > deadline:
                raise RuntimeError("consumer never subscribed")
            time.sleep(0.01)
        publisher = _spawn("publish", url, kind, str(tasks))
        publisher.wait(timeout=300)
        return _finish(consumer)
    finally:
        if consumer.poll() is None:
            consumer.kill()


def _run_amqp(url: str, side: str, kind: str, tasks: int) -> dict[str, Any]:
    node_id = f"bench-{side}-{uuid.uuid4().hex[:8]}"
    # Built now, so event timestamps are recent when drained (no clock-drift warnings).
    _prefill_amqp(url, node_id, stream(kind, tasks))
    consumer = _spawn("consume", side, url, node_id)
    try:
        _await_ready(consumer)
        return _finish(consumer)
    finally:
        if consumer.poll() is None:
            consumer.kill()
        _delete_amqp_queue(url, node_id)


def _row(
    label: str, sent: int, ours: dict[str, Any], theirs: dict[str, Any]
) -> list[dict[str, Any]]:
    def rate(r: dict[str, Any]) -> float:
        return float(r["timed_events"] / r["seconds"])

    def busy(r: dict[str, Any]) -> float:
        return float(r["cpu"] / r["seconds"])

    def cpu(r: dict[str, Any]) -> float:
        return float(r["cpu"] / max(r["timed_events"], 1) * 1e6)

    # A consumer busy well under 100% of the time was waiting for input (publisher/broker bound).
    notes = [f"CPU busy: ours {busy(ours):.0%}, Celery {busy(theirs):.0%}"]
    for who, r in (("ours", ours), ("Celery", theirs)):
        if r["events"] < sent:
            notes.append(f"{who} got {r['events']:,} of {sent:,}")
        if "error" in r:
            notes.append(f"{who}: {r['error']}")
    note = "; ".join(notes)
    return [
        {"name": f"ingest {label}", "unit": "events/s", "ours": rate(ours),
         "theirs": rate(theirs), "note": note, "raw": {"ours": ours, "theirs": theirs}},
        {"name": f"ingest {label}, CPU per event (lower is better)", "unit": "µs",
         "ours": cpu(ours), "theirs": cpu(theirs), "ratio": cpu(theirs) / cpu(ours)},
    ]  # fmt: skip


def sizes(quick: bool) -> dict[str, int]:
    """Tasks per stream (batched: 3 events a task; singles: 4)."""
    return {"batched": 10_000 if quick else 66_667, "singles": 2_500 if quick else 15_000}


def run(
    *, quick: bool = False, redis_url: str | None = None, amqp_url: str | None = None
) -> list[dict[str, Any]]:
    """Rows for the brokers given (URLs of running servers)."""
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if redis_url:
            stack.enter_context(_unlimited_pubsub_buffer(redis_url))
        for kind, tasks in sizes(quick).items():
            rows += _kind_rows(kind, tasks, redis_url, amqp_url)
    return rows


def _kind_rows(
    kind: str, tasks: int, redis_url: str | None, amqp_url: str | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sent, messages = _shape(kind, tasks)
    label = f"{kind}, {sent:,} events in {messages:,} messages"
    if redis_url:
        ours = _run_redis(redis_url, "ours", kind, tasks)
        theirs = _run_redis(redis_url, "celery", kind, tasks)
        rows += _row(f"Redis {label}", sent, ours, theirs)
    if amqp_url:
        ours = _run_amqp(amqp_url, "ours", kind, tasks)
        theirs = _run_amqp(amqp_url, "celery", kind, tasks)
        rows += _row(f"RabbitMQ {label}", sent, ours, theirs)
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("consume")
    c.add_argument("side", choices=["ours", "celery"])
    c.add_argument("url")
    c.add_argument("node_id")
    p = sub.add_parser("publish")
    p.add_argument("url")
    p.add_argument("kind")
    p.add_argument("tasks", type=int)
    args = parser.parse_args()
    if args.cmd == "consume":
        consume = _consume_ours if args.side == "ours" else _consume_celery
        profile = os.environ.get("BENCH_PROFILE")  # a file: cProfile the consumer into it
        if profile:
            import cProfile

            with cProfile.Profile() as prof:
                result = consume(args.url, args.node_id)
            prof.dump_stats(f"{profile}.{args.side}")
        else:
            result = consume(args.url, args.node_id)
        print(json.dumps(result), flush=True)
    else:
        _publish_redis(args.url, args.kind, args.tasks)


if __name__ == "__main__":
    _main()
