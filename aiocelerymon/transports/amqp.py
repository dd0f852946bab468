"""RabbitMQ adapter (aio-pika / aiormq), declaring exactly what kombu's ``pyamqp`` transport does.

One AMQP connection per transport. Each subscription gets its own channel, so a 405/406 that
closes one channel leaves the others consuming; publishes and their exchange declares use two
more (one each, so a refused declare cannot fail publishes in flight), reopened after a refusal
closed them. The connection is plain ``aio_pika.connect`` (not the robust variant):
:class:`~aiocelerymon.transports.base.TransportBase` owns reconnection, replay and generations.
Driver exceptions never leave this module; :func:`_map_error` turns them into the library's.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import contextvars
import datetime
import decimal
import functools
import logging
import os
import socket
import ssl as _ssl
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import aio_pika
import aiormq.connection
import aiormq.exceptions as amqp_errors
from aio_pika.abc import ConnectionParameter
from pamqp import commands as spec
from pamqp.exceptions import PAMQPException

from aiocelerymon._url import BrokerURL, parse_url
from aiocelerymon._version import __version__
from aiocelerymon.exceptions import (
    AuthenticationError,
    BrokerRefusedError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    ResourceLockedError,
    TransportError,
    TransportTimeoutError,
)
from aiocelerymon.transports.base import Received, SubscriptionBase, TransportBase
from aiocelerymon.wire.entities import PROPERTY_NAMES, Binding, Delivery, Exchange, Message
from aiocelerymon.wire.names import to_milliseconds

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    import aiormq
    import aiormq.abc
    from aio_pika.abc import AbstractChannel

__all__ = ["AmqpTransport", "build_ssl_context", "encode_properties", "queue_arguments"]

#: True in the tasks of our own connections (aiormq's reader tasks inherit it from _open).
_OURS: contextvars.ContextVar[bool] = contextvars.ContextVar("aiocelerymon_amqp", default=False)
#: aiormq's ERROR lines for what our base class already reports once per outage (a WARNING
#: "connection ... lost", then nothing per failed attempt until "reconnected").
_REPORTED_BY_US: Final = (
    "error when creating transport",
    "Unexpected connection close from remote",
    "Cancelling cause reader exited abnormally",  # WARNING, with the same close as traceback
)


class _QuietForOurConnections(logging.Filter):
    """Demote aiormq's lines about an outage we report ourselves to DEBUG, for our connections.

    aiormq logs ``error when creating transport`` at ERROR on every failed connect, which
    would turn one broker outage into a line per retry, plus an ERROR and a WARNING with a
    traceback when the broker closes the connection. Other aio-pika users in the same
    process are untouched: the filter acts only where :data:`_OURS` is set.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            _OURS.get()
            and record.levelno > logging.DEBUG
            and isinstance(record.msg, str)
            and record.msg.startswith(_REPORTED_BY_US)
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("aiormq.connection").addFilter(_QuietForOurConnections())


class _HandshakeCloseSaysWhy:
    """aiormq's frame receiver during our handshakes: a ``Connection.Close`` answering
    ``Connection.Open`` raises with the broker's reply (``530 NOT_ALLOWED - vhost x not
    found``). aiormq checks the expected reply first and raises "Expected one of
    ['Connection.OpenOk'], got <Connection.Close object at 0x...>", which drops the reason."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def get_frame(self) -> Any:
        received = await self._inner.get_frame()
        frame = received[-1]
        # 403 ACCESS_REFUSED (bad credentials) keeps aiormq's own authentication error.
        if isinstance(frame, spec.Connection.Close) and frame.reply_code != 403:
            raise amqp_errors.ConnectionClosed(frame.reply_code, frame.reply_text)
        return received

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _install_handshake_reasons() -> None:
    """Wrap aiormq's handshake RPC, for our connections only (:data:`_OURS`)."""
    connection_class: Any = aiormq.connection.Connection
    original = getattr(connection_class, "_rpc", None)
    if original is None or getattr(original, "_aiocelerymon", False):
        return  # another aiormq layout: its own message stays

    async def rpc(*args: Any, **kwargs: Any) -> Any:
        if _OURS.get():
            if "frame_receiver" in kwargs:
                kwargs["frame_receiver"] = _HandshakeCloseSaysWhy(kwargs["frame_receiver"])
            elif len(args) >= 3:
                args = (*args[:2], _HandshakeCloseSaysWhy(args[2]), *args[3:])
        return await original(*args, **kwargs)

    rpc._aiocelerymon = True  # type: ignore[attr-defined]
    connection_class._rpc = staticmethod(rpc)


_install_handshake_reasons()

#: Seconds; kombu/py-amqp negotiate the broker's value, Celery workers use 120. 60 keeps a dead
#: TCP peer from going unnoticed for long without adding measurable traffic.
DEFAULT_HEARTBEAT = 60

