"""Real Redis and RabbitMQ servers for integration tests, and isolated namespaces on them.

Each broker is resolved in this order:

1. an environment variable (``AIOCELERYMON_REDIS_URL`` / ``AIOCELERYMON_AMQP_URL``) naming a
   running server, which we use but do not own;
2. a testcontainers container, when testcontainers is importable and a Docker engine answers;
3. the Debian binaries (``redis-server``, ``/usr/lib/rabbitmq/bin/rabbitmq-server``) started in a
   temporary directory on free loopback ports.

When none works the test is skipped, or failed when ``CI`` is true or
``AIOCELERYMON_REQUIRE_BROKERS=1``: CI must never go green by skipping the broker tests.

:meth:`RedisServer.namespace` and :meth:`RabbitServer.namespace` carve an isolated
:class:`BrokerNamespace` out of a server (a fresh Redis database, a fresh RabbitMQ vhost), so
tests sharing one server, or running in parallel, never see each other's queues.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from aiocelerymon.testing import _cleanup

REDIS_URL_ENV = "AIOCELERYMON_REDIS_URL"
AMQP_URL_ENV = "AIOCELERYMON_AMQP_URL"
REQUIRE_ENV = "AIOCELERYMON_REQUIRE_BROKERS"
REDIS_IMAGE_ENV = "AIOCELERYMON_REDIS_IMAGE"
RABBITMQ_IMAGE_ENV = "AIOCELERYMON_RABBITMQ_IMAGE"
# Debian's /usr/sbin wrappers switch to the rabbitmq user and use /var; these do not.
RABBITMQ_BIN_DIR_ENV = "AIOCELERYMON_RABBITMQ_BIN_DIR"
DEFAULT_RABBITMQ_BIN_DIR = "/usr/lib/rabbitmq/bin"

INSTALL_HINT = (
    "install the brokers (Debian: `apt-get install redis-server rabbitmq-server`), "
    f"or point {REDIS_URL_ENV} / {AMQP_URL_ENV} at running servers, "
    "or run a Docker engine and `pip install aiocelerymon[testing]` (testcontainers)"
)

REDIS_START_TIMEOUT = 15.0
#: No scheduler busy-waiting: an idle test node must not eat a core of a small CI machine
#: (on 2 cores it starved the Redis burst test's reader next to it).
RABBIT_ERL_ARGS = "+sbwt none +sbwtdcpu none +sbwtdio none"
RABBIT_START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
#: Vhosts RabbitServer.namespace() creates at once (one rabbitmqctl call).
VHOST_BATCH = 8
#: Databases of the Redis servers we start: 0-15 stay free for tests that pick one themselves,
#: the rest are handed out as namespaces.
REDIS_DATABASES = 64
_FIRST_NAMESPACE_DB = 16


class BrokerUnavailableError(RuntimeError):
    """No broker could be had and pytest is not importable (e.g. the golden capture tool)."""


def brokers_required() -> bool:
    """True when a missing broker must fail the run instead of skipping."""
    ci = os.environ.get("CI", "").strip().lower() in {"true", "1"}
    return ci or os.environ.get(REQUIRE_ENV, "").strip() == "1"


def unavailable(message: str) -> NoReturn:
    """Skip (locally) or fail (CI) the current test because a prerequisite is missing."""
    try:
        import pytest
    except ImportError:  # used outside pytest, e.g. by tests/golden/capture.py
        raise BrokerUnavailableError(message) from None
    if brokers_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --------------------------------------------------------------------------------------------
# Server handles


@dataclass(frozen=True)
class BrokerNamespace:
    """An isolated place on a broker: its URL and the Celery settings that go with it.

    ``transport_options`` is empty unless isolation needs it (a ``global_keyprefix`` on a Redis
    server we did not start); pass :attr:`celery_config` to the app under test and
    :meth:`client_options` to :class:`aiocelerymon.Client`.
    """

    broker: str  # "redis" or "rabbitmq"
    url: str
    transport_options: dict[str, Any] = field(default_factory=dict)
    #: False when the server gave us no way to isolate (an external RabbitMQ, no rabbitmqctl).
    isolated: bool = True

    @property
    def celery_config(self) -> dict[str, Any]:
        """Celery settings that select this namespace (``broker_url`` and transport options)."""
        config: dict[str, Any] = {"broker_url": self.url}
        if self.transport_options:
            config["broker_transport_options"] = dict(self.transport_options)
        return config

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`aiocelerymon.Client` besides the URL."""
        if not self.transport_options:
            return {}
        return {"broker_transport_options": dict(self.transport_options)}


