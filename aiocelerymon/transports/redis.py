"""Redis adapter: kombu's ``redis`` virtual transport, spoken with redis.asyncio.

Fanout and topic exchanges are Redis pub/sub: ``PUBLISH`` to ``[pfx]/{db}.<exchange>[/<rk>]`` and
``PSUBSCRIBE`` on one pub/sub connection shared by every such subscription, read by one task.
Direct exchanges are kombu's emulation: the publisher reads the binding set
``_kombu.binding.<exchange>`` and ``LPUSH``es to one list per priority step of each matching
queue, which its consumer drains with ``BRPOP`` on a connection of its own.
(shared/reference/celery-wire-protocol.md §3; names and envelopes in ``wire/kombu_redis.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl as _ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import hiredis
import redis.exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.credentials import UsernamePasswordCredentialProvider

from aiocelerymon._url import BrokerURL, parse_url
from aiocelerymon.exceptions import (
    AuthenticationError,
    BrokerRefusedError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    DecodeError,
    NotAQueueError,
    TransportError,
)
from aiocelerymon.transports.base import Received, SubscriptionBase, TransportBase
from aiocelerymon.wire.entities import Delivery, Exchange, ExchangeKind, Message
from aiocelerymon.wire.kombu_redis import RedisNaming, decode_envelope, encode_envelope

__all__ = ["RedisTransport", "connection_params", "map_error"]

log = logging.getLogger("aiocelerymon.transport.redis")

#: Server-side BRPOP timeout in seconds: kombu's ``Transport.brpop_timeout`` default.
BRPOP_TIMEOUT: Final = 1
#: How often a direct consumer re-asserts its binding member and deadline. kombu 5.7 refreshes
#: every ttl/3 (20 min) and sweeps every 60 s; refreshing every 60 s re-creates a table that a
#: sweep deleted (after a long stall of ours) before a publisher misses it for long.
BINDING_REFRESH_INTERVAL: Final = 60.0
#: kombu 5.7 ``MIN_BINDING_TTL``/``BINDING_EXPIRES_FACTOR``: deadline = now + max(2 x-expires, 1 h).
MIN_BINDING_TTL_MS: Final = 3_600_000
BINDING_EXPIRES_FACTOR: Final = 2
#: Idle seconds before the pub/sub connection is PINGed, and again before it is declared dead
#: (kombu's ``health_check_interval`` default, 25 s): finds half-open TCP connections.
PUBSUB_HEALTH_INTERVAL: Final = 25.0
#: Extra seconds a BRPOP reply may take beyond its server timeout before the link is deemed
#: half-open (kombu 5.7 allows ``health_check_interval``, 25 s; replies matter sooner here).
BRPOP_GRACE: Final = 10.0
#: Bound on one publish/subscribe round of commands (they never block server-side). Applied
#: with asyncio.timeout, not redis-py's ``socket_timeout``: that one wraps writes in
#: ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation (seen in testing).
COMMAND_TIMEOUT: Final = 10.0
#: get(): the list a queue's taken, unsettled messages wait in (``<queue>.aiocelerymon.held``).
HELD_SUFFIX: Final = ".aiocelerymon.held"
#: Bytes read from the pub/sub socket at once (asyncio's own default is 256 KiB).
PUBSUB_READ_SIZE: Final = 4 * 1024 * 1024
#: Replies parsed before the reader yields, so the loop keeps draining the socket meanwhile.
PUBSUB_BATCH: Final = 32
#: Bytes handed to hiredis at a time (see _PubSub._read).
PUBSUB_FEED_SIZE: Final = 16 * 1024
#: Unparsed pub/sub bytes we hold before we stop reading and let Redis buffer (see _PubSub).
PUBSUB_MAX_BACKLOG: Final = 256 * 1024 * 1024
#: Size of the command connection pool (kombu's ``max_connections`` transport option).
DEFAULT_MAX_CONNECTIONS: Final = 50
#: Most PUBLISH commands sent in one pipeline (see RedisTransport._publish_batched).
PUBLISH_BATCH: Final = 1000
#: How much of an undecodable payload goes into the warning.
_EXCERPT: Final = 120

#: ``queue_depth``/``purge_queue`` on Redis. KEYS: a queue's priority lists; ARGV[1]: "size" or
#: "purge". Returns ``{1, messages}``, or ``{0, key, type}`` for a key that is not a list (then
#: nothing was deleted).
_QUEUE_LISTS_SCRIPT: Final = """
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'list' then
    return {0, key, kind}
  end
end
local count = 0
for _, key in ipairs(KEYS) do
  count = count + redis.call('LLEN', key)
end
if ARGV[1] == 'purge' and count > 0 then
  redis.call('DEL', unpack(KEYS))
