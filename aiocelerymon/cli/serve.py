"""``aiocelerymon serve``: the web monitor (Flower-compatible API, live push) on uvicorn.

One asyncio process: the Monitor ingests the event stream, the app answers HTTP and push
clients from it. Flower's option names and defaults (``--address``, ``--port 5555``,
``--url-prefix``, ``--max-tasks 100000``, ``--max-workers 5000``, ``--inspect-timeout``,
``--purge-offline-workers``, ``--enable-events``), each also read from ``AIOCELERYMON_<NAME>``
(and Flower's ``FLOWER_<NAME>`` as a fallback, for drop-in use). Ctrl-C and SIGTERM stop it
cleanly: HTTP connections closed, the event and reply queues removed, exit status 0.

Task history (``--db``, ``AIOCELERYMON_DB``) is on by default, in an SQLite file in the user's
data directory; ``--db postgresql://...`` shares it, ``--db none`` turns it off. At start the
State is warmed from it (up to ``--max-tasks``) and the downtime is recorded as a gap; rows are
keyed by the broker URL (password removed), so one file serves several brokers unmixed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import ipaddress
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aiocelerymon.cli._common import (
    CLOSE_TIMEOUT,
    EX_FAILURE,
    EX_OK,
    CommandError,
    Context,
    Invocation,
    UsageError,
    Verb,
    _env,
    _env_flag,
    _Parser,
    _transport_option,
    build_client,
)
from aiocelerymon.store._base import DEFAULT_FIELD_LIMIT

#: Flower's defaults.
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555
DEFAULT_INSPECT_TIMEOUT = 1.0
MAX_TASKS = 100_000
MAX_WORKERS = 5000

WEB_MISSING = "aiocelerymon serve needs the web extra: pip install 'aiocelerymon[web]'."
#: ``--db`` values that keep no history.
NO_DB = frozenset({"none", "off", "false", "no", "0"})
#: Task history retention defaults: a week, a million tasks.
DB_MAX_AGE = 7 * 24 * 3600.0
DB_MAX_TASKS = 1_000_000


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/aiocelerymon/history.sqlite3`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aiocelerymon" / "history.sqlite3"


log = logging.getLogger("aiocelerymon.web")


def _security() -> ModuleType | None:
    """The security layer (``aiocelerymon.web.security``), when installed with this package."""
    try:
        return importlib.import_module("aiocelerymon.web.security")
    except ImportError:
        return None


@dataclass
class ServeInvocation(Invocation):
    """``serve``'s own options on top of the global ones."""

    address: str = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    url_prefix: str = ""
    max_tasks: int = MAX_TASKS
    max_workers: int = MAX_WORKERS
    inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
    purge_offline_workers: float | None = None
    enable_events: bool = False
    insecure_no_auth: bool = False
    #: The store URL; None: the default SQLite file; "none": no history.
    db: str | None = None
    db_max_age: float | None = DB_MAX_AGE
    db_max_tasks: int | None = DB_MAX_TASKS
    db_field_limit: int = DEFAULT_FIELD_LIMIT
    namespace: argparse.Namespace | None = None


def _env_serve(name: str) -> str | None:
    return _env(f"AIOCELERYMON_{name}", f"FLOWER_{name}")