@dataclass
class RedisServer:
    """A reachable Redis server; ``url`` selects db 0 unless the env URL says otherwise."""

    url: str
    owned: bool
    #: How many databases the server has (``--databases``); namespaces use 16 and up.
    databases: int = 16
    _next_db: int = field(default=_FIRST_NAMESPACE_DB, repr=False, compare=False)

    def url_for(self, db: int) -> str:
        """The same server with database ``db`` selected."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{db}"))

    def namespace(self) -> BrokerNamespace:
        """A fresh, empty database of its own; on a server we did not start, a key prefix.

        Redis pub/sub ignores databases, but kombu (and we) prefix fanout channels with the
        database number, so a database isolates Celery traffic completely.
        """
        if not self.owned or self.databases <= _FIRST_NAMESPACE_DB:
            prefix = f"aiocm-{uuid.uuid4().hex[:12]}:"
            return BrokerNamespace("redis", self.url, {"global_keyprefix": prefix})
        db = self._next_db
        # Cycle: a session with more tests than databases reuses them, flushed first.
        self._next_db = db + 1 if db + 1 < self.databases else _FIRST_NAMESPACE_DB
        _redis_flushdb(self.url_for(db))
        return BrokerNamespace("redis", self.url_for(db))

    def release(self, namespace: BrokerNamespace) -> None:
        """Done with ``namespace``: delete its keys if it is a key prefix (idempotent).

        A database of our own is flushed when handed out; a prefix lives in someone else's
        database, which must be left as we found it.
        """
        clear_key_prefix(namespace)


@dataclass
class RabbitServer:
    """A reachable RabbitMQ server; ``url`` uses the default vhost ``/``."""

    url: str
    owned: bool
    node: str | None = None
    # Runs `rabbitmqctl <args>` against this server (local binary or `docker exec`); None when the
    # server is external and we have no admin access to it.
    _ctl: Callable[[Sequence[str]], str] | None = field(default=None, repr=False, compare=False)
    # Vhosts made ahead by one `rabbitmqctl eval`, handed out by namespace().
    _pool: list[str] = field(default_factory=list, repr=False, compare=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _batch_works: bool = field(default=True, repr=False, compare=False)

    def url_for_vhost(self, name: str) -> str:
        """The amqp URL of vhost ``name`` on this server (no broker traffic)."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + quote(name, safe="")))

    def rabbitmqctl(self, *args: str) -> str:
        """Run ``rabbitmqctl`` with the node name and Erlang cookie of this server."""
        if self._ctl is None:
            raise RuntimeError(f"no rabbitmqctl access to the external broker {self.url}")
        return self._ctl(args)

    def add_vhost(self, name: str) -> str:
        """Create vhost ``name`` with full permissions for guest; returns its amqp URL.

        On an external server (``owned`` is false) nothing is created: the vhost must exist.
        """
        if self.owned:
            self.rabbitmqctl("add_vhost", name)  # succeeds when it exists already
            self.rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return self.url_for_vhost(name)

    def delete_vhost(self, name: str) -> None:
        """Delete vhost ``name`` and everything in it (only on a server we started)."""
        if self.owned:
            self.rabbitmqctl("delete_vhost", name)

    def namespace(self) -> BrokerNamespace:
        """A fresh vhost of its own (``isolated`` is false on an external server: its URL).

        Made :data:`VHOST_BATCH` at a time: every ``rabbitmqctl`` call boots an Erlang VM
        (0.5-1.5 s on a small machine), one ``eval`` makes a whole batch in about as long.
        """
        if not self.owned:
            return BrokerNamespace("rabbitmq", self.url, isolated=False)
        with self._pool_lock:
            if not self._pool:
                self._pool = self._make_vhosts(
                    [f"aiocm-{uuid.uuid4().hex[:12]}" for _ in range(VHOST_BATCH)]
                )
            name = self._pool.pop()
        return BrokerNamespace("rabbitmq", self.url_for_vhost(name))

    def _make_vhosts(self, names: list[str]) -> list[str]:
        """Create ``names`` (guest: full permissions); those made, at least the first one."""
        if self._batch_works:
            # RabbitMQ's internal API (3.8 through 3.13): what add_vhost / set_permissions call.
            vhosts = ", ".join(f'<<"{name}">>' for name in names)
            actor, everything = '<<"aiocelerymon">>', '<<".*">>'
            expression = (
                f"[begin ok = rabbit_vhost:add(V, {actor}), "
                f'ok = rabbit_auth_backend_internal:set_permissions(<<"guest">>, V, '
                f"{everything}, {everything}, {everything}, {actor}) end || V <- [{vhosts}]], ok."
            )
            try:
                if self.rabbitmqctl("eval", expression).strip() == "ok":
                    return names
            except RuntimeError:
                pass
            self._batch_works = False  # another server's internals: one command at a time
        self.add_vhost(names[0])
        return names[:1]

    def release(self, namespace: BrokerNamespace) -> None:
        """Done with ``namespace``: delete its vhost, with every queue and exchange in it."""
        if namespace.isolated and self.owned:
            self.delete_vhost(unquote(urlsplit(namespace.url).path[1:]))