#: Everything aiormq, aio-pika and pamqp raise at us; mapped by :func:`_map_error`.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    amqp_errors.AMQPError,
    PAMQPException,
    OSError,  # includes ConnectionError and TimeoutError
    RuntimeError,  # aiormq's "connection closed" and ChannelInvalidStateError
)

#: Driver class -> library class. :func:`_map_error` walks the exception's MRO and takes the
#: first hit, so the most specific entry wins (405 before the generic channel close, ...).
ERROR_TABLE: dict[type[BaseException], type[TransportError]] = {
    # Channel-level refusals: RabbitMQ closes the channel, the connection stays up.
    amqp_errors.ChannelLockedResource: ResourceLockedError,  # 405 RESOURCE_LOCKED
    amqp_errors.ChannelPreconditionFailed: BrokerRefusedError,  # 406 PRECONDITION_FAILED
    amqp_errors.ChannelNotFoundEntity: BrokerRefusedError,  # 404 NOT_FOUND
    amqp_errors.ChannelAccessRefused: BrokerRefusedError,  # 403 ACCESS_REFUSED
    amqp_errors.ChannelClosed: BrokerRefusedError,  # any other channel-level close code
    # Handshake refusals: 403 during Connection.StartOk, or no common SASL mechanism.
    amqp_errors.ProbableAuthenticationError: AuthenticationError,
    amqp_errors.AuthenticationError: AuthenticationError,
    # The channel or connection went away under the operation.
    amqp_errors.ChannelInvalidStateError: ConnectionLostError,
    amqp_errors.AMQPConnectionError: ConnectionLostError,
    amqp_errors.AMQPError: ConnectionLostError,
    PAMQPException: ConnectionLostError,
    TimeoutError: TransportTimeoutError,
    ConnectionError: ConnectionLostError,
    OSError: ConnectionLostError,
    RuntimeError: ConnectionLostError,
}

# Keys of Celery's ``broker_use_ssl``: py-amqp's spelling and the Redis-style ``ssl_`` one.
_SSL_KEYS = {
    "cert_reqs": "cert_reqs",
    "ssl_cert_reqs": "cert_reqs",
    "ca_certs": "ca_certs",
    "ssl_ca_certs": "ca_certs",
    "certfile": "certfile",
    "ssl_certfile": "certfile",
    "keyfile": "keyfile",
    "ssl_keyfile": "keyfile",
    "server_hostname": "server_hostname",
    "ssl_server_hostname": "server_hostname",
    "check_hostname": "check_hostname",
    "ssl_check_hostname": "check_hostname",
    "ciphers": "ciphers",
    "ssl_ciphers": "ciphers",
}

_CERT_REQS = {
    "none": _ssl.CERT_NONE,
    "cert_none": _ssl.CERT_NONE,
    "optional": _ssl.CERT_OPTIONAL,
    "cert_optional": _ssl.CERT_OPTIONAL,
    "required": _ssl.CERT_REQUIRED,
    "cert_required": _ssl.CERT_REQUIRED,
}


# -- pure helpers (unit-tested without a broker) ------------------------------------------------


def queue_arguments(binding: Binding) -> dict[str, int]:
    """``x-expires``/``x-message-ttl`` as integer milliseconds, only those that are set.

    kombu converts with ``int(float(s) * 1000)``; RabbitMQ compares argument values on every
    redeclare and refuses a float (``1.0e4`` vs ``10000``) with 406.
    """
    args: dict[str, int] = {}
    expires = to_milliseconds(binding.expires)
    if expires is not None:
        args["x-expires"] = expires
    ttl = to_milliseconds(binding.message_ttl)
    if ttl is not None:
        args["x-message-ttl"] = ttl
    return args


def _cert_reqs(value: Any) -> _ssl.VerifyMode:
    if isinstance(value, str):
        try:
            return _CERT_REQS[value.strip().lower()]
        except KeyError:
            raise ConfigurationError(
                f"unknown cert_reqs {value!r}; use CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED"
            ) from None
    try:
        return _ssl.VerifyMode(value)
    except ValueError:
        raise ConfigurationError(f"unknown cert_reqs {value!r}") from None


def build_ssl_context(
    options: bool | Mapping[str, Any] | None,
) -> tuple[_ssl.SSLContext, str | None]:
    """Map Celery's ``broker_use_ssl`` (True or a dict) to an SSL context and a server hostname.

    Without options the context verifies the broker's certificate and host name against the
    system CAs (Python's defaults). Unknown keys are refused rather than silently ignored: a
    dropped TLS option usually weakens security.
    """
    opts: dict[str, Any] = {}
    if isinstance(options, Mapping):
        for key, value in options.items():
            target = _SSL_KEYS.get(key)
            if target is None:
                raise ConfigurationError(
                    f"unsupported broker_use_ssl option {key!r}; supported: {sorted(_SSL_KEYS)}"
                )
            opts[target] = value
    context = _ssl.create_default_context(cafile=opts.get("ca_certs"))
    if "cert_reqs" in opts:
        reqs = _cert_reqs(opts["cert_reqs"])
        if reqs == _ssl.CERT_NONE:
            # Hostname checking needs a verified certificate; Python refuses the combination.
            context.check_hostname = False
        context.verify_mode = reqs
    if "check_hostname" in opts:
        context.check_hostname = bool(opts["check_hostname"])
    if opts.get("certfile"):
        context.load_cert_chain(opts["certfile"], opts.get("keyfile"))
    if opts.get("ciphers"):
        context.set_ciphers(opts["ciphers"])
    server_hostname = opts.get("server_hostname")
    return context, (str(server_hostname) if server_hostname else None)