def _serve_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} serve",
        usage=f"{prog} serve [OPTIONS]",
        help_command=f"{prog} serve",
        description=(
            "The web monitor: a Flower-compatible HTTP API and live push (WebSocket, SSE) "
            "over the cluster's event stream and remote control. Every option can also be "
            "set as AIOCELERYMON_<OPTION> (e.g. AIOCELERYMON_PORT)."
        ),
    )
    group = parser.add_argument_group("server options")
    group.add_argument(
        "--address", metavar="HOST",
        help=f"Address to bind (default {DEFAULT_ADDRESS}; a non-loopback one needs auth).",
    )  # fmt: skip
    group.add_argument("--port", metavar="PORT", help=f"Port (default {DEFAULT_PORT}; 0: any).")
    group.add_argument("--url-prefix", metavar="PATH", help="Serve under this path prefix.")
    group.add_argument(
        "--max-tasks", metavar="N", help=f"Tasks kept in memory (default {MAX_TASKS})."
    )
    group.add_argument(
        "--max-workers", metavar="N", help=f"Workers kept in memory (default {MAX_WORKERS})."
    )
    group.add_argument(
        "--inspect-timeout", metavar="SECONDS",
        help=(
            "Total deadline of inspect and control calls, in seconds (default "
            f"{DEFAULT_INSPECT_TIMEOUT:g}); they return as soon as every live worker answered."
        ),
    )  # fmt: skip
    group.add_argument(
        "--purge-offline-workers", metavar="SECONDS",
        help="Forget workers offline for longer than SECONDS.",
    )  # fmt: skip
    group.add_argument(
        "--enable-events", action="store_true", default=None,
        help=(
            "Ask workers to send task events: once at start, and once to each new worker "
            "that sends none (never periodically)."
        ),
    )  # fmt: skip
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    history = parser.add_argument_group("task history options")
    history.add_argument(
        "--db", metavar="URL",
        help=(
            "Where task history is kept: sqlite:///PATH (SQLAlchemy's slashes), a file path, "
            "or postgresql://USER:PASSWORD@HOST/DB; 'none' keeps none. Default: "
            f"{default_db_path()}. Env AIOCELERYMON_DB."
        ),
    )  # fmt: skip
    history.add_argument(
        "--db-max-age", metavar="SECONDS",
        help=f"Delete tasks whose last event is older (default {DB_MAX_AGE:g}; 0: keep).",
    )  # fmt: skip
    history.add_argument(
        "--db-max-tasks", metavar="N",
        help=f"Keep at most N tasks (default {DB_MAX_TASKS}; 0: no limit).",
    )  # fmt: skip
    history.add_argument(
        "--db-field-limit", metavar="CHARS",
        help=(
            "Characters kept of each task's args, kwargs, result, exception and traceback "
            f"(default {DEFAULT_FIELD_LIMIT})."
        ),
    )  # fmt: skip
    security = _security()
    auth = parser.add_argument_group("security options")
    if security is not None:
        security.add_security_options(auth)
    else:
        auth.add_argument(
            "--insecure-no-auth", action="store_true", default=None,
            help="Allow a non-loopback --address without authentication.",
        )  # fmt: skip
    return parser