end
return {1, count}
"""

#: Driver error -> library error; :func:`map_error` walks the MRO, so the most specific wins
#: (redis-py's AuthenticationError is a subclass of its ConnectionError).
_ERRORS: Final[dict[type[BaseException], type[TransportError]]] = {
    rexc.AuthenticationError: AuthenticationError,
    rexc.AuthorizationError: AuthenticationError,
    # "wrong number of arguments for 'auth'": a username sent to a Redis < 6 server.
    rexc.AuthenticationWrongNumberOfArgsError: AuthenticationError,
    rexc.ConnectionError: ConnectionLostError,
    rexc.TimeoutError: ConnectionLostError,
    rexc.ResponseError: BrokerRefusedError,
    rexc.RedisError: TransportError,
    OSError: ConnectionLostError,
}

#: ``ssl_cert_reqs`` goes to redis-py by name: its asyncio SSL context before 6.x accepts only
#: the strings (a ``VerifyMode`` leaves it without ``cert_reqs`` and every TLS connect fails).
_CERT_REQS: Final[dict[_ssl.VerifyMode, str]] = {
    _ssl.CERT_NONE: "none",
    _ssl.CERT_OPTIONAL: "optional",
    _ssl.CERT_REQUIRED: "required",
}

#: Celery's ``broker_use_ssl`` keys for Redis (kombu hands them to redis-py unchanged), plus
#: py-amqp's spelling of the same four, which people copy from their RabbitMQ settings.
_SSL_KEYS: Final[dict[str, str]] = {
    "ssl_cert_reqs": "ssl_cert_reqs",
    "ssl_ca_certs": "ssl_ca_certs",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_check_hostname": "ssl_check_hostname",
    "cert_reqs": "ssl_cert_reqs",
    "ca_certs": "ssl_ca_certs",
    "certfile": "ssl_certfile",
    "keyfile": "ssl_keyfile",
    "check_hostname": "ssl_check_hostname",
}


# --------------------------------------------------------------------------------------------
# Configuration and errors (pure; unit-tested without a server)


def _cert_reqs(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, int) and not isinstance(value, bool):  # VerifyMode is an IntEnum
        with contextlib.suppress(ValueError):
            return _CERT_REQS[_ssl.VerifyMode(value)]
    elif isinstance(value, str):
        # Celery accepts "required" and "CERT_REQUIRED" alike (in URLs and settings).
        name = value.strip().lower().removeprefix("cert_")
        if name in _CERT_REQS.values():
            return name
    raise ConfigurationError(
        f"ssl_cert_reqs must be CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED, got {value!r}"
    )


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def ssl_params(url: BrokerURL, ssl: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """redis-py ``ssl_*`` keyword arguments, or None when the connection is not TLS.

    TLS is on for ``rediss://`` (or ``?ssl=true``) and for a truthy ``ssl`` (Celery's
    ``broker_use_ssl``). Options come from the URL query first, then from the mapping.

    Raises:
        ConfigurationError: an unknown option, a bad ``ssl_cert_reqs``, or TLS on a Unix socket.
    """
    if not (url.ssl or ssl):
        return None
    if url.socket_path is not None:
        raise ConfigurationError("TLS is not supported on a Unix socket (redis+socket://)")
    raw: dict[str, Any] = {k: v for k, v in url.query.items() if k in _SSL_KEYS}
    if isinstance(ssl, Mapping):
        unknown = sorted(str(k) for k in ssl if k not in _SSL_KEYS)
        if unknown:
            raise ConfigurationError(
                f"unsupported Redis ssl option(s) {unknown}; expected some of {sorted(_SSL_KEYS)}"
            )
        raw.update(ssl)
    params: dict[str, Any] = {}
    for key, value in raw.items():
        target = _SSL_KEYS[key]
        if target == "ssl_cert_reqs":
            params[target] = _cert_reqs(value)
        elif target == "ssl_check_hostname":
            params[target] = _flag(value)
        else:
            params[target] = None if value is None else str(value)
    if params.get("ssl_cert_reqs") == "none":
        # Nothing is verified, so there is no host name to check (ssl refuses the combination).
        params["ssl_check_hostname"] = False
    return params


def connection_params(
    url: BrokerURL,
    ssl: bool | Mapping[str, Any] | None = None,
    *,
    connect_timeout: float = 4.0,
    client_name: str | None = None,
) -> tuple[type[AbstractConnection], dict[str, Any]]:
    """The redis-py connection class and keyword arguments for a broker URL.

    The password travels inside a credential provider, so neither this dict nor any repr
    shows it. redis-py's own retries are off: a command that may have reached the server must
    not be sent twice, and reconnecting is :class:`TransportBase`'s job.
    """
    kwargs: dict[str, Any] = {
        "db": url.db,
        "socket_connect_timeout": connect_timeout,
        # No socket timeout (redis-py >= 6 defaults to 5 s): pub/sub and BRPOP connections sit
        # idle legitimately, and see COMMAND_TIMEOUT. Liveness: PING, BRPOP deadlines.
        "socket_timeout": None,
        "retry": Retry(NoBackoff(), 0),
        # RESP2 keeps pub/sub messages plain ``[kind, pattern, channel, data]`` arrays.
        "protocol": 2,
    }
    if client_name:
        kwargs["client_name"] = client_name
    if url.username is not None or url.password is not None:
        kwargs["credential_provider"] = UsernamePasswordCredentialProvider(
            url.username or None, url.password or ""
        )
    tls = ssl_params(url, ssl)
    if url.socket_path is not None:
        kwargs["path"] = url.socket_path
        return UnixDomainSocketConnection, kwargs
    kwargs.update(host=url.hostname or "localhost", port=url.port or 6379, socket_keepalive=True)
    if tls is not None:
        kwargs.update(tls)
        return SSLConnection, kwargs
    return Connection, kwargs


def _execute(client: Redis) -> Callable[..., Awaitable[Any]]:
    """``client.execute_command`` under one type for every supported redis-py.

    redis-py 5.2 types command methods as ``Awaitable | value`` unions (not awaitable for mypy)
    and no version annotates ``execute_command``.
    """
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    return execute


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "**") if secret else text


def map_error(exc: BaseException, url: BrokerURL, *, connecting: bool = False) -> TransportError:
    """Translate a redis-py/OS error into the library's tree (the caller raises it ``from``).

    While connecting, a network failure is a :class:`ConnectError`; later it is a
    :class:`ConnectionLostError`. The message names the redacted URL and never the password.
    """
    target: type[TransportError] = TransportError
    for klass in type(exc).__mro__:
        found = _ERRORS.get(klass)
        if found is not None:
            target = found
            break
    if connecting and target in (ConnectionLostError, TransportError):
        target = ConnectError
    detail = _scrub(str(exc) or type(exc).__name__, url.password)
    err = target(f"{url.redacted()}: {detail}")
    err.__cause__ = exc
    return err


# --------------------------------------------------------------------------------------------
# Per-subscription state


async def _cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel tasks and wait until they finished.

    Unlike ``suppress(CancelledError)`` around ``await task``, this lets a cancellation of the
    caller itself propagate.
    """
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    if pending:
        await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # mark retrieved; the tasks log their own failures


