"""``aiocelerymon exporter``: Prometheus metrics only, a drop-in for celery-exporter.

celery-exporter's options, names and defaults (``--port 9808``, ``--host 0.0.0.0``,
``--buckets``, ``--worker-timeout``, ``--purge-offline-worker-metrics``, ``--metric-prefix``,
``--static-label``, ``--generic-hostname-*``, ``-Q``, ``--broker-url`` ...), so a deployment
switches by changing the command. Every option also reads ``AIOCELERYMON_EXPORTER_<NAME>``
(e.g. ``AIOCELERYMON_EXPORTER_PORT``). Serves ``/metrics``, ``/health`` and ``/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiocelerymon.cli._common import (
    EX_OK,
    CommandError,
    Context,
    Invocation,
    UsageError,
    Verb,
    _env,
    _execute,
    _Parser,
    _transport_option,
)
from aiocelerymon.cli._output import Output
from aiocelerymon.client import Client
from aiocelerymon.metrics import (
    DEFAULT_BUCKETS,
    DEFAULT_QUEUE_WAIT_BUCKETS,
    ExporterApp,
    MetricsCollector,
    MetricsSettings,
    QueuePoller,
)
from aiocelerymon.pipeline import Monitor
from aiocelerymon.pipeline.monitor import MAX_TASKS, MAX_WORKERS

DEFAULT_PORT = 9808
ENV_PREFIX = "AIOCELERYMON_EXPORTER_"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})


@dataclass
class ExporterInvocation(Invocation):
    """The command line of ``exporter``: the global options and the exporter's own."""

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    settings: MetricsSettings = field(default_factory=MetricsSettings)
    queue_interval: float = 15.0
    inspect_timeout: float = 1.0
    max_tasks: int = MAX_TASKS
    max_workers: int = MAX_WORKERS
    log_level: str = "INFO"


def _buckets_text(buckets: tuple[float, ...]) -> str:
    return ",".join(str(b) for b in buckets if b != float("inf"))


def _env_default(dest: str, default: Any) -> Any:
    value = os.environ.get(ENV_PREFIX + dest.upper())
    return default if value is None else value