def _number(option: str, raw: str | None, kind: Callable[[str], Any], low: float,
            high: float | None = None) -> Any:  # fmt: skip
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise UsageError(f"Invalid value for {option}: {raw!r} is not a number.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"Invalid value for {option}: {raw!r} is not a finite number.")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise UsageError(f"Invalid value for {option}: {raw!r} must be {bound}.")
    return value


def _serve_invocation(ns: argparse.Namespace, sns: argparse.Namespace) -> ServeInvocation:
    def pick(attr: str, env: str) -> Any:
        value = getattr(sns, attr)
        return value if value is not None else _env_serve(env)

    port = _number("--port", pick("port", "PORT"), int, 0, 65535)
    max_tasks = _number("--max-tasks", pick("max_tasks", "MAX_TASKS"), int, 1)
    max_workers = _number("--max-workers", pick("max_workers", "MAX_WORKERS"), int, 1)
    timeout = _number("--inspect-timeout", pick("inspect_timeout", "INSPECT_TIMEOUT"), float,
                      0.001, 3600)  # fmt: skip
    purge = _number(
        "--purge-offline-workers", pick("purge_offline_workers", "PURGE_OFFLINE_WORKERS"),
        float, 0.001,
    )  # fmt: skip
    prefix = pick("url_prefix", "URL_PREFIX") or ""
    from aiocelerymon.web.app import normalize_prefix

    try:
        prefix = normalize_prefix(prefix)
    except ValueError as exc:
        raise UsageError(f"Invalid value for --url-prefix: {exc}.") from None
    enable = sns.enable_events or _env_flag("--enable-events", "AIOCELERYMON_ENABLE_EVENTS")
    insecure = bool(getattr(sns, "insecure_no_auth", None)) or _env_flag(
        "--insecure-no-auth", "AIOCELERYMON_INSECURE_NO_AUTH"
    )
    db = pick("db", "DB")
    db = db.strip() if db is not None else None
    if db == "":
        raise UsageError("Invalid value for --db: an empty URL (use 'none' to keep no history).")
    if db is not None and db.lower() not in NO_DB:
        try:
            from aiocelerymon.store import store_for_url

            store_for_url(db)
        except ValueError as exc:
            raise UsageError(f"Invalid value for --db: {exc}.") from None
    max_age = _number("--db-max-age", pick("db_max_age", "DB_MAX_AGE"), float, 0)
    db_tasks = _number("--db-max-tasks", pick("db_max_tasks", "DB_MAX_TASKS"), int, 0)
    field_limit = _number(
        "--db-field-limit", pick("db_field_limit", "DB_FIELD_LIMIT"), int, 1, 10**9
    )
    return ServeInvocation(
        subcommand="serve",
        app=ns.app or _env("APP", "CELERY_APP", "AIOCELERYMON_APP"),
        broker=ns.broker or _env("BROKER_URL", "CELERY_BROKER", "AIOCELERYMON_BROKER_URL"),
        no_color=bool(ns.no_color),
        quiet=bool(ns.quiet),
        control_exchange=ns.control_exchange,
        transport_options=dict(_transport_option(item) for item in ns.transport_option),
        address=(pick("address", "ADDRESS") or DEFAULT_ADDRESS).strip(),
        port=DEFAULT_PORT if port is None else port,
        url_prefix=prefix,
        max_tasks=max_tasks or MAX_TASKS,
        max_workers=max_workers or MAX_WORKERS,
        inspect_timeout=timeout or DEFAULT_INSPECT_TIMEOUT,
        purge_offline_workers=purge,
        enable_events=bool(enable),
        insecure_no_auth=insecure,
        db=db,
        db_max_age=DB_MAX_AGE if max_age is None else (max_age or None),
        db_max_tasks=DB_MAX_TASKS if db_tasks is None else (db_tasks or None),
        db_field_limit=field_limit or DEFAULT_FIELD_LIMIT,
        namespace=sns,
    )


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``; an unresolvable name is not."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(address: str, port: int) -> socket.socket:
    """A listening socket (so the real port of ``--port 0`` is known before serving)."""
    host = address.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise CommandError(f"Cannot bind {address}:{port}: {exc}", EX_FAILURE) from exc
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CommandError(f"Cannot bind {address}:{port}: {exc}", EX_FAILURE) from exc
    sock.setblocking(False)
    return sock


def _default_queues(app: Any) -> tuple[str, ...]:
    if app is None:
        return ("celery",)
    with contextlib.suppress(Exception):
        names = [str(q) for q in app.amqp.queues]
        if names:
            return tuple(names)
    return (str(getattr(app.conf, "task_default_queue", None) or "celery"),)


@contextlib.contextmanager
def _audit_to_stderr() -> Iterator[None]:
    """The audit trail (INFO) and our warnings, with timestamps, on stderr while serving."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    audit = logging.getLogger("aiocelerymon.web.audit")
    level, propagate = audit.level, audit.propagate
    audit.setLevel(logging.INFO)
    audit.addHandler(handler)
    audit.propagate = False
    try:
        yield
    finally:
        audit.removeHandler(handler)
        audit.setLevel(level)
        audit.propagate = propagate


async def _run(ctx: Context) -> int:
    invocation = ctx.invocation
    assert isinstance(invocation, ServeInvocation)
    try:
        import uvicorn

        from aiocelerymon.metrics import MetricsCollector, QueuePoller, metrics_route
        from aiocelerymon.pipeline import Monitor
        from aiocelerymon.web import create_app
    except ImportError as exc:
        raise UsageError(WEB_MISSING) from exc
    security = _security()
    settings = None
    if security is not None:
        try:
            settings = security.security_settings_from_args(invocation.namespace)
            security.check_bind(invocation.address, settings)
        except ValueError as exc:  # ConfigurationError: a bad flag, file or bind; no secret
            raise UsageError(str(exc)) from exc
    elif not is_loopback(invocation.address) and not invocation.insecure_no_auth:
        raise UsageError(
            f"Refusing to serve on {invocation.address} without authentication: bind a "
            "loopback address, or pass --insecure-no-auth."
        )
    sock = _bind(invocation.address, invocation.port)
    client = build_client(invocation, ctx.app)
    monitor = Monitor(
        client,
        max_tasks=invocation.max_tasks,
        max_workers=invocation.max_workers,
        purge_offline_workers=invocation.purge_offline_workers,
        enable_events=invocation.enable_events,
    )
    # /metrics: celery-exporter's metrics (default options) and the ingestion health, read
    # from this monitor; the queue gauges are polled in the background.
    collector = MetricsCollector()
    collector.attach(monitor)
    poller = QueuePoller(collector, client, state=monitor.state, timeout=invocation.inspect_timeout)
    try:
        history = await _open_history(invocation, monitor, cluster_name(client), ctx)
    except BaseException:
        sock.close()
        raise
    app = create_app(
        monitor,
        history=history,
        security=settings,
        url_prefix=invocation.url_prefix,
        inspect_timeout=invocation.inspect_timeout,
        default_queues=_default_queues(ctx.app),
        metrics=metrics_route(collector),
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # X-Forwarded-* are the security layer's business (--forwarded-allow-ips).
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(CLOSE_TIMEOUT),
    )
    server = _Server(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ctx.out.error(
        f"aiocelerymon serve: http://{shown}:{port}{invocation.url_prefix}/ "
        f"(broker {client.transport.url.redacted()})"
    )
    try:
        with _audit_to_stderr():
            if history is not None and history.writer is not None:
                await history.writer.start()  # listening before the first event
            # Started here, not in the app's lifespan: HTTP is up (healthcheck answers) while
            # the monitor still waits for its broker, as Flower's is.
            await monitor.start(wait=False)
            watcher = asyncio.ensure_future(_stop_when_ingestion_fails(monitor, server))
            polling = asyncio.ensure_future(poller.run())
            try:
                await server.serve(sockets=[sock])
            finally:
                watcher.cancel()
                polling.cancel()
    finally:
        sock.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await monitor.aclose()
                await client.aclose()
        if history is not None:
            with contextlib.suppress(Exception):
                if history.writer is not None:
                    await history.writer.aclose(timeout=CLOSE_TIMEOUT)
                await history.store.aclose()
    if server.failure is not None:
        raise CommandError(f"Event ingestion stopped: {server.failure}")
    return EX_OK if server.started else EX_FAILURE


def cluster_name(client: Any) -> str:
    """The name a cluster's stored rows carry: its broker URL without the password, plus the
    Redis ``global_keyprefix`` and the event exchange when set (other clusters on one server).
    """
    transport = client.transport
    name = str(transport.url.redacted())
    options = getattr(transport, "transport_options", None) or {}
    prefix = options.get("global_keyprefix")
    if prefix:
        name += f"#keyprefix={prefix}"
    exchange = getattr(client, "event_settings", None)
    exchange = getattr(exchange, "event_exchange", None)
    if exchange and exchange != "celeryev":
        name += f"#exchange={exchange}"
    return name


async def _open_history(
    invocation: ServeInvocation, monitor: Any, cluster: str, ctx: Context
) -> Any:
    """Open the store, warm the State from it (up to ``--max-tasks``), make the writer.

    An explicit ``--db`` that cannot be opened is an error; the default file is only a
    warning (serving without history beats not serving)."""
    db = invocation.db
    if db is not None and db.lower() in NO_DB:
        return None
    from aiocelerymon.pipeline.history import History, HistoryWriter, warm_state
    from aiocelerymon.store import store_for_url

    store = store_for_url(db if db is not None else str(default_db_path()))
    try:
        async with asyncio.timeout(30):
            await store.open()
            tasks = await store.recent_tasks(cluster, invocation.max_tasks)
            workers = await store.workers(cluster)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await store.aclose()
        message = f"Cannot open the task history {store.url}: {exc}"
        if db is not None:
            raise CommandError(message, EX_FAILURE) from exc
        ctx.out.error(f"{message}; serving without history (--db none hides this).")
        return None
    warmed = warm_state(monitor.state, tasks, workers)
    writer = HistoryWriter(
        monitor,
        store,
        cluster=cluster,
        max_age=invocation.db_max_age,
        max_count=invocation.db_max_tasks,
        field_limit=invocation.db_field_limit,
    )
    ctx.out.error(f"aiocelerymon serve: task history in {store.url} ({warmed} tasks loaded)")
    return History(store, cluster, writer, warmed)


async def _stop_when_ingestion_fails(monitor: Any, server: _Server) -> None:
    try:
        await monitor.wait()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        server.failure = exc
    server.should_exit = True


class _Server:
    """uvicorn's Server with our signal handling: SIGINT/SIGTERM ask for a graceful stop and
    are not re-raised afterwards (uvicorn re-raises them, which would end us with status 1
    or a KeyboardInterrupt instead of a clean exit 0)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                loop = asyncio.get_running_loop()
                installed = []
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                        loop.add_signal_handler(sig, self.handle_exit, sig, None)
                        installed.append(sig)
                try:
                    yield
                finally:
                    for sig in installed:
                        loop.remove_signal_handler(sig)

        self._server = Server(config)
        self.failure: BaseException | None = None

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def should_exit(self) -> bool:
        return bool(self._server.should_exit)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._server.should_exit = value

    async def serve(self, sockets: list[socket.socket]) -> None:
        await self._server.serve(sockets=sockets)


VERB = Verb(
    name="serve",
    summary="The web monitor: Flower-compatible API and live push.",
    parser=_serve_parser,
    invocation=lambda ns, sns, _sub: _serve_invocation(ns, sns),
    run=_run,
)