class _Handle:
    """What one subscription holds on the server and locally (``SubscriptionBase.handle``)."""

    __slots__ = ("binding_key", "consumer", "member", "patterns", "pubsub")

    def __init__(self, binding_key: str, member: str) -> None:
        self.binding_key = binding_key
        self.member = member
        self.patterns: tuple[bytes, ...] = ()
        self.pubsub: _PubSub | None = None
        self.consumer: _Consumer | None = None


class _Consumer:
    """One BRPOP loop on its own connection (a blocked connection can do nothing else)."""

    __slots__ = ("conn", "task")

    def __init__(self, conn: AbstractConnection, task: asyncio.Task[None]) -> None:
        self.conn = conn
        self.task = task

    async def stop(self) -> None:
        await _cancel_and_wait(self.task)
        # A cancelled read leaves a reply in flight; the connection is useless afterwards.
        with contextlib.suppress(Exception):
            await self.conn.disconnect(nowait=True)


class _PubSubProtocol(asyncio.BufferedProtocol):
    """Receives the pub/sub socket's bytes into large chunks; nothing else happens here."""

    def __init__(self, pubsub: _PubSub, conn: AbstractConnection) -> None:
        self._pubsub = pubsub
        self._conn = conn
        self._buffer = bytearray(PUBSUB_READ_SIZE)
        self._view = memoryview(self._buffer)
        writer = getattr(conn, "_writer", None)
        if writer is None:
            raise ConnectionLostError("pub/sub connection is not open")
        self._transport: asyncio.Transport = writer.transport
        self._transport.set_protocol(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self._pubsub._on_data(bytes(self._view[:nbytes]))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self._pubsub._on_lost(exc)

    def send(self, *args: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionLostError("pub/sub connection is closing")
        self._transport.writelines(self._conn.pack_command(*args))

    def pause(self) -> None:
        self._transport.pause_reading()

    def resume(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()


class _PubSub:
    """The shared pub/sub connection: pattern -> subscriptions, one reader task.

    Subscribe/unsubscribe commands are serialized by a lock and send one pattern each, so every
    command gets exactly one reply (an ack or an error) and acks resolve a FIFO of futures.
    """

    def __init__(self, transport: RedisTransport, conn: AbstractConnection, epoch: int) -> None:
        self.transport = transport
        self.conn = conn
        self.epoch = epoch
        self.routes: dict[bytes, list[SubscriptionBase]] = {}
        self.closed = False
        #: Replies read so far; the watchdog only compares it, the read path only bumps it.
        self.received = 0
        self._acks: deque[asyncio.Future[None]] = deque()
        self._lock = asyncio.Lock()
        self._parser = hiredis.Reader()
        self._backlog: deque[bytes] = deque()
        self._backlog_bytes = 0
        self._paused = False
        self._pauses = 0
        self._eof: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Take the socket over from redis-py's stream reader (after its handshake: AUTH,
        # SELECT, TLS), so reading never waits for parsing.
        self._protocol = _PubSubProtocol(self, conn)
        loop = asyncio.get_running_loop()
        name = f"aiocelerymon-redis-pubsub-{transport.url.redacted()}"
        self.task = loop.create_task(self._read(), name=name)
        self.watchdog = loop.create_task(self._watch(), name=name + "-watchdog")

    async def add(self, sub: SubscriptionBase, patterns: Iterable[bytes]) -> None:
        async with self._lock:
            for pattern in patterns:
                subs = self.routes.get(pattern)
                if subs is None:
                    self.routes[pattern] = [sub]
                    # kombu always uses the pattern variant (``PrefixedRedisPubSub``/_subscribe).
                    await self._command(b"PSUBSCRIBE", pattern)
                elif sub not in subs:
                    subs.append(sub)

    async def remove(self, sub: SubscriptionBase, patterns: Iterable[bytes]) -> None:
        async with self._lock:
            for pattern in patterns:
                subs = self.routes.get(pattern)
                if subs is None or sub not in subs:
                    continue
                subs.remove(sub)
                if not subs:
                    # A pattern shared by several subscriptions stays until the last one leaves.
                    del self.routes[pattern]
                    if not self.closed:
                        await self._command(b"PUNSUBSCRIBE", pattern)

    async def _command(self, command: bytes, pattern: bytes) -> None:
        if self.closed or not self.conn.is_connected:
            raise ConnectionLostError(f"pub/sub connection to {self.transport.url} is down")
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Sent first: if sending fails, no ack is left behind for _fail to set unobserved.
        self._protocol.send(command, pattern)
        self._acks.append(ack)
        try:
            async with asyncio.timeout(self.transport.connect_timeout):
                await ack
        except TimeoutError:
            # A late ack would resolve the wrong future from now on: give the connection up.
            self._give_up(ConnectionLostError(f"no reply to {command.decode()} in time"))
            raise ConnectionLostError(
                f"{self.transport.url.redacted()} did not confirm {command.decode()}"
            ) from None

    def _settle(self, error: BaseException | None) -> None:
        ack = self._acks.popleft() if self._acks else None
        if ack is not None and not ack.done():
            if error is None:
                ack.set_result(None)
            else:
                ack.set_exception(error)

    def _on_data(self, data: bytes) -> None:
        """Protocol callback: keep the bytes; parsing happens in :meth:`_read`."""
        self._backlog.append(data)
        self._backlog_bytes += len(data)
        if self._backlog_bytes > PUBSUB_MAX_BACKLOG and not self._paused:
            # Past our memory bound, let Redis buffer instead (its output-buffer limit may then
            # cut us off, which is reported as a gap: bounded memory beats an OOM kill).
            self._paused = True
            self._protocol.pause()
            self._pauses += 1
            if self._pauses == 1:  # once per connection: a slow consumer pauses many times
                log.warning(
                    "pub/sub backlog from %s over %d bytes: reading paused",
                    self.transport.url.redacted(),
                    PUBSUB_MAX_BACKLOG,
                )
        self._wake_reader()

    def _on_lost(self, exc: BaseException | None) -> None:
        self._eof = exc or ConnectionLostError("connection closed by the server")
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _read(self) -> None:
        """Parse and route what the protocol buffered; report a loss once all of it is done.

        The socket is drained by :class:`_PubSubProtocol` as fast as the event loop allows,
        decoupled from decoding and from the subscribers: a burst then waits in our memory,
        not in Redis's pub/sub output buffer, whose limit (``32mb 8mb 60`` by default) would
        disconnect us (as it does Celery's receiver in the same burst).
        """
        routes, transport, parser = self.routes, self.transport, self._parser
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        try:
            while not me.cancelling():  # see RedisTransport._consume
                if not self._backlog:
                    if self._eof is not None:
                        raise self._eof
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                    continue
                data = self._backlog.popleft()
                self._backlog_bytes -= len(data)
                if self._paused and self._backlog_bytes < PUBSUB_MAX_BACKLOG // 2:
                    self._paused = False
                    self._protocol.resume()
                handled = 0
                size = len(data)
                # Fed in small pieces: hiredis compacts its buffer (a memmove of everything
                # unread) after each reply once 1 KiB is consumed, so one 4 MiB feed costs
                # ~30 us per reply; 16 KiB pieces cost ~0.4 us (benchmarks/ingest.py, singles).
                for offset in range(0, size, PUBSUB_FEED_SIZE):
                    parser.feed(data, offset, min(PUBSUB_FEED_SIZE, size - offset))
                    while (reply := parser.gets()) is not False:
                        self.received += 1
                        if isinstance(reply, hiredis.ReplyError):
                            # A refused (P)SUBSCRIBE (e.g. an ACL NOPERM): only it failed.
                            self._settle(transport._map_error(rexc.ResponseError(str(reply))))
                            continue
                        kind = reply[0]
                        if kind == b"pmessage":
                            subs = routes.get(reply[1])
                            if subs:
                                transport._dispatch(subs, reply[3])
                        elif kind == b"psubscribe" or kind == b"punsubscribe":
                            self._settle(None)
                        handled += 1
                        if handled % PUBSUB_BATCH == 0:
                            # Let the loop read the socket and the subscribers catch up.
                            await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(ConnectionLostError(f"pub/sub connection lost: {exc!r}"))
            if me.cancelling():
                return  # caused by our own cancellation
            if not isinstance(
                exc, (rexc.RedisError, OSError, TransportError, hiredis.HiredisError)
            ):
                # A bug must not leave the subscriptions silently deaf: reconnect and restore.
                log.exception("pub/sub reader for %s crashed", transport.url)
            transport._lost(exc, self.epoch)
        finally:
            self.closed = True

    async def _watch(self) -> None:
        """PING an idle connection; if even that gets no reply, drop it so the reader fails.

        Without this a half-open TCP connection (NAT timeout, dead host) would leave every
        subscription silently deaf; redis-py's PubSub and kombu do the same health check.
        """
        seen, pinged = self.received, False
        while not self.closed:
            await asyncio.sleep(PUBSUB_HEALTH_INTERVAL)
            if self.received != seen:
                seen, pinged = self.received, False
            elif not pinged:
                pinged = True
                with contextlib.suppress(Exception):
                    # In subscribed mode the reply is ``[b"pong", b""]``; it only bumps received.
                    self._protocol.send(b"PING")
            else:
                self._give_up(ConnectionLostError("pub/sub connection stopped answering PING"))
                return

    def _give_up(self, error: ConnectionLostError) -> None:
        # Stop the reader ourselves: closing the socket under it would race its parser.
        self.task.cancel()
        self._fail(error)
        self.transport._lost(error, self.epoch)

    def _fail(self, error: BaseException) -> None:
        self.closed = True
        while self._acks:
            self._settle(error)

    async def aclose(self) -> None:
        self.closed = True
        await _cancel_and_wait(self.watchdog, self.task)
        self._fail(ConnectionLostError("pub/sub connection closed"))
        with contextlib.suppress(Exception):
            await self.conn.disconnect(nowait=True)


# --------------------------------------------------------------------------------------------
# The transport


class RedisTransport(TransportBase):
    """Transport on a Redis server (``redis://``, ``rediss://``, ``redis+socket://``).

    ``transport_options`` are Celery's ``broker_transport_options`` (``global_keyprefix``,
    ``fanout_prefix``, ``fanout_patterns``, ``sep``, ``priority_steps``, ``client_name``);
    ``ssl`` is Celery's ``broker_use_ssl``. :attr:`malformed` counts received payloads that
    could not be decoded.
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
        if parsed.transport != "redis":
            raise ConfigurationError(f"not a Redis URL: {parsed.redacted()}")
        super().__init__(parsed, transport_options=transport_options, **kwargs)
        self.naming = RedisNaming.from_options(parsed.db, self.transport_options)
        #: get(): queues whose held list was recovered, and the payloads recovered.
        self._recovery_done: set[str] = set()
        self._recovered: set[bytes] = set()
        self._conn_class, self._conn_kwargs = connection_params(
            parsed,
            ssl,
            connect_timeout=self.connect_timeout,
            # kombu's ``client_name`` transport option: CLIENT SETNAME on every connection.
            client_name=self.transport_options.get("client_name"),
        )
        #: Received payloads that failed to decode (each logged once at WARNING).
        self.malformed = 0
        self._client: Redis | None = None
        self._pubsub: _PubSub | None = None
        self._pubsub_lock = asyncio.Lock()
        self._consumers: set[_Consumer] = set()
        # Bumped by every _close_connection: errors from an older connection set are stale.
        self._epoch = 0
        self._zadd_gt = True
        # Pub/sub publishes waiting for the next pipeline: (channel, payload, caller's future).
        self._outbox: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- connection --------------------------------------------------------------------------

    def _map_error(self, exc: BaseException, *, connecting: bool = False) -> TransportError:
        return map_error(exc, self.url, connecting=connecting)

    def _new_connection(self) -> AbstractConnection:
        return self._conn_class(**self._conn_kwargs)

    async def _connect_dedicated(self) -> AbstractConnection:
        conn = self._new_connection()
        # redis-py leaves ``connect`` unannotated; this names the type it has.
        connect: Callable[[], Awaitable[None]] = conn.connect
        try:
            await connect()
        except (rexc.RedisError, OSError) as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise self._map_error(exc) from exc
        return conn

    async def _open(self) -> None:
        # Many concurrent calls must queue for a connection, not fail: redis-py 8's default pool
        # raises at 100 in use. kombu's ``max_connections`` option sizes it; every command is
        # already bounded by COMMAND_TIMEOUT, so waiting for a free connection is bounded too.
        size = int(self.transport_options.get("max_connections") or DEFAULT_MAX_CONNECTIONS)
        pool = BlockingConnectionPool(
            connection_class=self._conn_class,
            max_connections=size,
            timeout=None,
            **self._conn_kwargs,
        )
        client: Redis = Redis.from_pool(pool)
        self._client = client
        try:
            # Really talk to the server, so a wrong port or password fails here, fast.
            await client.ping()
        except (rexc.RedisError, OSError) as exc:
            raise self._map_error(exc, connecting=True) from exc

    async def _close_connection(self) -> None:
        self._epoch += 1
        client, self._client = self._client, None
        pubsub, self._pubsub = self._pubsub, None
        consumers, self._consumers = list(self._consumers), set()
        for consumer in consumers:
            await consumer.stop()
        if pubsub is not None:
            await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    def _require_client(self) -> Redis:
        client = self._client
        if client is None:
            raise ConnectionLostError(f"not connected to {self.url.redacted()}")
        return client

    def _lost(self, exc: BaseException, epoch: int) -> None:
        """A reader saw its connection fail; report it unless that connection set is gone."""
        if epoch == self._epoch:
            # TransportBase also handles a loss during a restore (it redoes the restore).
            self._connection_lost(exc)

    # -- publish -----------------------------------------------------------------------------

    async def _publish(self, message: Message, exchange: Exchange, routing_key: str) -> None:
        client = self._require_client()
        payload = encode_envelope(message, exchange=exchange.name, routing_key=routing_key)
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._publish_commands(client, payload, message, exchange, routing_key)
        except (rexc.RedisError, OSError) as exc:  # OSError includes TimeoutError
            raise self._map_error(exc) from exc

    async def _publish_commands(
        self, client: Redis, payload: bytes, message: Message, exchange: Exchange, rk: str
    ) -> None:
        naming = self.naming
        if exchange.kind is not ExchangeKind.DIRECT:
            # kombu declares fanout exchanges only in-process: a publish is one command.
            await self._publish_batched(naming.publish_channel(exchange.name, rk), payload)
            return
        if exchange.name:
            members = await _execute(client)("SMEMBERS", naming.binding_key(exchange.name))
            queues = self._route(members, rk)
        else:
            # The default exchange: kombu's virtual ``basic_publish`` puts straight to the
            # queue named by the routing key (the ``reply_to.exchange == ""`` shortcut).
            queues = [rk]
        if not queues:
            return  # kombu drops an unroutable message silently (no deadletter_queue)
        if len(queues) == 1:
            await _execute(client)("LPUSH", naming.queue_key(queues[0], message.priority), payload)
            return
        async with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.lpush(naming.queue_key(queue, message.priority), payload)
            await pipe.execute()

    async def _publish_batched(self, channel: str, payload: bytes) -> None:
        """PUBLISH, pipelined with every other publish made meanwhile.

        One PUBLISH per pool connection and round trip made 1,000 concurrent control calls
        take 20 round trips to send (50 connections), a second on a 50 ms link, by which
        time their requests had expired. Publishes made while a pipeline is out go together
        in the next one, in order. A caller cancelled before its pipeline left is not sent.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((channel, payload, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_publishes(), name=f"aiocelerymon-redis-publish-{self.url.redacted()}"
            )
        await future

    async def _flush_publishes(self) -> None:
        try:
            while self._outbox:
                batch = [item for item in self._outbox[:PUBLISH_BATCH] if not item[2].done()]
                del self._outbox[:PUBLISH_BATCH]
                if batch:
                    await self._publish_pipeline(batch)
        finally:
            self._flusher = None

    async def _publish_pipeline(self, batch: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
        error: BaseException | None = None
        try:
            client = self._require_client()
            async with asyncio.timeout(COMMAND_TIMEOUT):
                async with client.pipeline(transaction=False) as pipe:
                    for channel, payload, _ in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
        except (rexc.RedisError, OSError, TransportError) as exc:  # OSError: TimeoutError too
            error = exc
        except BaseException:  # cancelled (the transport closed): nobody may wait forever
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(ConnectionLostError(f"{self.url.redacted()} closed"))
            raise
        for _, _, future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                # One exception object per caller: each raises (and extends) its own.
                mapped = error if isinstance(error, TransportError) else self._map_error(error)
                failure = type(mapped)(str(mapped))
                failure.__cause__ = error
                future.set_exception(failure)

    def _route(self, members: Iterable[bytes | str], routing_key: str) -> list[str]:
        """Queues bound with exactly ``routing_key`` (kombu ``DirectExchange.lookup``)."""
        queues: list[str] = []
        for raw in members:
            member = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            try:
                rk, _pattern, queue = self.naming.parse_member(member)
            except DecodeError:
                continue  # somebody else's malformed member must not break our publish
            if rk == routing_key and queue not in queues:
                queues.append(queue)
        return queues

    # -- receive -----------------------------------------------------------------------------

    def _dispatch(self, subs: list[SubscriptionBase], raw: bytes) -> None:
        """Decode once per generation and feed every subscription of a pattern."""
        if len(subs) == 1:
            sub = subs[0]
            delivery = self._decode(raw, sub.generation)
            if delivery is not None:
                sub.feed(delivery)
            return
        decoded: dict[int, Delivery | None] = {}
        for sub in list(subs):
            gen = sub.generation
            if gen not in decoded:
                decoded[gen] = self._decode(raw, gen)
            delivery = decoded[gen]
            if delivery is not None:
                sub.feed(delivery)

    def _decode(self, raw: bytes, generation: int) -> Delivery | None:
        try:
            return decode_envelope(raw, generation=generation)
        except (DecodeError, ValueError, TypeError) as exc:
            self.malformed += 1
            log.warning(
                "dropping undecodable payload from %s (%d bytes, %s): %r",
                self.url.redacted(),
                len(raw),
                exc,
                raw[:_EXCERPT],
            )
            return None

    # -- subscribe ---------------------------------------------------------------------------

    async def _subscribe(self, sub: SubscriptionBase) -> None:
        client = self._require_client()
        binding = sub.binding
        exchange = binding.exchange.name
        naming = self.naming
        old = sub.handle
        if isinstance(old, _Handle):
            # Re-entrant: a restore (or a retried start) replaces whatever is left locally.
            await self._release(sub, old)
        handle = _Handle(
            naming.binding_key(exchange), naming.binding_member(binding.routing_key, sub.queue)
        )
        sub.handle = handle
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                if binding.exchange.kind is ExchangeKind.DIRECT:
                    await self._subscribe_direct(client, sub, handle)
                else:
                    await self._subscribe_pubsub(client, sub, handle)
        except (rexc.RedisError, OSError) as exc:  # OSError includes TimeoutError
            raise self._map_error(exc) from exc
        if sub not in self._subs:
            # Closed while a reconnect was restoring it: undo, as nobody else will.
            await self._unsubscribe(sub)

    async def _subscribe_direct(
        self, client: Redis, sub: SubscriptionBase, handle: _Handle
    ) -> None:
        epoch = self._epoch
        await self._bind_member(client, sub, handle)
        conn = await self._connect_dedicated()
        if epoch != self._epoch:  # the connection set was closed meanwhile
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise ConnectionLostError(f"connection to {self.url} was closed")
        task = asyncio.get_running_loop().create_task(
            self._consume(sub, handle, conn, epoch),
            name=f"aiocelerymon-redis-brpop-{sub.queue}",
        )
        handle.consumer = _Consumer(conn, task)
        self._consumers.add(handle.consumer)

    async def _subscribe_pubsub(
        self, client: Redis, sub: SubscriptionBase, handle: _Handle
    ) -> None:
        binding = sub.binding
        # Bookkeeping only, as kombu's ``_queue_bind``: fanout delivery never reads it.
        await _execute(client)("SADD", handle.binding_key, handle.member)
        pubsub = await self._ensure_pubsub()
        handle.pubsub = pubsub
        patterns = self.naming.subscribe_patterns(binding.exchange.name, binding.routing_key)
        handle.patterns = tuple(p.encode() for p in patterns)
        await pubsub.add(sub, handle.patterns)

    async def _ensure_pubsub(self) -> _PubSub:
        async with self._pubsub_lock:
            pubsub = self._pubsub
            if pubsub is not None:
                if pubsub.closed:
                    raise ConnectionLostError(f"pub/sub connection to {self.url} is down")
                return pubsub
            epoch = self._epoch
            conn = await self._connect_dedicated()
            if epoch != self._epoch:  # closed while we connected
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                raise ConnectionLostError(f"connection to {self.url} was closed")
            pubsub = self._pubsub = _PubSub(self, conn, epoch)
            return pubsub

    async def _bind_member(self, client: Redis, sub: SubscriptionBase, handle: _Handle) -> None:
        """Add the binding member, protected against kombu 5.7's sweep of binding tables.

        kombu 5.7 consumers sweep ``_kombu.binding_deadlines`` every 60 s and DEL a whole
        ``_kombu.binding.<exchange>`` table once its deadline passed, unless
        ``_kombu.binding_permanent.<exchange>`` lists a queue without x-expires. As kombu 5.7
        ``_queue_bind``: a binding with ``expires`` raises the deadline (ZADD GT, server
        clock), one without also joins the permanent set. Unlike kombu the ZADD goes first, so
        a sweep can never delete the table between our SADD and our ZADD.
        """
        expires = sub.binding.expires
        ttl_ms = MIN_BINDING_TTL_MS
        if expires is not None:
            ttl_ms = max(round(expires * 1000) * BINDING_EXPIRES_FACTOR, MIN_BINDING_TTL_MS)
        exchange = sub.binding.exchange.name
        deadline: int | None = None
        if self._zadd_gt:
            seconds, micros = await client.time()
            deadline = int(seconds) * 1000 + int(micros) // 1000 + ttl_ms
        async with client.pipeline(transaction=False) as pipe:
            if deadline is not None:
                # GT: never shorten a deadline that a longer-lived consumer set.
                pipe.zadd(self.naming.deadlines_key, {exchange: deadline}, gt=True)
            pipe.sadd(handle.binding_key, handle.member)
            if expires is None:
                pipe.sadd(self.naming.permanent_key(exchange), handle.member)
            results = await pipe.execute(raise_on_error=False)
        if deadline is not None:
            zadd, results = results[0], results[1:]
            if isinstance(zadd, rexc.ResponseError):
                # Redis < 6.2 has no ZADD GT; kombu 5.7 needs 6.2, so nobody sweeps there.
                self._zadd_gt = False
                log.debug("no binding deadlines on %s: %s", self.url.redacted(), zadd)
            elif isinstance(zadd, Exception):
                raise zadd
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def _consume(
        self, sub: SubscriptionBase, handle: _Handle, conn: AbstractConnection, epoch: int
    ) -> None:
        """BRPOP loop over the queue's priority lists (lowest step first, as kombu)."""
        keys = self.naming.queue_keys(sub.queue)
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        refresh_at = loop.time() + BINDING_REFRESH_INTERVAL
        try:
            # cancelling(): a driver that swallowed our CancelledError must not keep us alive.
            while not me.cancelling():
                # The server answers within BRPOP_TIMEOUT; silence much beyond is a dead link
                # (the send is bounded too: a full socket buffer to a dead peer never drains).
                async with asyncio.timeout(BRPOP_TIMEOUT + BRPOP_GRACE):
                    await conn.send_command("BRPOP", *keys, BRPOP_TIMEOUT, check_health=False)
                    reply = await conn.read_response()
                if reply is not None:
                    delivery = self._decode(reply[1], sub.generation)
                    if delivery is not None:
                        sub.feed(delivery)
                if loop.time() >= refresh_at:
                    refresh_at = loop.time() + BINDING_REFRESH_INTERVAL
                    await self._refresh(sub, handle)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if me.cancelling():
                return  # an error caused by our own cancellation is no connection loss
            if isinstance(exc, rexc.ResponseError):
                # e.g. WRONGTYPE: one of our list keys holds something else; retrying is futile.
                error = self._map_error(exc)
                log.error("consumer of %r on %s stopped: %s", sub.queue, self.url, error)
                sub._end(error)
            elif isinstance(exc, (rexc.RedisError, OSError)):  # OSError: our TimeoutError too
                self._lost(exc, epoch)
            else:  # a bug must not leave the subscription silently deaf
                log.exception("consumer of %r on %s crashed", sub.queue, self.url)
                sub._end(exc)

    async def _refresh(self, sub: SubscriptionBase, handle: _Handle) -> None:
        client = self._client
        if client is None:
            return
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._bind_member(client, sub, handle)
        except rexc.ResponseError as exc:
            # Transient server refusals (OOM, READONLY during failover): try again next time.
            log.warning("could not refresh binding of %r: %s", sub.queue, self._map_error(exc))

    # -- unsubscribe -------------------------------------------------------------------------

    async def _release(self, sub: SubscriptionBase, handle: _Handle) -> None:
        """Stop local delivery for ``sub``; no server-side cleanup."""
        consumer, handle.consumer = handle.consumer, None
        if consumer is not None:
            self._consumers.discard(consumer)
            await consumer.stop()
        pubsub, handle.pubsub = handle.pubsub, None
        if pubsub is not None:
            if pubsub is self._pubsub and not pubsub.closed:
                try:
                    await pubsub.remove(sub, handle.patterns)
                except (TransportError, rexc.RedisError, OSError) as exc:
                    # The pub/sub link broke meanwhile (its reader reports that); the pattern
                    # is gone with it, and the server-side cleanup below must still run.
                    log.debug("PUNSUBSCRIBE for %r failed: %r", sub, exc)
            else:
                for pattern in handle.patterns:
                    subs = pubsub.routes.get(pattern)
                    if subs and sub in subs:
                        subs.remove(sub)

    async def _unsubscribe(self, sub: SubscriptionBase) -> None:
        handle = sub.handle
        if not isinstance(handle, _Handle):
            return
        sub.handle = None
        try:
            await self._release(sub, handle)
            client = self._client
            if client is None:
                return
            binding = sub.binding
            if not (binding.exclusive or binding.auto_delete):
                # A durable, kept queue outlives its consumer with its binding and backlog, as
                # on RabbitMQ (kombu deletes a queue only on queue_delete/auto-delete).
                return
            live = [s for s in self._subs if s is not sub and s.queue == sub.queue]
            shared_member = any(
                s.binding.exchange.name == binding.exchange.name
                and s.binding.routing_key == binding.routing_key
                for s in live
            )
            delete_lists = binding.exchange.kind is ExchangeKind.DIRECT and not live
            if shared_member and not delete_lists:
                return
            async with client.pipeline(transaction=False) as pipe:
                if not shared_member:
                    # kombu 5.7 ``_delete`` also SREMs from the permanent set.
                    pipe.srem(handle.binding_key, handle.member)
                    pipe.srem(self.naming.permanent_key(binding.exchange.name), handle.member)
                if delete_lists:
                    # Only the queue's own lists; never the ``unacked*`` keys of task consumers.
                    pipe.delete(*self.naming.queue_keys(sub.queue))
                await pipe.execute()
        except (rexc.RedisError, OSError) as exc:
            raise self._map_error(exc) from exc

    # -- task queues -------------------------------------------------------------------------

    async def _queue_known(self, client: Redis, name: str) -> bool:
        """Whether any direct/topic binding table names queue ``name`` (an empty queue has no
        list key on Redis; its bindings are what kombu's workers leave behind)."""
        pattern = self.naming.key("_kombu.binding.")
        glob = "".join(f"[{c}]" if c in "*?[]\\" else c for c in pattern) + "*"
        async for key in client.scan_iter(match=glob, count=500):
            for raw in await _execute(client)("SMEMBERS", key):
                member = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                with contextlib.suppress(DecodeError):
                    if self.naming.parse_member(member)[2] == name:
                        return True
        return False

    async def _queue_lists(self, name: str, *, purge: bool) -> int:
        """Messages in queue ``name``'s priority lists (kombu's ``_size``), deleted with
        ``purge`` (kombu's ``_purge``): one Lua script, so the type check and the DEL are
        atomic. A key of another type under one of those names means ``name`` is not a
        queue: :class:`NotAQueueError`, and nothing is deleted (a MULTI of LLEN + DEL
        deleted kombu's binding set, then failed with WRONGTYPE)."""
        client = self._require_client()
        keys = self.naming.queue_keys(name)
        reply = await _execute(client)(
            "EVAL", _QUEUE_LISTS_SCRIPT, len(keys), *keys, "purge" if purge else "size"
        )
        if int(reply[0]) != 1:
            kind = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
            raise NotAQueueError(name, f"a Redis {kind}")
        return int(reply[1])

    async def _queue_depth(self, name: str) -> tuple[int, int | None] | None:
        client = self._require_client()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                messages = await self._queue_lists(name, purge=False)
                if not messages and not await self._queue_known(client, name):
                    return None
        except (rexc.RedisError, OSError) as exc:
            raise self._map_error(exc) from exc
        # BRPOP consumers are invisible on Redis: unknown, not zero.
        return messages, None

    def _held_key(self, queue: str) -> str:
        # Not a kombu priority step, so no kombu consumer ever pops from it.
        return self.naming.key(f"{queue}{HELD_SUFFIX}")

    async def _recover_held(self, client: Redis, queue: str) -> None:
        """Put back what an interrupted getter (a killed process) held on ``queue``."""
        held = self._held_key(queue)
        recovered = 0
        while True:
            payload = await _execute(client)("LINDEX", held, -1)
            if payload is None:
                break
            raw = bytes(payload) if not isinstance(payload, bytes) else payload
            try:
                priority = decode_envelope(raw).priority or 0
            except DecodeError:
                priority = 0
            # Back to the consuming end of its list (RPUSH: next to be taken), atomically.
            async with client.pipeline(transaction=True) as pipe:
                pipe.execute_command("LREM", held, -1, raw)
                pipe.rpush(self.naming.queue_key(queue, priority), raw)
                await pipe.execute()
            self._recovered.add(raw)
            recovered += 1
        if recovered:
            log.warning(
                "%s: %d message(s) of queue %r were held by an interrupted getter; requeued "
                "(they may have been handled already)",
                self.url, recovered, queue,
            )  # fmt: skip

    async def _get(self, queue: str) -> Received | None:
        client = self._require_client()
        held = self._held_key(queue)
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                if queue not in self._recovery_done:
                    await self._recover_held(client, queue)
                    self._recovery_done.add(queue)
                payload = None
                for key in self.naming.queue_keys(queue):
                    # Atomic: a message is always in its queue or in our held list.
                    payload = await _execute(client)("RPOPLPUSH", key, held)
                    if payload is not None:
                        origin = key
                        break
        except (rexc.RedisError, OSError) as exc:
            raise self._map_error(exc) from exc
        if payload is None:
            return None
        raw: bytes = payload if isinstance(payload, bytes) else bytes(payload)
        malformed = None
        try:
            delivery = decode_envelope(raw)
        except DecodeError as exc:
            malformed = str(exc)
            delivery = Delivery(raw, None, None, {}, "", queue)
        if raw in self._recovered:
            self._recovered.discard(raw)
            delivery = dataclasses.replace(delivery, redelivered=True)

        async def settle(ack: bool) -> None:
            client = self._require_client()
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    async with client.pipeline(transaction=True) as pipe:
                        pipe.execute_command("LREM", held, -1, raw)
                        if not ack:
                            pipe.rpush(origin, raw)
                        await pipe.execute()
            except (rexc.RedisError, OSError) as exc:
                raise self._map_error(exc) from exc

        return Received(delivery, settle, malformed)

    async def _ensure_queue(self, name: str) -> None:
        # A Redis queue is a list, created by the first LPUSH (the default exchange routes by
        # queue name). What makes an empty one known is a binding: Celery's declare of a
        # default queue, exchange and routing key named like the queue.
        client = self._require_client()
        if await self._queue_known(client, name):
            return
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await _execute(client)(
                    "SADD", self.naming.binding_key(name), self.naming.binding_member(name, name)
                )
        except (rexc.RedisError, OSError) as exc:
            raise self._map_error(exc) from exc

    async def _purge_queue(self, name: str) -> int | None:
        client = self._require_client()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                # Only the queue's lists: never the unacked hash and index, which belong to the
                # workers that hold those messages.
                count = await self._queue_lists(name, purge=True)
                if not count and not await self._queue_known(client, name):
                    return None
        except (rexc.RedisError, OSError) as exc:
            raise self._map_error(exc) from exc
        return count