# --------------------------------------------------------------------------------------------
# Helpers


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``timeout``; reap ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    # Children that outlived the leader (it may exit before they do) are still in the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _docker_engine_answers() -> bool:
    # Cheapest answer first: no DOCKER_HOST and no local socket means no engine.
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker
    except ImportError:
        return False
    # A failed probe leaves an unclosed socket behind; collect it here, silently, rather than
    # let its ResourceWarning surface later in an unrelated test (warnings are errors there).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


# --------------------------------------------------------------------------------------------
# Redis


def _redis_flushdb(url: str) -> None:
    """``FLUSHDB`` the database ``url`` selects, over a plain socket (no driver needed)."""
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    commands = [("SELECT", db), ("FLUSHDB",)]
    if parts.password:
        auth = (parts.username, parts.password) if parts.username else (parts.password,)
        commands.insert(0, ("AUTH", *auth))
    request = b"".join(
        b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in cmd)
        for cmd in commands
    )
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 10) as sock:
        sock.sendall(request)
        replies = b""
        while replies.count(b"\r\n") < len(commands):
            chunk = sock.recv(1024)
            if not chunk:
                break
            replies += chunk
    if replies.count(b"+OK") < len(commands):
        raise RuntimeError(f"FLUSHDB of Redis db {db} failed: {replies!r}")