def _reply_text(exc: BaseException) -> str:
    """The broker's reply text (``PRECONDITION_FAILED - ...``) or the OS error text."""
    if isinstance(exc, amqp_errors.AMQPError):
        parts = [str(a) for a in exc.args if a is not None and not isinstance(a, int)]
        if parts:
            return " ".join(parts)
        return repr(exc)
    return str(exc) or type(exc).__name__


def _map_error(
    exc: BaseException,
    action: str,
    *,
    connecting: bool = False,
    secret: str | None = None,
) -> TransportError:
    """The library error for a driver error, with ``__cause__`` set to it.

    ``action`` says what failed ("declaring exchange 'celeryev' on amqp://..."). While
    ``connecting`` every failure is a :class:`ConnectError` (or its :class:`AuthenticationError`).
    ``secret`` (the password) is scrubbed from the driver's text should it ever echo it; the
    ``action`` is ours and built from redacted URLs only.
    """
    cls: type[TransportError] = ConnectionLostError
    for klass in type(exc).__mro__:
        if klass in ERROR_TABLE:
            cls = ERROR_TABLE[klass]
            break
    if connecting and not issubclass(cls, ConnectError):
        cls = ConnectError
    detail = _reply_text(exc)
    if secret:
        detail = detail.replace(secret, "**")
    error = cls(f"{action}: {detail}")
    error.__cause__ = exc
    return error


