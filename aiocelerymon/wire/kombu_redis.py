"""kombu's Redis wire format, pure: envelopes, channel names, binding sets, list keys.

Matches ``kombu/transport/redis.py`` and ``kombu/transport/virtual/base.py`` from kombu 4.6 to
5.7 (shared/reference/celery-wire-protocol.md §3). Names inside envelopes and binding members are
never prefixed; every Redis key and pub/sub channel gets ``global_keyprefix`` in front.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from bisect import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiocelerymon.exceptions import ConfigurationError, DecodeError
from aiocelerymon.wire import codec
from aiocelerymon.wire.entities import PROPERTY_NAMES, Delivery, Message

_b64decode: Callable[..., bytes]
try:
    # SIMD base64 (optional, in the ``redis`` extra): a 24-event task.multi body decodes in
    # ~1 µs instead of ~38 µs for the stdlib's validating path. Same results and errors.
    from pybase64 import b64decode as _b64decode
except ImportError:  # pragma: no cover - pybase64 is in the redis extra; tests patch _b64decode
    _b64decode = base64.b64decode

__all__ = [
    "PRIORITY_STEPS",
    "SEP",
    "RedisNaming",
    "decode_envelope",
    "encode_envelope",
]

#: kombu's binding-member separator (transport option ``sep``).
SEP = "\x06\x16"
#: kombu's default ``priority_steps``: one list key per step, step 0 being the plain queue name.
PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True, slots=True)
class RedisNaming:
    """Key and channel names for one Redis db and set of ``broker_transport_options``."""

    db: int = 0
    fanout_prefix: bool | str = True
    fanout_patterns: bool = True
    global_keyprefix: str = ""
    sep: str = SEP
    priority_steps: tuple[int, ...] = PRIORITY_STEPS

    @classmethod
    def from_options(cls, db: int, options: Mapping[str, Any] | None = None) -> RedisNaming:
        """Build from Celery's ``broker_transport_options`` (unknown keys are ignored)."""
        opts = dict(options or {})
        steps = tuple(sorted(int(s) for s in opts.get("priority_steps", PRIORITY_STEPS)))
        if not steps or steps[0] != 0:
            raise ConfigurationError("priority_steps must start at 0")
        prefix = opts.get("fanout_prefix", True)
        if not isinstance(prefix, (bool, str)):
            raise ConfigurationError("fanout_prefix must be a bool or a string")
        return cls(
            db=db,
            fanout_prefix=prefix,
            fanout_patterns=bool(opts.get("fanout_patterns", True)),
            global_keyprefix=str(opts.get("global_keyprefix") or ""),
            sep=str(opts.get("sep", SEP)),
            priority_steps=steps,
        )

    # -- keys --------------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """A Redis key or channel with ``global_keyprefix`` applied."""
        return self.global_keyprefix + name

    @property
    def channel_prefix(self) -> str:
        """``/{db}.`` by default; ``''`` with ``fanout_prefix=False``; or a custom format."""
        if self.fanout_prefix is True:
            return f"/{self.db}."
        if self.fanout_prefix is False:
            return ""
        # kombu formats a custom prefix with the db (fixed for Sentinel in kombu 5.4.0).
        return self.fanout_prefix.format(db=self.db)

    def publish_channel(self, exchange: str, routing_key: str = "") -> str:
        """The channel a fanout/topic publish goes to (``/0.celeryev/task.multi``)."""
        topic = self.channel_prefix + exchange
        if routing_key and self.fanout_patterns:
            topic += "/" + routing_key
        return self.key(topic)

    def subscribe_patterns(self, exchange: str, routing_key: str = "") -> tuple[str, ...]:
        """PSUBSCRIBE patterns for a binding; AMQP ``#`` becomes glob ``*``.

        A catch-all binding (``#``) also listens on the bare channel, which is where publishers
        send with ``fanout_patterns=False`` (only one of them ever carries a given message).
        """
        base = self.channel_prefix + exchange
        if not routing_key or not self.fanout_patterns:
            return (self.key(base),)
        pattern = self.key(base + "/" + routing_key.replace("#", "*"))
        if routing_key == "#":
            return (pattern, self.key(base))
        return (pattern,)

    def binding_key(self, exchange: str) -> str:
        """The set of bindings of a (direct/topic) exchange: ``_kombu.binding.<exchange>``."""
        return self.key(f"_kombu.binding.{exchange}")

    def binding_member(self, routing_key: str, queue: str, pattern: str = "") -> str:
        """``<rk><sep><pattern><sep><queue>``; the pattern is empty for direct exchanges."""
        return self.sep.join((routing_key, pattern, queue))

    def parse_member(self, member: str) -> tuple[str, str, str]:
        """Split a binding member into ``(routing_key, pattern, queue)``."""
        parts = member.split(self.sep)
        if len(parts) != 3:
            raise DecodeError(f"malformed binding member {member!r}")
        return parts[0], parts[1], parts[2]

    #: kombu 5.7: ``ZADD GT`` of an exchange's deadline, swept when it passes.
    @property
    def deadlines_key(self) -> str:
        """The sorted set of binding-table deadlines used by kombu 5.7."""
        return self.key("_kombu.binding_deadlines")

    def permanent_key(self, exchange: str) -> str:
        """kombu 5.7's set of bindings that never expire."""
        return self.key(f"_kombu.binding_permanent.{exchange}")

    def priority_step(self, priority: int) -> int:
        """Largest step <= priority, priority clamped to 0..9 (kombu ``Channel.priority``)."""
        priority = max(0, min(9, int(priority)))
        return self.priority_steps[bisect(self.priority_steps, priority) - 1]

    def queue_key(self, queue: str, priority: int = 0) -> str:
        """The list key a message of ``priority`` is pushed to."""
        step = self.priority_step(priority)
        return self.key(f"{queue}{self.sep}{step}" if step else queue)

    def queue_keys(self, queue: str) -> tuple[str, ...]:
        """All list keys of a queue, in BRPOP order (lowest step first = consumed first)."""
        return tuple(
            self.key(f"{queue}{self.sep}{step}" if step else queue) for step in self.priority_steps
        )