class _Resp:
    """Just enough of the Redis protocol for the test bed's housekeeping (no driver needed)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), 10
        )
        self._file = self._sock.makefile("rb")
        if parts.password:
            user = unquote(parts.username) if parts.username else None
            self.call("AUTH", *filter(None, [user, unquote(parts.password)]))
        self.call("SELECT", parts.path.strip("/") or "0")

    def call(self, *args: str | bytes) -> Any:
        parts = [a.encode() if isinstance(a, str) else a for a in args]
        self._sock.sendall(
            b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        )
        return self._read()

    def _read(self) -> Any:
        line = self._file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"-":
            raise RuntimeError(f"Redis: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        if kind == b"+":
            return rest
        raise RuntimeError(f"Redis: unexpected reply {line!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _redis_delete_prefixed(url: str, prefix: str) -> int:
    """Delete every key that starts with ``prefix`` in the database ``url`` selects."""
    conn = _Resp(url)
    deleted = 0
    try:
        cursor = b"0"
        while True:
            cursor, keys = conn.call(
                "SCAN", cursor, "MATCH", _glob_escape(prefix) + "*", "COUNT", "500"
            )
            if keys:
                deleted += conn.call("DEL", *keys)
            if cursor == b"0":
                return deleted
    finally:
        conn.close()


def clear_key_prefix(namespace: BrokerNamespace) -> int:
    """Delete the keys of a key-prefix namespace (``global_keyprefix``); how many (idempotent)."""
    prefix = namespace.transport_options.get("global_keyprefix")
    if namespace.broker != "redis" or not prefix:
        return 0
    return _redis_delete_prefixed(namespace.url, str(prefix))


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def _local_redis(executable: str) -> Iterator[RedisServer]:
    _cleanup.install_sigterm_handler()
    workdir = Path(tempfile.mkdtemp(prefix="aiocelerymon-redis-"))
    log = workdir / "redis.log"
    try:
        with _cleanup.owned_dir(workdir):
            yield from _run_redis(executable, workdir, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_redis(executable: str, workdir: Path, log: Path) -> Iterator[RedisServer]:
    # A port picked by free_port() can be taken before redis binds it; try a few.
    for _attempt in range(3):
        port = free_port()
        argv = [
            executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--databases", str(REDIS_DATABASES),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(workdir),
            "--logfile", str(log),
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if _redis_ping(port):
                break
            time.sleep(0.05)
        else:
            stop_process_group(proc)
            continue
        try:
            with _cleanup.owned_process(proc):
                yield RedisServer(
                    url=f"redis://127.0.0.1:{port}/0", owned=True, databases=REDIS_DATABASES
                )
        finally:
            stop_process_group(proc)
        return
    unavailable(f"redis-server did not start: {_tail(log)}\n({INSTALL_HINT})")


@contextlib.contextmanager
def _container_redis() -> Iterator[RedisServer]:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:
        from testcontainers.redis import RedisContainer
    image = os.environ.get(REDIS_IMAGE_ENV, "redis:7-alpine")
    container = RedisContainer(image).with_command(f"redis-server --databases {REDIS_DATABASES}")
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        yield RedisServer(url=f"redis://{host}:{port}/0", owned=True, databases=REDIS_DATABASES)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Yield a Redis server (env URL, container or local binary); skip/fail if none."""
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        yield RedisServer(url=url, owned=False)
        return
    reasons: list[str] = []
    if _docker_engine_answers():
        stack = contextlib.ExitStack()
        try:
            server = stack.enter_context(_container_redis())
        except Exception as exc:  # fall back to local binaries, but say why
            reasons.append(f"testcontainers Redis failed: {exc!r}")
        else:
            with stack:
                yield server
            return
    else:
        reasons.append("no Docker engine for testcontainers")
    executable = shutil.which("redis-server")
    if executable is None:
        reasons.append("redis-server not on PATH")
        unavailable(f"no Redis server for integration tests ({'; '.join(reasons)}): {INSTALL_HINT}")
    with _local_redis(executable) as server:
        yield server


# --------------------------------------------------------------------------------------------
# RabbitMQ


def _rabbit_bin_dir() -> Path | None:
    candidates = [os.environ.get(RABBITMQ_BIN_DIR_ENV, ""), DEFAULT_RABBITMQ_BIN_DIR]
    for candidate in candidates:
        if candidate and (Path(candidate) / "rabbitmq-server").is_file():
            return Path(candidate)
    return None


def _without_rabbit_env() -> dict[str, str]:
    # A developer's RABBITMQ_* settings would point our node at their config/data.
    return {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}