def _text(value: Any) -> Any:
    # AMQP long strings that are not valid UTF-8 and byte arrays arrive as bytes/bytearray;
    # kombu hands headers to Celery as str, so decode whatever is UTF-8.
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def normalise_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers as plain Python values: UTF-8 bytes become str (recursively)."""
    if not headers:
        return {}
    for value in headers.values():
        if isinstance(value, bytes | bytearray | dict | list):
            return {k: _text(v) for k, v in headers.items()}
    return dict(headers)


# -- content properties, encoded as kombu's transport (py-amqp) does ----------------------------
#
# pamqp, which aiormq uses, encodes a Python float header as a 32-bit 'f' (an ``expires`` epoch
# like 1767225601.5 comes out as 1767225600.0), picks the smallest integer type ('b', 's', 'u':
# py-amqp before the kombu#2354 fix reads 's' as a short *string*), sorts table keys and omits
# empty strings; aiormq also stamps a random ``message_id`` on every publish. kombu sends none
# of that, so the property block is encoded here exactly as py-amqp does: doubles for floats,
# 'I'/'L' for ints, 'S' for str and bytes, insertion order, only the properties kombu sets.

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_U16 = struct.Struct(">H")

# Basic.Properties presence flags (AMQP 0-9-1, property order).
_FLAG_CONTENT_TYPE = 0x8000
_FLAG_CONTENT_ENCODING = 0x4000
_FLAG_HEADERS = 0x2000
_FLAG_DELIVERY_MODE = 0x1000
_FLAG_PRIORITY = 0x0800
#: The rest, in order: correlation_id, reply_to, expiration, message_id, timestamp, type,
#: user_id, app_id (each a shortstr but timestamp, a 64-bit integer).
_FLAG_OTHERS = tuple(zip(PROPERTY_NAMES, (0x0400 >> i for i in range(8)), strict=True))


def _shortstr(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ConfigurationError(f"{what} is longer than 255 bytes: {value[:40]!r}...")
    return _U8.pack(len(raw)) + raw


def _field_value(value: Any, out: list[bytes]) -> None:
    if isinstance(value, str | bytes | bytearray):
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
        out += (b"S", _U32.pack(len(raw)), raw)
    elif isinstance(value, bool):  # before int: bool is an int
        out += (b"t", _U8.pack(int(value)))
    elif isinstance(value, float):
        out += (b"d", _F64.pack(value))
    elif isinstance(value, int):
        if -(2**31) < value < 2**31:
            out += (b"I", _I32.pack(value))
        elif -(2**63) <= value < 2**63:
            out += (b"L", _I64.pack(value))
        else:
            raise ConfigurationError(f"header integer out of 64-bit range: {value}")
    elif value is None:
        out.append(b"V")
    elif isinstance(value, Mapping):
        out.append(b"F")
        out.append(_field_table(value))
    elif isinstance(value, list | tuple):
        items: list[bytes] = []
        for item in value:
            _field_value(item, items)
        payload = b"".join(items)
        out += (b"A", _U32.pack(len(payload)), payload)
    elif isinstance(value, decimal.Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):
            raise ConfigurationError(f"cannot send a non-finite decimal header: {value}")
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        out += (b"D", _U8.pack(-exponent), _I32.pack(unscaled))
    elif isinstance(value, datetime.datetime):
        out += (b"T", _U64.pack(calendar.timegm(value.utctimetuple())))
    else:
        raise ConfigurationError(f"cannot send a {type(value).__name__} in AMQP headers: {value!r}")


def _field_table(table: Mapping[str, Any]) -> bytes:
    out: list[bytes] = []
    for key, value in table.items():
        out.append(_shortstr(str(key), "header name"))
        try:
            _field_value(value, out)
        except struct.error as exc:
            raise ConfigurationError(f"header {key!r} cannot be encoded: {exc}") from None
    payload = b"".join(out)
    return _U32.pack(len(payload)) + payload


def encode_properties(message: Message) -> bytes:
    """The Basic.Properties block of ``message``, byte-identical to py-amqp's for kombu's fields.

    Raises:
        ConfigurationError: a header value AMQP cannot carry, or an over-long string.
    """
    flags = 0
    parts: list[bytes] = []
    if message.content_type is not None:
        flags |= _FLAG_CONTENT_TYPE
        parts.append(_shortstr(message.content_type, "content_type"))
    if message.content_encoding is not None:
        flags |= _FLAG_CONTENT_ENCODING
        parts.append(_shortstr(message.content_encoding, "content_encoding"))
    if message.headers is not None:
        flags |= _FLAG_HEADERS
        parts.append(_field_table(message.headers))
    try:
        if message.delivery_mode is not None:
            flags |= _FLAG_DELIVERY_MODE
            parts.append(_U8.pack(message.delivery_mode))
        if message.priority is not None:
            flags |= _FLAG_PRIORITY
            parts.append(_U8.pack(message.priority))
    except struct.error:
        raise ConfigurationError(
            f"delivery_mode and priority must be 0..255, got {message.delivery_mode!r} "
            f"and {message.priority!r}"
        ) from None
    others = message.properties
    for name, flag in _FLAG_OTHERS if others else ():
        value = others.get(name)
        if value is None:
            continue
        flags |= flag
        if name == "timestamp":
            try:
                parts.append(_U64.pack(int(value)))
            except (struct.error, TypeError, ValueError):
                raise ConfigurationError(f"timestamp must be 0..2**64-1, got {value!r}") from None
        else:
            parts.append(_shortstr(str(value), name))
    return _U16.pack(flags) + b"".join(parts)


def decode_properties(props: Any) -> dict[str, Any]:
    """The :data:`PROPERTY_NAMES` set on a received ``Basic.Properties``."""
    found: dict[str, Any] = {}
    for name in PROPERTY_NAMES:
        value = getattr(props, name, None)
        if value is None:
            continue
        if name == "timestamp" and isinstance(value, datetime.datetime):
            value = calendar.timegm(value.utctimetuple())
        found[name] = value
    return found


class _EncodedProperties(spec.Basic.Properties):
    """Basic.Properties that marshal to a block encoded up front by :func:`encode_properties`.

    pamqp's ContentHeader asks its properties to ``marshal()``; anything aiormq sets on this
    object afterwards (its ``message_id`` stamp, used only to match returned *mandatory*
    messages, which we never send) is deliberately not put on the wire.
    """

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self._encoded = encoded

    def marshal(self) -> bytes:
        return self._encoded


# -- driver glue --------------------------------------------------------------------------------


class _Connection(aio_pika.Connection):
    # aio-pika forwards only listed keyword parameters to aiormq; add ``server_hostname`` so
    # ``broker_use_ssl={"server_hostname": ...}`` reaches asyncio.open_connection (SNI + check).
    PARAMETERS = (
        *aio_pika.Connection.PARAMETERS,
        ConnectionParameter(name="server_hostname", parser=str, is_kwarg=True),
    )

    async def connect(self, timeout: Any = None) -> None:
        try:
            await super().connect(timeout)
        except BaseException:
            # aio-pika drops a Connection whose connect failed without closing it; its __del__
            # then creates a close() coroutine that never runs when the object is collected
            # off the event loop's thread (one RuntimeWarning per attempt during an outage).
            with contextlib.suppress(Exception):
                await self.close()
            raise


@dataclass(eq=False, slots=True)
class _SubState:
    """Driver state of one subscription on one connection (``sub.handle``)."""

    connection: aio_pika.Connection
    channel: AbstractChannel
    raw: aiormq.abc.AbstractChannel
    consumer_tag: str | None = None
    #: The queue was declared by us on this connection: deleting it cannot hit someone else's.
    declared: bool = False
    #: Consuming and not being torn down by us: a close now is unexpected.
    active: bool = False


class AmqpTransport(TransportBase):
    """Transport on RabbitMQ (``amqp://``, ``amqps://``, ``pyamqp://``).

    Transport options: ``heartbeat`` (seconds, 0 disables; default 60), ``confirm_publish``
    (wait for publisher confirms, as kombu's pyamqp option of that name; default False, like
    kombu) and ``connection_name`` (the ``connection_name`` client property, shown by
    ``rabbitmqctl list_connections client_properties``; unique per transport by default).
    """

    def __init__(
        self,
        url: BrokerURL | str,
        *,
        ssl: bool | Mapping[str, Any] | None = None,
        transport_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        parsed = parse_url(url)
        if parsed.transport != "amqp":
            raise ConfigurationError(f"not an AMQP URL: {parsed.redacted()}")
        super().__init__(parsed, transport_options=transport_options, **kwargs)
        #: The TLS context (``amqps://`` or ``ssl=True``/dict, as Celery's ``broker_use_ssl``),
        #: None for plain TCP; and the name to verify instead of the URL's host, if any.
        self.ssl_context: _ssl.SSLContext | None = None
        self.server_hostname: str | None = None
        if parsed.ssl or ssl:
            self.ssl_context, self.server_hostname = build_ssl_context(ssl)
        options = self.transport_options
        try:
            self._heartbeat = int(options.get("heartbeat", DEFAULT_HEARTBEAT))
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"heartbeat must be a number of seconds, got {options['heartbeat']!r}"
            ) from None
        self._confirm_publish = bool(options.get("confirm_publish", False))
        self.connection_name: str = str(
            options.get("connection_name")
            or f"aiocelerymon/{__version__} {socket.gethostname()} pid {os.getpid()} "
            f"{uuid.uuid4().hex[:8]}"
        )
        self._connection: aio_pika.Connection | None = None
        # Lazily opened per connection: "publish" (with confirms if asked) and "declare", so a
        # refused exchange declare cannot fail publishes in flight on the same channel.
        self._shared: dict[str, AbstractChannel] = {}
        self._shared_lock = asyncio.Lock()
        #: get(): one channel per queue; its unacknowledged messages are requeued by the
        #: broker when it (or the connection) closes.
        self._getters: dict[str, AbstractChannel] = {}
        # Exchanges declared on the current connection (kombu's maybe_declare cache is also
        # per connection); the full spec is the key so a differing redeclare still reaches
        # the broker and gets its 406.
        self._declared: set[Exchange] = set()
        # Exchange declares in flight for publishes: one per exchange, however many callers.
        self._declaring: dict[Exchange, asyncio.Future[None]] = {}

    # -- connection ------------------------------------------------------------------------

    async def _open(self) -> None:
        url = self.url
        tls = self.ssl_context is not None
        extra: dict[str, Any] = {}
        if tls and self.server_hostname:
            extra["server_hostname"] = self.server_hostname
        token = _OURS.set(True)  # copied into every task aiormq starts for this connection
        try:
            connection = await aio_pika.connect(
                host=url.hostname or "localhost",
                port=url.port or (5671 if tls else 5672),
                # kombu's defaults for a URL without credentials.
                login=url.username if url.username is not None else "guest",
                password=url.password if url.password is not None else "guest",
                virtualhost=url.virtual_host,
                ssl=tls,
                ssl_context=self.ssl_context,
                heartbeat=self._heartbeat,
                client_properties={"connection_name": self.connection_name},
                connection_class=_Connection,
                **extra,
            )
        except DRIVER_ERRORS as exc:
            raise _map_error(
                exc,
                f"cannot connect to {url.redacted()} as user {url.username or 'guest'!r}",
                connecting=True,
                secret=url.password,
            ) from exc
        finally:
            _OURS.reset(token)
        self._declared = set()
        self._shared = {}
        self._getters = {}
        self._connection = connection
        connection.close_callbacks.add(self._on_connection_closed)

    def _on_connection_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        # Fired for every close; ours are recognised because _close_connection forgets the
        # connection before closing it. A lost one stays referenced until the base's
        # reconnect loop calls _close_connection, which releases it properly.
        if sender is not None and sender is self._connection:
            self._connection_lost(exc or ConnectionLostError("connection closed by the broker"))

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        publisher = self._shared.get("publish")
        self._shared = {}
        self._getters = {}
        self._declared = set()
        self._declaring = {}
        if connection is None or connection.is_closed:
            return
        # Bounded: closing waits for the broker's Close-Ok, which a dead peer never sends.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.connect_timeout):
                if publisher is not None and not publisher.is_closed:
                    # Publishes leave their frames in aiormq's writer queue (wait=False), and a
                    # close right after could drop them: a cast such as `control shutdown`
                    # never arrived. A round trip on the same channel returns only once the
                    # broker has read what came before it (py-amqp, Celery's, writes at once).
                    raw = await publisher.get_underlay_channel()
                    await raw.basic_qos(prefetch_count=0)
                await connection.close()

    def _require_connection(self) -> aio_pika.Connection:
        connection = self._connection
        if connection is None or connection.is_closed or not connection.connected.is_set():
            raise ConnectionLostError(f"no open connection to {self.url.redacted()}")
        return connection

    def _error(self, exc: BaseException, action: str) -> TransportError:
        return _map_error(exc, f"{action} on {self.url.redacted()}", secret=self.url.password)

    async def _ensure_exchange(self, raw: aiormq.abc.AbstractChannel, exchange: Exchange) -> None:
        # The nameless default exchange cannot be declared (kombu skips it too).
        if not exchange.name or exchange in self._declared:
            return
        await raw.exchange_declare(
            exchange.name,
            exchange_type=exchange.kind.value,
            durable=exchange.durable,
            auto_delete=exchange.auto_delete,
            timeout=self.connect_timeout,
        )
        self._declared.add(exchange)

    # -- publish ---------------------------------------------------------------------------

    async def _shared_channel(
        self, connection: aio_pika.Connection, purpose: str
    ) -> aiormq.abc.AbstractChannel:
        channel = self._shared.get(purpose)
        if channel is None or channel.is_closed:
            async with self._shared_lock:
                channel = self._shared.get(purpose)
                if channel is None or channel.is_closed:
                    # Reopened after a refusal closed it; the connection itself is fine.
                    confirms = purpose == "publish" and self._confirm_publish
                    channel = connection.channel(publisher_confirms=confirms)
                    await channel.initialize(timeout=self.connect_timeout)
                    channel.close_callbacks.add(self._on_shared_closed)
                    self._shared[purpose] = channel
        return await channel.get_underlay_channel()

    def _on_shared_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        # A 404 NOT_FOUND on publish: an exchange we declared was deleted (or auto-deleted)
        # since. Forget what we declared so the next publish declares again.
        if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
            self._declared = set()

    async def _declare_for_publish(
        self, connection: aio_pika.Connection, exchange: Exchange
    ) -> None:
        """Declare ``exchange`` once however many publishes wait for it.

        Concurrent first publishes (1,000 calls at once) would otherwise each send an
        Exchange.Declare, one round trip after the other on the declare channel; and a caller
        cancelled mid-RPC makes aiormq close that channel under all the others. One shared,
        shielded declare per exchange avoids both.
        """
        pending = self._declaring.get(exchange)
        if pending is None:

            async def declare() -> None:
                declarer = await self._shared_channel(connection, "declare")
                await self._ensure_exchange(declarer, exchange)

            pending = asyncio.ensure_future(declare())
            self._declaring[exchange] = pending

            def done(task: asyncio.Future[None]) -> None:
                if self._declaring.get(exchange) is task:
                    del self._declaring[exchange]
                if not task.cancelled():
                    task.exception()  # retrieved: every waiter may have been cancelled

            pending.add_done_callback(done)
        await asyncio.shield(pending)

    async def _publish(self, message: Message, exchange: Exchange, routing_key: str) -> None:
        # Encoded first: a header AMQP cannot carry fails before anything is sent.
        properties = _EncodedProperties(encode_properties(message))
        connection = self._require_connection()
        step = f"declaring exchange {exchange.name!r} ({exchange.kind.value}, "
        step += f"durable={exchange.durable}, auto_delete={exchange.auto_delete})"
        try:
            if exchange.name and exchange not in self._declared:
                await self._declare_for_publish(connection, exchange)
            # aiormq's Channel, whose basic_publish takes ``wait`` (its abstract class lacks it).
            raw = cast("aiormq.Channel", await self._shared_channel(connection, "publish"))
            step = f"publishing to exchange {exchange.name!r} with routing key {routing_key!r}"
            # Never retried: a request that may have reached workers must not run twice.
            await raw.basic_publish(
                message.body,
                exchange=exchange.name,
                routing_key=routing_key,
                properties=properties,
                mandatory=False,
                # Bounded like every RPC: a broker that blocks publishers (memory alarm) or
                # never confirms must not hang the caller (the message may still arrive).
                timeout=self.connect_timeout,
                # Hand the frames to the connection's writer and go on: waiting for each
                # publish's own drain holds the channel lock for several loop iterations per
                # publish, which serialised 1,000 concurrent calls (half a second on an idle
                # machine, past their deadline on a busy one). The writer's queue is bounded
                # (aiormq FRAME_BUFFER_SIZE), so publishers still wait when it is full, and
                # confirms, if asked for, are still awaited.
                wait=False,
            )
        except DRIVER_ERRORS as exc:
            raise self._error(exc, step) from exc

    # -- subscribe -------------------------------------------------------------------------

    def _consumer(
        self, sub: SubscriptionBase
    ) -> Callable[[aiormq.abc.DeliveredMessage], Coroutine[Any, Any, None]]:
        feed = sub.feed

        # A coroutine function: aiormq schedules it as is (a plain function would get an extra
        # wrapper per message). Kept minimal, this runs for every event.
        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            props = message.header.properties
            deliver = cast("spec.Basic.Deliver", message.delivery)
            headers = props.headers
            feed(
                Delivery(
                    message.body,
                    props.content_type,
                    props.content_encoding,
                    normalise_headers(headers) if headers else {},
                    deliver.exchange or "",
                    deliver.routing_key or "",
                    props.delivery_mode,
                    props.priority,
                    sub.generation,
                )
            )

        return on_message

    async def _subscribe(self, sub: SubscriptionBase) -> None:
        connection = self._require_connection()
        binding = sub.binding
        exchange = binding.exchange
        step = f"opening a channel for queue {sub.queue!r}"
        # dict[str, Any]: the driver's field-table type is invariant in its values.
        arguments: dict[str, Any] = dict(queue_arguments(binding))
        sub.handle = None
        try:
            channel = connection.channel(publisher_confirms=False)
            await channel.initialize(timeout=self.connect_timeout)
            state = _SubState(connection, channel, await channel.get_underlay_channel())
            sub.handle = state
            channel.close_callbacks.add(functools.partial(self._on_sub_closed, state))
            step = f"declaring exchange {exchange.name!r} ({exchange.kind.value}, "
            step += f"durable={exchange.durable}, auto_delete={exchange.auto_delete})"
            await self._ensure_exchange(state.raw, exchange)
            step = (
                f"declaring queue {sub.queue!r} (durable={binding.durable}, "
                f"exclusive={binding.exclusive}, auto_delete={binding.auto_delete})"
            )
            # Marked before the reply: a caller cancelled while waiting for Declare-Ok must
            # still delete the queue the broker created (found by the cancellation tests).
            state.declared = True
            try:
                await state.raw.queue_declare(
                    sub.queue,
                    durable=binding.durable,
                    exclusive=binding.exclusive,
                    auto_delete=binding.auto_delete,
                    arguments=arguments or None,
                    timeout=self.connect_timeout,
                )
            except DRIVER_ERRORS:
                state.declared = False  # refused: the queue is not ours to delete
                raise
            if exchange.name:
                step = (
                    f"binding queue {sub.queue!r} to {exchange.name!r} by {binding.routing_key!r}"
                )
                await state.raw.queue_bind(
                    sub.queue,
                    exchange.name,
                    routing_key=binding.routing_key,
                    timeout=self.connect_timeout,
                )
            step = f"consuming from queue {sub.queue!r}"
            state.raw.on_consumer_cancel_callbacks.add(
                functools.partial(self._on_consumer_cancelled, state)
            )
            # no_ack like Celery's pidbox and event consumers: monitoring must never hold
            # messages unacknowledged (kombu Consumer(no_ack=True)).
            ok = await state.raw.basic_consume(
                sub.queue, self._consumer(sub), no_ack=True, timeout=self.connect_timeout
            )
            state.consumer_tag = ok.consumer_tag
            state.active = True
        except DRIVER_ERRORS as exc:
            raise self._error(exc, step) from exc

    def _on_sub_closed(self, state: _SubState, sender: Any, exc: BaseException | None) -> None:
        if state.active and state.connection is self._connection:
            state.active = False
            # A consumer channel closed under us (e.g. an operator deleted the queue with a
            # channel error). kombu treats consumer-side channel errors as recoverable
            # connection errors and reconnects; we do the same: reconnect and replay.
            self._connection_lost(exc or ConnectionLostError("consumer channel closed"))

    def _on_consumer_cancelled(self, state: _SubState, frame: spec.Basic.Cancel) -> None:
        if frame.consumer_tag != state.consumer_tag:
            return
        if state.active and state.connection is self._connection:
            state.active = False
            # The broker cancelled our consumer (queue deleted, node down). py-amqp raises
            # ConsumerCancelled, a RecoverableConnectionError, and Celery reconnects: same here.
            self._connection_lost(
                ConnectionLostError(f"broker cancelled consumer {frame.consumer_tag!r}")
            )

    async def _unsubscribe(self, sub: SubscriptionBase) -> None:
        state = sub.handle
        if not isinstance(state, _SubState):
            return
        sub.handle = None
        # Not active: _subscribe was interrupted (cancelled mid-RPC), and aiormq is closing
        # that channel under us; clean up on a fresh one.
        interrupted, state.active = not state.active, False
        if state.connection is not self._connection or state.connection.is_closed:
            return  # the channel died with its connection, and exclusive queues with it
        binding = sub.binding
        step = f"cancelling the consumer of {sub.queue!r}"
        cleanup: AbstractChannel | None = None
        try:
            raw = state.raw
            if state.consumer_tag is not None and not raw.is_closed and not interrupted:
                await raw.basic_cancel(state.consumer_tag, timeout=self.connect_timeout)
            # Only queues the broker would drop anyway are deleted, promptly; a durable
            # non-auto-delete queue is a pipeline that must survive us.
            if state.declared and (binding.exclusive or binding.auto_delete):
                step = f"deleting queue {sub.queue!r}"
                if raw.is_closed or interrupted:
                    cleanup = state.connection.channel(publisher_confirms=False)
                    await cleanup.initialize(timeout=self.connect_timeout)
                    raw = await cleanup.get_underlay_channel()
                # A shared (non-exclusive) queue may have other consumers: leave it to them.
                await raw.queue_delete(
                    sub.queue, if_unused=not binding.exclusive, timeout=self.connect_timeout
                )
        except DRIVER_ERRORS as exc:
            raise self._error(exc, step) from exc
        finally:
            for channel in (state.channel, cleanup):
                if channel is not None and not channel.is_closed:
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await channel.close()

    # -- task queues -------------------------------------------------------------------------

    async def _on_queue(self, name: str, action: str, passive_declare: bool) -> Any:
        """Run a passive declare or a purge on a channel of its own: a 404 for a missing queue
        closes the channel, which must not be a shared one."""
        connection = self._require_connection()
        step = f"{action} queue {name!r}"
        channel = connection.channel(publisher_confirms=False)
        try:
            await channel.initialize(timeout=self.connect_timeout)
            raw = await channel.get_underlay_channel()
            if passive_declare:
                return await raw.queue_declare(name, passive=True, timeout=self.connect_timeout)
            return await raw.queue_purge(name, timeout=self.connect_timeout)
        except amqp_errors.ChannelNotFoundEntity:
            return None
        except DRIVER_ERRORS as exc:
            raise self._error(exc, step) from exc
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*DRIVER_ERRORS):
                    await channel.close()

    async def _queue_depth(self, name: str) -> tuple[int, int | None] | None:
        # kombu's queue_declare(passive=True), as `rabbitmqctl list_queues` would show it.
        ok = await self._on_queue(name, "passively declaring", passive_declare=True)
        return None if ok is None else (int(ok.message_count), int(ok.consumer_count))

    async def _getter(self, queue: str) -> AbstractChannel:
        channel = self._getters.get(queue)
        if channel is None or channel.is_closed:
            connection = self._require_connection()
            channel = connection.channel(publisher_confirms=False)
            await channel.initialize(timeout=self.connect_timeout)
            self._getters[queue] = channel
        return channel

    async def _get(self, queue: str) -> Received | None:
        step = f"getting a message from queue {queue!r}"
        try:
            channel = await self._getter(queue)
            raw = await channel.get_underlay_channel()
            message = await raw.basic_get(queue, no_ack=False, timeout=self.connect_timeout)
        except amqp_errors.ChannelNotFoundEntity:
            self._getters.pop(queue, None)
            return None
        except DRIVER_ERRORS as exc:
            raise self._error(exc, step) from exc
        frame = message.delivery
        if not isinstance(frame, spec.Basic.GetOk):
            return None  # Basic.GetEmpty
        props = message.header.properties
        delivery = Delivery(
            message.body,
            props.content_type,
            props.content_encoding,
            normalise_headers(props.headers) if props.headers else {},
            frame.exchange or "",
            frame.routing_key or "",
            props.delivery_mode,
            props.priority,
            0,
            decode_properties(props),
            bool(frame.redelivered),
        )
        tag = int(frame.delivery_tag or 0)

        async def settle(ack: bool) -> None:
            if channel.is_closed:
                if ack:
                    # The broker has requeued it: it will come again (a duplicate, not a loss).
                    raise ConnectionLostError(
                        f"channel of {queue!r} closed before the ack: the message was requeued"
                    )
                return
            try:
                if ack:
                    await raw.basic_ack(tag)
                else:
                    await raw.basic_nack(tag, requeue=True)
            except DRIVER_ERRORS as exc:
                raise self._error(exc, f"settling a message of queue {queue!r}") from exc

        return Received(delivery, settle)

    async def _ensure_queue(self, name: str) -> None:
        if await self._queue_depth(name) is not None:
            return
        connection = self._require_connection()
        channel = connection.channel(publisher_confirms=False)
        try:
            await channel.initialize(timeout=self.connect_timeout)
            raw = await channel.get_underlay_channel()
            # kombu's Queue defaults (Celery's task_default_queue).
            await raw.queue_declare(
                name, durable=True, exclusive=False, auto_delete=False,
                timeout=self.connect_timeout,
            )  # fmt: skip
        except DRIVER_ERRORS as exc:
            raise self._error(exc, f"declaring queue {name!r}") from exc
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*DRIVER_ERRORS):
                    await channel.close()

    async def _purge_queue(self, name: str) -> int | None:
        # queue.purge removes ready messages only; unacknowledged ones stay with their consumer.
        ok = await self._on_queue(name, "purging", passive_declare=False)
        return None if ok is None else int(ok.message_count)
