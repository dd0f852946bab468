"""Record what a real Celery worker and CLI put on the wire, as golden files.

Run from a virtual environment with exactly one Celery version installed::

    PYTHONPATH=. python -m tests.golden.capture --out tests/unit/wire/golden

It starts its own Redis and RabbitMQ (tests/support/brokers.py), a real worker
(tests/support/celery_worker.py) and the real ``celery`` CLI of that venv, and writes one JSON
document per captured message to ``<out>/<broker>/celery-<version>/<name>.json``.

Nothing is reconstructed: Redis traffic is recorded with PSUBSCRIBE (pub/sub payloads) and MONITOR
(every command, unescaped back to the exact bytes); AMQP traffic with RabbitMQ's firehose
(``amq.rabbitmq.trace``), whose property tables are decoded here with their AMQP type tags so
header *types* are golden too. Ids, clocks and timestamps stay as captured.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.support import brokers
from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env, celery_worker

WORKER = "worker1@golden"
ADD_TASK = "tests.integration.celery_app.add"
WAIT = 20.0  # seconds to wait for any one expected message


# --------------------------------------------------------------------------------------------
# Shared plumbing


@dataclass
class Record:
    """One captured item: a pub/sub message, a MONITOR command or a firehose message."""

    phase: str
    time: float
    kind: str  # "pubsub" | "command" | "amqp"
    data: dict[str, Any]


@dataclass
class Recorder:
    """Thread-safe list of records, tagged with the scenario phase current at capture time."""

    phase: str = "setup"
    records: list[Record] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, kind: str, data: dict[str, Any]) -> None:
        with self.cond:
            self.records.append(Record(self.phase, time.time(), kind, data))
            self.cond.notify_all()

    def wait_for(
        self, what: str, predicate: Callable[[Record], bool], timeout: float = WAIT
    ) -> Record:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for record in self.records:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"nothing captured for: {what}")
                self.cond.wait(remaining)

    def select(self, predicate: Callable[[Record], bool]) -> list[Record]:
        with self.cond:
            return [r for r in self.records if predicate(r)]


def versions() -> dict[str, str]:
    names = ["celery", "kombu", "amqp", "redis"]
    return {name: metadata.version(name) for name in names}


def run_celery(args: list[str], config: dict[str, Any], timeout: float = 60) -> str:
    """Run this venv's ``celery -A tests.integration.celery_app <args>``; return stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP_MODULE, *args],
        cwd=REPO_ROOT,
        env=celery_env(config),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"celery {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def tcp_ports_of_group(pgid: int) -> set[int]:
    """Local TCP ports of every process in group ``pgid`` (labels who sent what)."""
    inodes: set[str] = set()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc_dir.name)) != pgid:
                continue
            for fd in (proc_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Labels:
    """Maps a client's local TCP port to who it is: worker, capture, or (else) client CLI."""

    worker: set[int] = field(default_factory=set)
    capture: set[int] = field(default_factory=set)

    def of(self, port: int | None) -> str:
        if port is None:
            return "server"
        if port in self.worker:
            return "worker"
        if port in self.capture:
            return "capture"
        return "client"


def write_doc(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # ensure_ascii keeps the files ASCII; \u0006\u0016 separators stay visible and exact.
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=True) + "\n")


def event_types(body: Any) -> list[str]:
    items = body if isinstance(body, list) else [body]
    return [item.get("type", "?") for item in items if isinstance(item, dict)]


# --------------------------------------------------------------------------------------------
# Redis: PSUBSCRIBE + MONITOR

_MONITOR_LINE = re.compile(rb"^(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$", re.DOTALL)
_SIMPLE_ESCAPES = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("a"): b"\a",
    ord("b"): b"\b",
    ord('"'): b'"',
    ord("\\"): b"\\",
}


