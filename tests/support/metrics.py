"""Exporter processes for the metrics tests: ours (``aiocelerymon exporter``) and celery-exporter.

Both run as subprocesses on a free port of 127.0.0.1 and are read over HTTP with
prometheus_client's text parser; waits poll with a deadline.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A scrape of celery-exporter takes >= 2 s (two 1 s inspects); give it room.
SCRAPE_TIMEOUT = 20.0
START_DEADLINE = 60.0

_LISTEN = ("--log-level", "WARNING", "--host", "127.0.0.1", "--port")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def celery_exporter_missing() -> str | None:
    """Why celery-exporter cannot run here, or None. Its wheel installs a top-level ``src``."""
    try:
        from importlib.metadata import version

        version("prometheus-exporter-celery")
    except Exception:
        return "prometheus-exporter-celery is not installed in this environment"
    if importlib.util.find_spec("src.exporter") is None:
        return "prometheus-exporter-celery's module src.exporter is not importable"
    return None


def samples(text: str) -> Samples:
    """``{(sample name, sorted labels): value}`` as prometheus_client parses ``text``."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@dataclass
class ExporterProcess:
    """A running exporter: scrape it, wait on it, stop it."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    last: Samples = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT) as response:
            text = response.read().decode()
        self.last = samples(text)
        return self.last

    def wait_until(
        self, predicate: Callable[[Samples], bool], what: str, deadline: float = START_DEADLINE
    ) -> Samples:
        """Scrape until ``predicate`` holds (a connection refused while starting is retried)."""
        end = time.monotonic() + deadline
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()}")
            with contextlib.suppress(OSError):
                found = self.scrape()
                if predicate(found):
                    return found
            if time.monotonic() > end:
                raise AssertionError(
                    f"{self.name}: {what} not seen within {deadline}s\n{self.log()}"
                )
            time.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextlib.contextmanager
def _process(name: str, argv: Sequence[str], port: int, tmp: Path) -> Iterator[ExporterProcess]:
    log_path = tmp / f"{name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    exporter = ExporterProcess(name, port, proc, log_path)
    try:
        yield exporter
    finally:
        exporter.stop()


def ours(
    broker_url: str, tmp: Path, *, options: Sequence[str] = (), port: int | None = None
) -> contextlib.AbstractContextManager[ExporterProcess]:
    """``aiocelerymon exporter`` on ``broker_url``."""
    port = port or free_port()
    argv = [sys.executable, "-m", "aiocelerymon", "exporter", "--broker-url", broker_url,
            *_LISTEN, str(port), *options]  # fmt: skip
    return _process("aiocelerymon-exporter", argv, port, tmp)


def celery_exporter(
    broker_url: str, tmp: Path, *, options: Sequence[str] = ()
) -> contextlib.AbstractContextManager[ExporterProcess]:
    """celery-exporter (``prometheus-exporter-celery``) on ``broker_url``."""
    missing = celery_exporter_missing()
    if missing is not None:  # a failure with a reason, never a skip
        raise RuntimeError(f"{missing}: the Celery 5.6 interop session installs it")
    port = free_port()
    argv = [sys.executable, "-c", "from src.cli import cli; cli()", "--broker-url", broker_url,
            *_LISTEN, str(port), *options]  # fmt: skip
    return _process("celery-exporter", argv, port, tmp)


def value(found: Samples, metric: str, /, **labels: str) -> float | None:
    return found.get((metric, tuple(sorted(labels.items()))))


def total(found: Samples, metric: str, /, **labels: str) -> float:
    """Sum of ``metric`` over the series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in found.items() if n == metric and want <= set(lbl))


def comparable(found: Samples, ignore: Callable[[str], bool]) -> Samples:
    """The samples to compare between exporters: ``_created`` timestamps and ignored out."""
    return {k: v for k, v in found.items() if not k[0].endswith("_created") and not ignore(k[0])}


def describe_difference(a: Samples, b: Samples) -> Any:
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    differ = sorted((k, a[k], b[k]) for k in set(a) & set(b) if a[k] != b[k])
    return {"only ours": only_a, "only theirs": only_b, "values differ": differ}