def _exporter_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} exporter",
        usage=f"{prog} exporter [OPTIONS]",
        help_command=f"{prog} exporter",
        description=(
            "Serve Prometheus metrics compatible with celery-exporter (same names, labels and "
            "options), plus the monitor's own ingestion health. Each option also reads "
            f"{ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}PORT)."
        ),
    )
    e = _env_default
    g = parser.add_argument_group("exporter options (celery-exporter's)")
    g.add_argument(
        "--broker-url",
        metavar="URL",
        default=e("broker_url", None),
        help="The broker URL (same as the global -b).",
    )
    g.add_argument(
        "--broker-transport-option",
        action="append",
        default=[],
        metavar="K=V",
        help="Broker transport option (as --transport-option). Repeatable.",
    )
    g.add_argument(
        "--accept-content",
        metavar="LIST",
        default=e("accept_content", None),
        help="Accepted for compatibility; the serializers come from the app (-A), "
        "json otherwise; pickle is refused.",
    )
    g.add_argument(
        "--retry-interval",
        metavar="SECONDS",
        default=e("retry_interval", "0"),
        help="Accepted for compatibility: the broker is always reconnected to.",
    )
    g.add_argument(
        "--host",
        default=e("host", "0.0.0.0"),
        help="Address to listen on (default 0.0.0.0, as celery-exporter).",
    )
    g.add_argument(
        "--port",
        default=e("port", str(DEFAULT_PORT)),
        help=f"Port to listen on (default {DEFAULT_PORT}; 0 picks a free one).",
    )
    g.add_argument(
        "--buckets",
        default=e("buckets", _buckets_text(DEFAULT_BUCKETS)),
        help="Bounds of the celery_task_runtime histogram, comma separated.",
    )
    g.add_argument(
        "--queue-wait-buckets",
        default=e("queue_wait_buckets", _buckets_text(DEFAULT_QUEUE_WAIT_BUCKETS)),
        help="Bounds of the celery_task_queue_wait_time histogram.",
    )
    g.add_argument(
        "--log-level",
        default=e("log_level", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR (default INFO).",
    )
    g.add_argument(
        "--worker-timeout",
        metavar="SECONDS",
        default=e("worker_timeout", "300"),
        help="celery_worker_up becomes 0 after this long without a heartbeat "
        "(default 300; 0: never).",
    )
    g.add_argument(
        "--purge-offline-worker-metrics",
        metavar="SECONDS",
        default=e("purge_offline_worker_metrics", "600"),
        help="Remove every series of a host silent this long (default 600; 0: never).",
    )
    g.add_argument(
        "--generic-hostname-task-sent-metric",
        action="store_true",
        default=None,
        help="Label celery_task_sent_total with hostname=generic.",
    )
    g.add_argument(
        "--generic-hostname-worker-task-metric",
        action="store_true",
        default=None,
        help="Label the workers' task series with hostname=generic.",
    )
    g.add_argument(
        "-Q",
        "--queues",
        metavar="LIST",
        default=e("queues", None),
        help="Queues (comma separated) whose gauges exist before a worker consumes from them.",
    )
    g.add_argument(
        "--metric-prefix",
        default=e("metric_prefix", "celery_"),
        help="Prefix replacing 'celery_' in the metric names.",
    )
    g.add_argument(
        "--static-label",
        action="append",
        default=[],
        metavar="K=V",
        help="A label with a fixed value on every series. Repeatable.",
    )
    g.add_argument(
        "--default-queue-name",
        default=e("default_queue_name", "celery"),
        help="queue_name of tasks whose queue is not known (default celery).",
    )
    o = parser.add_argument_group("aiocelerymon options")
    o.add_argument(
        "--flower-metrics",
        action="store_true",
        default=None,
        help="Also Flower's flower_* metrics.",
    )
    o.add_argument(
        "--start-at-zero",
        action="store_true",
        default=None,
        help="New series show 0 at their first scrape and their count from the next, so "
        "increase() counts a short-lived worker's first task.",
    )
    o.add_argument(
        "--queue-interval",
        metavar="SECONDS",
        default=e("queue_interval", "15"),
        help="Seconds between queue polls (default 15).",
    )
    o.add_argument(
        "--inspect-timeout",
        metavar="SECONDS",
        default=e("inspect_timeout", "1"),
        help="Total deadline of each poll's inspect (default 1).",
    )
    o.add_argument(
        "--max-series",
        metavar="N",
        default=e("max_series", "200000"),
        help="Task label sets kept at most (default 200000).",
    )
    o.add_argument(
        "--max-tasks",
        metavar="N",
        default=e("max_tasks", str(MAX_TASKS)),
        help=f"Tasks the State keeps (default {MAX_TASKS}).",
    )
    o.add_argument(
        "--max-workers",
        metavar="N",
        default=e("max_workers", str(MAX_WORKERS)),
        help=f"Workers the State keeps (default {MAX_WORKERS}).",
    )
    o.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    return parser  # fmt: skip


def _flag(value: bool | None, dest: str) -> bool:
    if value:
        return True
    raw = os.environ.get(ENV_PREFIX + dest.upper())
    if raw is None:
        return False
    folded = raw.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise UsageError(f"Invalid value for {ENV_PREFIX}{dest.upper()}: {raw!r} is not a boolean.")


def _number(option: str, raw: Any, *, minimum: float = 0, integer: bool = False) -> Any:
    try:
        value = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise UsageError(f"Invalid value for {option}: {raw!r} is not {kind}.") from None
    if not (minimum <= value < 1e12):
        raise UsageError(f"Invalid value for {option}: {raw!r} must be at least {minimum:g}.")
    return value


def _bucket_list(option: str, raw: str) -> list[float]:
    try:
        return [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"Invalid value for {option}: {raw!r} is not a list of numbers.") from None


def _pairs(option: str, items: list[str], env: str) -> dict[str, str]:
    extra = os.environ.get(ENV_PREFIX + env)
    if extra:
        items = [*items, *[p for p in extra.split(",") if p]]
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects KEY=VALUE, got {item!r}.")
        out[key] = value
    return out


def _exporter_invocation(ns: argparse.Namespace, sns: argparse.Namespace) -> ExporterInvocation:
    options = dict(_transport_option(item) for item in ns.transport_option)
    options.update(_transport_option(item) for item in sns.broker_transport_option)
    _number("--retry-interval", sns.retry_interval)
    port = _number("--port", sns.port, integer=True)
    if port > 65535:
        raise UsageError(f"Invalid value for --port: {sns.port!r} is not a port number.")
    level = str(sns.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise UsageError(f"Invalid value for --log-level: {sns.log_level!r}.")
    accept = [a for a in (sns.accept_content or "").split(",") if a]
    if "pickle" in accept:
        raise UsageError("--accept-content: pickle is never deserialized by aiocelerymon.")
    try:
        settings = MetricsSettings(
            metric_prefix=sns.metric_prefix,
            static_labels=_pairs("--static-label", sns.static_label, "STATIC_LABEL"),
            buckets=_bucket_list("--buckets", sns.buckets),
            queue_wait_buckets=_bucket_list("--queue-wait-buckets", sns.queue_wait_buckets),
            worker_timeout=_number("--worker-timeout", sns.worker_timeout),
            purge_offline_worker_metrics=_number(
                "--purge-offline-worker-metrics", sns.purge_offline_worker_metrics
            ),
            generic_hostname_task_sent_metric=_flag(
                sns.generic_hostname_task_sent_metric, "generic_hostname_task_sent_metric"
            ),
            generic_hostname_worker_task_metric=_flag(
                sns.generic_hostname_worker_task_metric, "generic_hostname_worker_task_metric"
            ),
            default_queue_name=sns.default_queue_name,
            queues=[q for q in (sns.queues or "").split(",") if q],
            flower_metrics=_flag(sns.flower_metrics, "flower_metrics"),
            max_series=_number("--max-series", sns.max_series, minimum=1, integer=True),
            start_at_zero=_flag(sns.start_at_zero, "start_at_zero"),
        )
    except ValueError as exc:
        raise UsageError(f"Invalid exporter option: {exc}.") from None
    queue_interval = _number("--queue-interval", sns.queue_interval)
    inspect_timeout = _number("--inspect-timeout", sns.inspect_timeout)
    for option, value in (
        ("--queue-interval", queue_interval),
        ("--inspect-timeout", inspect_timeout),
    ):
        if value <= 0:
            raise UsageError(f"Invalid value for {option}: {value:g} must be positive.")
    invocation = ExporterInvocation(
        subcommand="exporter",
        app=ns.app or _env("APP", "CELERY_APP"),
        broker=ns.broker or sns.broker_url or _env("BROKER_URL", "CELERY_BROKER"),
        control_exchange=ns.control_exchange,
        transport_options=options,
        host=sns.host,
        port=port,
        settings=settings,
        queue_interval=queue_interval,
        inspect_timeout=inspect_timeout,
        max_tasks=_number("--max-tasks", sns.max_tasks, minimum=1, integer=True),
        max_workers=_number("--max-workers", sns.max_workers, minimum=1, integer=True),
        log_level=level,
    )
    return invocation


def _listen(host: str, port: int) -> socket.socket:
    """Bind before connecting anywhere, so a taken port is a clear error, not a log line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CommandError(f"Cannot listen on {host}:{port}: {exc}.") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise CommandError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from exc
    return sock


async def _serve(client: Client, inv: ExporterInvocation, sock: socket.socket, out: Output) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise CommandError(
            "The exporter needs uvicorn: pip install 'aiocelerymon[exporter]'.", 2
        ) from exc
    collector = MetricsCollector(inv.settings)
    monitor = Monitor(client, max_tasks=inv.max_tasks, max_workers=inv.max_workers)
    collector.attach(monitor)
    poller = QueuePoller(
        collector,
        client,
        state=monitor.state,
        interval=inv.queue_interval,
        timeout=inv.inspect_timeout,
    )
    app = ExporterApp(collector, healthy=lambda: monitor.stats.ready)
    config = uvicorn.Config(
        app,
        log_level=inv.log_level.lower(),
        access_log=False,
        lifespan="off",
        log_config=None,  # our logging stays as the CLI set it up
    )

    class Server(uvicorn.Server):
        # uvicorn re-raises SIGINT/SIGTERM after shutting down (the process would die of it);
        # the exporter stops on them and exits 0 instead.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    host, port = sock.getsockname()[:2]
    try:
        async with monitor:
            polling = asyncio.create_task(poller.run())
            out.echo(f"aiocelerymon exporter: serving http://{host}:{port}/metrics")
            try:
                await server.serve(sockets=[sock])
            finally:
                polling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await polling
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return EX_OK


async def _run(ctx: Context) -> int:
    inv = ctx.invocation
    assert isinstance(inv, ExporterInvocation)
    logging.getLogger("aiocelerymon").setLevel(inv.log_level)
    sock = _listen(inv.host, inv.port)
    try:
        # Waits for the broker as long as it takes, one warning per outage (as a monitor).
        return await _execute(
            inv, ctx.app, lambda client: _serve(client, inv, sock, ctx.out), retry=True
        )
    finally:
        sock.close()


VERB = Verb(
    name="exporter",
    summary="Serve Prometheus metrics, compatible with celery-exporter (port 9808).",
    parser=_exporter_parser,
    invocation=lambda ns, sns, _sub: _exporter_invocation(ns, sns),
    run=_run,
)