def parse_monitor_args(text: bytes) -> list[bytes]:
    """Undo MONITOR's quoting (``"arg" "arg"`` with C-style and ``\\xHH`` escapes)."""
    args: list[bytes] = []
    i = 0
    while i < len(text):
        if text[i] == ord(" "):
            i += 1
            continue
        if text[i] != ord('"'):
            raise ValueError(f"unexpected MONITOR text at {i}: {text[i : i + 40]!r}")
        i += 1
        out = bytearray()
        while text[i] != ord('"'):
            if text[i] == ord("\\"):
                nxt = text[i + 1]
                if nxt == ord("x"):
                    out.append(int(text[i + 2 : i + 4], 16))
                    i += 4
                    continue
                out += _SIMPLE_ESCAPES[nxt]
                i += 2
                continue
            out.append(text[i])
            i += 1
        args.append(bytes(out))
        i += 1
    return args


def _text(value: bytes) -> str:
    # Everything Celery sends here is ASCII/UTF-8; keep exact text (escapes appear in JSON).
    return value.decode("utf-8", errors="surrogateescape")


class RedisCapture:
    """PSUBSCRIBEs to pidbox/event channels and runs MONITOR, each on its own connection."""

    PATTERNS = (b"/0.celery.pidbox", b"/0.celeryev/*", b"/0.celeryev")

    def __init__(self, url: str, recorder: Recorder, labels: Labels) -> None:
        import redis

        self.recorder = recorder
        self.labels = labels
        self.stop = threading.Event()
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(*self.PATTERNS)
        # Wait for the three psubscribe confirmations so nothing published later is missed.
        confirmed = 0
        deadline = time.monotonic() + WAIT
        while confirmed < len(self.PATTERNS) and time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=1.0)
            if message and message["type"] == "psubscribe":
                confirmed += 1
        pubsub_sock = self.pubsub.connection._sock
        labels.capture.add(pubsub_sock.getsockname()[1])
        parsed = self.client.connection_pool.connection_kwargs
        self.monitor = socket.create_connection((parsed["host"], parsed["port"]), timeout=WAIT)
        labels.capture.add(self.monitor.getsockname()[1])
        self.monitor.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self._monitor_buffer = b""
        first = self._monitor_line()
        if first != b"+OK":
            raise RuntimeError(f"MONITOR refused: {first!r}")
        self.monitor.settimeout(0.2)
        self.threads = [
            threading.Thread(target=self._pubsub_loop, daemon=True),
            threading.Thread(target=self._monitor_loop, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _monitor_line(self) -> bytes | None:
        while b"\r\n" not in self._monitor_buffer:
            try:
                chunk = self.monitor.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("MONITOR connection closed")
            self._monitor_buffer += chunk
        line, self._monitor_buffer = self._monitor_buffer.split(b"\r\n", 1)
        return line

    def _monitor_loop(self) -> None:
        while not self.stop.is_set():
            line = self._monitor_line()
            if line is None:
                continue
            match = _MONITOR_LINE.match(line[1:])  # drop the "+" of the simple string
            if match is None:
                continue
            stamp, db, addr, rest = match.groups()
            port = None if addr == b"lua" else int(addr.rsplit(b":", 1)[1])
            self.recorder.add(
                "command",
                {
                    "monitor_time": stamp.decode(),
                    "db": int(db),
                    "addr": addr.decode(),
                    "port": port,
                    "args": parse_monitor_args(rest),
                },
            )

    def _pubsub_loop(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "pmessage":
                continue
            self.recorder.add(
                "pubsub",
                {
                    "pattern": message["pattern"],
                    "channel": message["channel"],
                    "data": message["data"],
                },
            )

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        self.pubsub.close()
        self.client.close()
        self.monitor.close()


def _envelope_doc(envelope: bytes) -> dict[str, Any]:
    """The exact envelope text plus a derived, base64-decoded body for convenience."""
    doc: dict[str, Any] = {"envelope": _text(envelope)}
    try:
        parsed = json.loads(envelope)
        body = parsed["body"]
        if parsed.get("properties", {}).get("body_encoding") == "base64":
            body = _text(base64.b64decode(body))
        doc["body_text"] = body
    except (ValueError, KeyError, TypeError):
        pass
    return doc


def _redis_body(record: Record) -> Any:
    """Deserialized body of a pub/sub record or LPUSH command (for classification only)."""
    envelope = record.data["data"] if record.kind == "pubsub" else record.data["args"][2]
    parsed = json.loads(envelope)
    body = parsed["body"]
    if parsed["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return json.loads(body)


def _command_doc(record: Record, labels: Labels) -> dict[str, Any]:
    return {
        "phase": record.phase,
        "sender": "lua" if record.data["addr"] == "lua" else labels.of(record.data["port"]),
        "monitor_time": record.data["monitor_time"],
        "db": record.data["db"],
        "args": [_text(a) for a in record.data["args"]],
    }


def capture_redis(out: Path) -> list[Path]:
    """Run the scenario against Redis; returns the files written."""
    recorder = Recorder()
    labels = Labels()
    with brokers.redis_server() as server:
        url = server.url_for(0)
        capture = RedisCapture(url, recorder, labels)
        try:
            events_dump = run_scenario(url, recorder, labels, entities=None)
        finally:
            capture.close()
        info = subprocess.run(
            ["redis-cli", "-u", url, "INFO", "server"], capture_output=True, text=True, check=False
        ).stdout
    server_version = re.search(r"redis_version:(\S+)", info)
    meta_base = {
        **versions(),
        "broker": "redis",
        "server": f"Redis {server_version.group(1) if server_version else '?'}",
        "python": sys.version.split()[0],
        "captured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    target = out / "redis" / f"celery-{metadata.version('celery')}"
    written: list[Path] = []

    def emit(name: str, trigger: str, how: str, payload: dict[str, Any]) -> None:
        path = target / f"{name}.json"
        write_doc(path, {"meta": {**meta_base, "trigger": trigger, "captured_by": how}, **payload})
        written.append(path)

    pubsub = recorder.select(lambda r: r.kind == "pubsub")
    commands = recorder.select(lambda r: r.kind == "command")

    def pub_doc(record: Record) -> dict[str, Any]:
        return {
            "channel": _text(record.data["channel"]),
            "pattern": _text(record.data["pattern"]),
            **_envelope_doc(record.data["data"]),
        }

    # -- pidbox requests (PUBLISH on /0.celery.pidbox)
    requests = {
        "ping": "celery inspect ping -t 2 (broadcast)",
        "ping-destination": f"celery inspect ping -d {WORKER} -t 2",
        "events-receiver": "celery events --dump (its wake-up `heartbeat` broadcast)",
    }
    names = {
        "ping": "ping-request",
        "ping-destination": "ping-request-destination",
        "events-receiver": "heartbeat-request",
    }
    for phase, trigger in requests.items():
        for record in pubsub:
            if record.phase == phase and record.data["channel"] == b"/0.celery.pidbox":
                emit(names[phase], trigger, "PSUBSCRIBE /0.celery.pidbox", pub_doc(record))
                break

    # -- pidbox replies (worker LPUSH onto the client's reply list)
    for phase, name in (("ping", "ping-reply"), ("ping-destination", "ping-reply-destination")):
        for record in commands:
            args = record.data["args"]
            if (
                record.phase == phase
                and args[0].upper() == b"LPUSH"
                and args[1].endswith(b".reply.celery.pidbox")
            ):
                emit(
                    name,
                    requests[phase],
                    "MONITOR (worker's LPUSH)",
                    {
                        "command": _text(args[0]),
                        "key": _text(args[1]),
                        "sender": labels.of(record.data["port"]),
                        **_envelope_doc(args[2]),
                    },
                )
                break

    # -- the client's reply binding and the full command sequence of the broadcast ping
    ping_cmds = [
        r for r in commands if r.phase == "ping" and labels.of(r.data["port"]) != "capture"
    ]
    binding_cmds = [
        r
        for r in ping_cmds
        if any(b"_kombu.binding" in a for a in r.data["args"])
        or r.data["args"][0].upper() in (b"EVALSHA", b"EVAL", b"SCRIPT")
    ]
    sadd = next((r for r in binding_cmds if r.data["args"][0].upper() == b"SADD"), None)
    if sadd is not None:
        member = sadd.data["args"][2]
        emit(
            "reply-binding",
            requests["ping"],
            "MONITOR",
            {
                "key": _text(sadd.data["args"][1]),
                "member": _text(member),
                "member_hex": member.hex(),
                "sadd_sender": "lua"
                if sadd.data["addr"] == "lua"
                else labels.of(sadd.data["port"]),
                "commands": [_command_doc(r, labels) for r in binding_cmds],
            },
        )
    emit(
        "ping-commands",
        requests["ping"],
        "MONITOR (all connections except the capture's)",
        {
            "commands": [_command_doc(r, labels) for r in ping_cmds],
        },
    )

    # -- worker start-up commands that touch bindings/subscriptions, and the event receiver's
    def setup_cmds(phase: str, sender: str) -> list[dict[str, Any]]:
        keep = (b"SADD", b"EVALSHA", b"EVAL", b"PSUBSCRIBE", b"SUBSCRIBE", b"ZADD", b"SCRIPT")
        return [
            _command_doc(r, labels)
            for r in commands
            if r.phase == phase
            and r.data["args"][0].upper() in keep
            and _command_doc(r, labels)["sender"] in (sender, "lua")
        ]

    emit(
        "worker-startup-commands",
        f"celery worker -n {WORKER} -E (start)",
        "MONITOR (SADD/EVAL*/ZADD/SCRIPT/[P]SUBSCRIBE from the worker)",
        {"commands": setup_cmds("worker-start", "worker")},
    )
    emit(
        "events-receiver-commands",
        requests["events-receiver"],
        "MONITOR (SADD/EVAL*/ZADD/SCRIPT/[P]SUBSCRIBE from the receiver)",
        {"commands": setup_cmds("events-receiver", "client")},
    )

    # -- events (PUBLISH on /0.celeryev/<routing key>)
    _emit_events(
        [(r, _redis_body(r)) for r in pubsub if r.data["channel"].startswith(b"/0.celeryev")],
        lambda r: pub_doc(r),
        emit,
        how="PSUBSCRIBE /0.celeryev/* and /0.celeryev",
    )
    emit("events-dump", requests["events-receiver"], "stdout of the CLI", events_dump)
    return written


# --------------------------------------------------------------------------------------------
# AMQP: the RabbitMQ firehose, with a type-preserving AMQP table decoder

_FIXED = {
    "t": ">?",
    "b": ">b",
    "B": ">B",
    "s": ">h",
    "u": ">H",
    "I": ">i",
    "i": ">I",
    "l": ">q",
    "L": ">Q",
    "f": ">f",
    "d": ">d",
    "T": ">Q",
}


def decode_field(buf: bytes, pos: int) -> tuple[Any, Any, int]:
    """Decode one AMQP field value at ``pos``: (value, type tag or nested tags, next pos)."""
    tag = chr(buf[pos])
    pos += 1
    if tag in _FIXED:
        fmt = _FIXED[tag]
        (value,) = struct.unpack_from(fmt, buf, pos)
        return value, tag, pos + struct.calcsize(fmt)
    if tag == "D":
        scale = buf[pos]
        (raw,) = struct.unpack_from(">i", buf, pos + 1)
        return str(Decimal(raw).scaleb(-scale)), tag, pos + 5
    if tag in "Sx":
        (size,) = struct.unpack_from(">I", buf, pos)
        data = buf[pos + 4 : pos + 4 + size]
        return (_text(data) if tag == "S" else data.hex()), tag, pos + 4 + size
    if tag == "F":
        return decode_table(buf, pos)
    if tag == "A":
        (size,) = struct.unpack_from(">I", buf, pos)
        pos += 4
        end = pos + size
        values: list[Any] = []
        tags: list[Any] = []
        while pos < end:
            value, vtag, pos = decode_field(buf, pos)
            values.append(value)
            tags.append(vtag)
        return values, tags, end
    if tag == "V":
        return None, tag, pos
    raise ValueError(f"unknown AMQP field type {tag!r}")


def decode_table(buf: bytes, pos: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Decode an AMQP field table: (values, type tags by key, next pos)."""
    (size,) = struct.unpack_from(">I", buf, pos)
    pos += 4
    end = pos + size
    values: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    while pos < end:
        klen = buf[pos]
        key = _text(buf[pos + 1 : pos + 1 + klen])
        values[key], tags[key], pos = decode_field(buf, pos + 1 + klen)
    return values, tags, end


def trace_headers(raw_properties: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The headers table of a firehose message, from its raw property flags + list."""
    (flags,) = struct.unpack_from(">H", raw_properties, 0)
    pos = 2
    for bit in (15, 14):  # content_type, content_encoding (short strings) precede headers
        if flags & (1 << bit):
            pos += 1 + raw_properties[pos]
    if not flags & (1 << 13):
        return {}, {}
    values, tags, _ = decode_table(raw_properties, pos)
    return values, tags


class AmqpCapture:
    """Consumes ``amq.rabbitmq.trace`` (binding ``publish.#``) with py-amqp, in a thread."""

    def __init__(self, server: brokers.RabbitServer, recorder: Recorder, labels: Labels) -> None:
        import amqp  # type: ignore[import-untyped]
        from amqp import serialization

        original = serialization.GenericContent.inbound_header

        # py-amqp decodes tables into plain Python values and drops the type tags; keep the
        # raw property bytes so decode_table() can report them.
        def inbound_header(self: Any, buf: Any, offset: int = 0) -> Any:
            self._raw_properties = bytes(buf[offset + 12 :])
            return original(self, buf, offset)

        serialization.GenericContent.inbound_header = inbound_header

        server.rabbitmqctl("trace_on")
        self.recorder = recorder
        self.stop = threading.Event()
        netloc = server.url.split("@", 1)[1].split("/", 1)[0]
        self.connection = amqp.Connection(host=netloc, userid="guest", password="guest")
        self.connection.connect()
        labels.capture.add(self.connection.sock.getsockname()[1])
        self.channel = self.connection.channel()
        queue, _, _ = self.channel.queue_declare(queue="", exclusive=True)
        self.queue: str = queue
        self.channel.queue_bind(queue, exchange="amq.rabbitmq.trace", routing_key="publish.#")
        self.channel.basic_consume(queue, callback=self._on_message, no_ack=True)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _on_message(self, message: Any) -> None:
        headers, tags = trace_headers(message._raw_properties)
        self.recorder.add("amqp", {"headers": headers, "tags": tags, "body": bytes(message.body)})

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.connection.drain_events(timeout=0.2)
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.connection.close()


def _amqp_port(record: Record) -> int | None:
    # Firehose header "connection": "127.0.0.1:54321 -> 127.0.0.1:5672".
    match = re.match(r"[^:]+:(\d+) ->", str(record.data["headers"].get("connection", "")))
    return int(match.group(1)) if match else None


def _amqp_doc(record: Record, labels: Labels) -> dict[str, Any]:
    headers, tags = record.data["headers"], record.data["tags"]
    return {
        "sender": labels.of(_amqp_port(record)),
        "exchange": headers.get("exchange_name"),
        "routing_keys": headers.get("routing_keys"),
        "properties": headers.get("properties"),
        "properties_types": tags.get("properties"),
        "routed_queues": headers.get("routed_queues"),
        "body": _text(record.data["body"]),
    }


class EntityProbe:
    """Snapshots exchanges/queues/bindings with rabbitmqctl while a CLI command runs."""

    QUEUE_COLUMNS = ("name", "durable", "auto_delete", "exclusive", "arguments")

    def __init__(self, server: brokers.RabbitServer, ignore_queue: str) -> None:
        self.server = server
        # The capture's own firehose queue is not Celery's; leave it out of the listings.
        self.ignore_queue = ignore_queue
        self.snapshots: dict[str, Any] = {}

    def _list(self, *args: str) -> Any:
        text = self.server.rabbitmqctl(*args, "--formatter", "json", "--quiet")
        return json.loads(text)

    def snapshot_while(self, label: str, proc: subprocess.Popen[str], want: str) -> None:
        """List queues repeatedly until one whose name contains ``want`` shows up."""
        best: list[Any] = []
        while proc.poll() is None:
            queues = self._list("list_queues", *self.QUEUE_COLUMNS)
            if any(want in q["name"] for q in queues):
                best = queues
                break
        bindings = self._list(
            "list_bindings",
            "source_name",
            "source_kind",
            "destination_name",
            "destination_kind",
            "routing_key",
            "arguments",
        )
        self.snapshots[label] = {
            "queues": [q for q in best if q["name"] != self.ignore_queue],
            "bindings": [b for b in bindings if b["destination_name"] != self.ignore_queue],
        }

    def exchanges(self) -> Any:
        return self._list(
            "list_exchanges", "name", "type", "durable", "auto_delete", "internal", "arguments"
        )


def capture_amqp(out: Path) -> list[Path]:
    """Run the scenario against RabbitMQ; returns the files written."""
    recorder = Recorder()
    labels = Labels()
    with brokers.rabbit_server() as server:
        if not server.owned:
            raise SystemExit("the AMQP capture needs a broker it starts itself (unset the URL)")
        capture = AmqpCapture(server, recorder, labels)
        probe = EntityProbe(server, ignore_queue=capture.queue)
        try:
            events_dump = run_scenario(server.url, recorder, labels, entities=probe)
            exchanges = probe.exchanges()
        finally:
            capture.close()
        server_version = server.rabbitmqctl("version").strip()
    meta_base = {
        **versions(),
        "broker": "amqp",
        "server": f"RabbitMQ {server_version}",
        "python": sys.version.split()[0],
        "captured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    target = out / "amqp" / f"celery-{metadata.version('celery')}"
    written: list[Path] = []

    def emit(name: str, trigger: str, how: str, payload: dict[str, Any]) -> None:
        path = target / f"{name}.json"
        write_doc(path, {"meta": {**meta_base, "trigger": trigger, "captured_by": how}, **payload})
        written.append(path)

    how = "RabbitMQ firehose (amq.rabbitmq.trace, publish.#)"
    messages = recorder.select(lambda r: r.kind == "amqp")

    def exchange_of(record: Record) -> str:
        return str(record.data["headers"].get("exchange_name"))

    requests = {
        "ping": "celery inspect ping -t 2 (broadcast)",
        "ping-destination": f"celery inspect ping -d {WORKER} -t 2",
        "events-receiver": "celery events --dump (its wake-up `heartbeat` broadcast)",
    }
    names = {
        "ping": "ping-request",
        "ping-destination": "ping-request-destination",
        "events-receiver": "heartbeat-request",
    }
    for phase, trigger in requests.items():
        for record in messages:
            if record.phase == phase and exchange_of(record) == "celery.pidbox":
                emit(names[phase], trigger, how, _amqp_doc(record, labels))
                break
    for phase, name in (("ping", "ping-reply"), ("ping-destination", "ping-reply-destination")):
        for record in messages:
            if record.phase == phase and exchange_of(record) == "reply.celery.pidbox":
                emit(name, requests[phase], how, _amqp_doc(record, labels))
                break
    _emit_events(
        [(r, json.loads(r.data["body"])) for r in messages if exchange_of(r) == "celeryev"],
        lambda r: _amqp_doc(r, labels),
        emit,
        how=how,
    )
    emit(
        "entities",
        "inspect ping / events --dump in progress",
        "rabbitmqctl --formatter json",
        {
            "exchanges": exchanges,
            "during ping (reply queue present)": probe.snapshots.get("ping"),
            "during events --dump (receiver queue present)": probe.snapshots.get("events-receiver"),
        },
    )
    emit("events-dump", requests["events-receiver"], "stdout of the CLI", events_dump)
    return written


# --------------------------------------------------------------------------------------------
# The scenario (identical on both brokers)


def _emit_events(
    items: list[tuple[Record, Any]],
    doc: Callable[[Record], dict[str, Any]],
    emit: Callable[[str, str, str, dict[str, Any]], None],
    how: str,
) -> None:
    """Pick the interesting event messages and write them (task.multi numbered in order)."""

    def only(event_type: str, **fields: Any) -> Callable[[Record, Any], bool]:
        def predicate(record: Record, body: Any) -> bool:
            return (
                isinstance(body, dict)
                and body.get("type") == event_type
                and all(body.get(k) == v for k, v in fields.items())
            )

        return predicate

    wanted = [
        ("worker-online", "worker start", only("worker-online")),
        ("worker-heartbeat", "heartbeat timer (freq 2.0)", only("worker-heartbeat", freq=2.0)),
        (
            "worker-heartbeat-requested",
            "`heartbeat` control broadcast by celery events",
            only("worker-heartbeat", freq=5),
        ),
        (
            "task-sent",
            f"celery call {ADD_TASK} (client with task_send_sent_event=True)",
            only("task-sent"),
        ),
        ("worker-offline", "worker warm shutdown (SIGTERM)", only("worker-offline")),
    ]
    for name, trigger, predicate in wanted:
        for record, body in items:
            if predicate(record, body):
                emit(name, trigger, how, doc(record))
                break
    batches = [(r, b) for r, b in items if isinstance(b, list)]
    for index, (record, body) in enumerate(batches, start=1):
        name = "task-multi" if index == 1 else f"task-multi-{index}"
        trigger = f"worker running {ADD_TASK}(2, 3): {', '.join(event_types(body))}"
        emit(name, trigger, how, doc(record))


def run_scenario(
    url: str, recorder: Recorder, labels: Labels, entities: EntityProbe | None
) -> dict[str, Any]:
    """Worker start, heartbeat, two pings, one task, an event receiver, worker stop.

    Returns the ``celery events --dump`` output (as a golden document payload).
    """
    config = {"broker_url": url}
    recorder.phase = "worker-start"
    with celery_worker(url, WORKER, events=True, timeout=60) as worker:
        recorder.wait_for("worker-online", lambda r: _is_event(r, "worker-online"))
        labels.worker |= tcp_ports_of_group(worker.pid)
        recorder.phase = "heartbeat"
        recorder.wait_for(
            "worker-heartbeat",
            lambda r: r.phase == "heartbeat" and _is_event(r, "worker-heartbeat"),
        )

        for phase, extra in (("ping", []), ("ping-destination", ["-d", WORKER])):
            recorder.phase = phase
            proc = _popen_celery(["inspect", "ping", "-t", "2", "--json", *extra], config)
            if entities is not None and phase == "ping":
                entities.snapshot_while("ping", proc, ".reply.celery.pidbox")
            stdout, _ = proc.communicate(timeout=60)
            if json.loads(stdout or "{}") != {WORKER: {"ok": "pong"}}:
                raise RuntimeError(f"unexpected ping result {stdout!r}\n{worker.log()}")
            labels.worker |= tcp_ports_of_group(worker.pid)

        recorder.phase = "task"
        run_celery(["call", ADD_TASK, "--args", "[2, 3]"], {**config, "task_send_sent_event": True})
        recorder.wait_for("task-succeeded", lambda r: _is_event(r, "task-succeeded"))
        time.sleep(0.5)  # let any trailing batch arrive before the next phase label

        recorder.phase = "events-receiver"
        proc = _popen_celery(["events", "--dump"], config)
        try:
            if entities is not None:
                entities.snapshot_while("events-receiver", proc, "celeryev.")
            recorder.wait_for(
                "heartbeat after the receiver's wake-up",
                lambda r: r.phase == "events-receiver" and _is_event(r, "worker-heartbeat"),
            )
            time.sleep(1.0)  # the dumper prints what it received
        finally:
            proc.terminate()
            stdout, _ = proc.communicate(timeout=30)
        labels.worker |= tcp_ports_of_group(worker.pid)
        recorder.phase = "worker-stop"
    recorder.wait_for("worker-offline", lambda r: _is_event(r, "worker-offline"))
    return {"stdout_lines": stdout.splitlines()}


def _popen_celery(args: list[str], config: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", APP_MODULE, *args],
        cwd=REPO_ROOT,
        env=celery_env(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _is_event(record: Record, event_type: str) -> bool:
    """True if ``record`` is an event message containing an event of ``event_type``."""
    try:
        if record.kind == "pubsub":
            if not record.data["channel"].startswith(b"/0.celeryev"):
                return False
            body = _redis_body(record)
        elif record.kind == "amqp":
            if record.data["headers"].get("exchange_name") != "celeryev":
                return False
            body = json.loads(record.data["body"])
        else:
            return False
    except (ValueError, KeyError, TypeError):
        return False
    return event_type in event_types(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests/unit/wire/golden")
    parser.add_argument("--broker", choices=["redis", "amqp", "all"], default="all")
    options = parser.parse_args(argv)
    written: list[Path] = []
    if options.broker in ("redis", "all"):
        written += capture_redis(options.out)
    if options.broker in ("amqp", "all"):
        written += capture_amqp(options.out)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