def encode_envelope(
    message: Message,
    *,
    exchange: str,
    routing_key: str,
    delivery_tag: str | None = None,
) -> bytes:
    """kombu's JSON envelope for PUBLISH payloads and LPUSH items.

    ``properties.delivery_tag`` is always present: Celery <= 5.6 workers exit with
    ``KeyError('delivery_tag')`` on an envelope without it.
    """
    envelope = {
        "body": base64.b64encode(message.body).decode("ascii"),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": dict(message.headers),
        "properties": {
            "delivery_mode": message.delivery_mode,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": message.priority,
            "body_encoding": "base64",
            "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    }
    if message.properties:
        # kombu keeps correlation_id, reply_to, ... next to its own keys (Message.properties).
        props = envelope["properties"]
        assert isinstance(props, dict)
        for name in PROPERTY_NAMES:
            value = message.properties.get(name)
            if value is not None:
                props[name] = value
    return codec.dumps(envelope)


def decode_envelope(raw: bytes | str, *, generation: int = 0) -> Delivery:
    """Parse a kombu envelope into a :class:`Delivery`.

    Raises:
        DecodeError: not JSON, not an object, no string ``body``, or bad base64.
    """
    env = codec.loads(raw)
    if not isinstance(env, dict):
        raise DecodeError(f"envelope is a JSON {type(env).__name__}, not an object")
    body = env.get("body")
    props = env.get("properties")
    headers = env.get("headers")
    props = {} if props is None else props
    headers = {} if headers is None else headers
    if not isinstance(props, dict) or not isinstance(headers, dict):
        raise DecodeError("envelope properties and headers must be objects")
    content_encoding = env.get("content-encoding")
    if isinstance(body, str):
        if props.get("body_encoding") == "base64":
            try:
                data = _b64decode(body, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DecodeError(f"envelope body is not valid base64: {exc}") from exc
        else:
            # kombu leaves a plain body as text; it is encoded with the declared encoding.
            try:
                data = body.encode(content_encoding or "utf-8")
            except (LookupError, UnicodeEncodeError) as exc:
                raise DecodeError(f"cannot encode body as {content_encoding!r}") from exc
    elif body is None:
        raise DecodeError("envelope has no body")
    else:
        # A JSON body embedded as an object/array (not produced by kombu, but unambiguous).
        data = codec.dumps(body)
    info = props.get("delivery_info") or {}
    if not isinstance(info, dict):
        info = {}
    return Delivery(
        body=data,
        content_type=_opt_str(env.get("content-type")),
        content_encoding=_opt_str(content_encoding),
        headers=headers,
        exchange=str(info.get("exchange") or ""),
        routing_key=str(info.get("routing_key") or ""),
        delivery_mode=_opt_int(props.get("delivery_mode")),
        priority=_opt_int(props.get("priority")),
        generation=generation,
        properties={n: props[n] for n in PROPERTY_NAMES if props.get(n) is not None},
    )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