def _local_ctl(bin_dir: Path, node: str, home: Path) -> Callable[[Sequence[str]], str]:
    # The CLI only needs the node name and the cookie in HOME. It must not inherit
    # RABBITMQ_DIST_PORT: it derives its own distribution port from it (+10000).
    env = {**_without_rabbit_env(), "HOME": str(home)}

    def ctl(args: Sequence[str]) -> str:
        result = subprocess.run(
            [str(bin_dir / "rabbitmqctl"), "-n", node, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    return ctl


@contextlib.contextmanager
def _local_rabbit(bin_dir: Path) -> Iterator[RabbitServer]:
    _cleanup.install_sigterm_handler()
    workdir = Path(tempfile.mkdtemp(prefix="aiocelerymon-rabbit-"))
    node = f"aiocm-{uuid.uuid4().hex[:10]}@localhost"
    # A fixed cookie written before start: otherwise the server and the first rabbitmqctl
    # call race to create HOME/.erlang.cookie.
    cookie = workdir / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16))
    cookie.chmod(0o400)
    # No plugins and no /etc config: the node starts faster and cannot pick up host settings.
    (workdir / "enabled_plugins").write_text("[].\n")
    amqp_port, dist_port = free_port(), free_port()
    env = {
        **_without_rabbit_env(),
        "HOME": str(workdir),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": RABBIT_ERL_ARGS,
    }
    out = workdir / "server.out"
    ctl = _local_ctl(bin_dir, node, workdir)
    owned = contextlib.ExitStack()
    try:
        owned.enter_context(_cleanup.owned_dir(workdir))
        with out.open("wb") as out_file:
            proc = subprocess.Popen(
                [str(bin_dir / "rabbitmq-server")],
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=subprocess.STDOUT,
                # Own process group: the script, beam.smp and its helpers are stopped together.
                start_new_session=True,
            )
        owned.enter_context(_cleanup.owned_process(proc))
        try:
            _await_rabbit(proc, ctl, RABBIT_START_TIMEOUT)
        except RuntimeError as exc:
            stop_process_group(proc)
            logs = "\n".join(_tail(p, 3000) for p in [out, *sorted(workdir.glob("log/*.log"))])
            unavailable(f"rabbitmq-server did not start: {exc}\n{logs}\n({INSTALL_HINT})")
        try:
            yield RabbitServer(
                url=f"amqp://guest:guest@127.0.0.1:{amqp_port}//",
                owned=True,
                node=node,
                _ctl=ctl,
            )
        finally:
            stop_process_group(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        owned.close()


def _await_rabbit(
    proc: subprocess.Popen[bytes], ctl: Callable[[Sequence[str]], str], timeout: float
) -> None:
    """Poll ``await_startup`` until it succeeds, the server dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"not ready after {timeout:.0f}s: {last_error[-2000:]}")
        try:
            # await_startup fails at once while the node is not registered with epmd yet,
            # and blocks (up to --timeout) once it is booting.
            ctl(["await_startup", "--timeout", str(max(1, int(remaining)))])
        except RuntimeError as exc:
            last_error = str(exc)
            time.sleep(0.25)
        else:
            return


@contextlib.contextmanager
def _container_rabbit() -> Iterator[RabbitServer]:
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:
        from testcontainers.rabbitmq import RabbitMqContainer
    image = os.environ.get(RABBITMQ_IMAGE_ENV, "rabbitmq:3.13-alpine")
    with RabbitMqContainer(image) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)

        def ctl(args: Sequence[str]) -> str:
            code, output = container.exec(["rabbitmqctl", *args])
            text = bytes(output).decode(errors="replace")
            if code != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)} exited {code}:\n{text}")
            return text

        yield RabbitServer(url=f"amqp://guest:guest@{host}:{port}//", owned=True, _ctl=ctl)


@contextlib.contextmanager
def rabbit_server() -> Iterator[RabbitServer]:
    """Yield a RabbitMQ server (env URL, container or local binary); skip/fail if none."""
    url = os.environ.get(AMQP_URL_ENV)
    if url:
        yield RabbitServer(url=url, owned=False)
        return
    reasons: list[str] = []
    if _docker_engine_answers():
        stack = contextlib.ExitStack()
        try:
            server = stack.enter_context(_container_rabbit())
        except Exception as exc:  # e.g. pika (needed by RabbitMqContainer) missing
            reasons.append(f"testcontainers RabbitMQ failed: {exc!r}")
        else:
            with stack:
                yield server
            return
    else:
        reasons.append("no Docker engine for testcontainers")
    bin_dir = _rabbit_bin_dir()
    if bin_dir is None:
        reasons.append(f"no rabbitmq-server in {DEFAULT_RABBITMQ_BIN_DIR}")
        unavailable(f"no RabbitMQ for integration tests ({'; '.join(reasons)}): {INSTALL_HINT}")
    with _local_rabbit(bin_dir) as server:
        yield server
