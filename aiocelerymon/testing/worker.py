"""Run a real Celery worker of any app as a subprocess, and stop it cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from aiocelerymon.testing import _cleanup, worker_app

STOP_TIMEOUT = 20.0

# The first banner line: " -------------- w1@host v5.6.3 (recovery)".
_BANNER_VERSION = re.compile(r"\sv(\d+\.\d+\.\d+\S*)\s+\(")
# Environment variables that Celery reads and that would override the app's own config.
CELERY_ENV = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_CONFIG_MODULE")


class CeleryWorkerError(RuntimeError):
    """The worker did not become ready; the message ends with its log."""


@dataclass
class CeleryWorker:
    """Handle on a running worker subprocess."""

    hostname: str
    process: subprocess.Popen[str]
    python: str
    _lines: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)
    _version: str | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """PID of the worker's main process."""
        return self.process.pid

    @property
    def version(self) -> str:
        """Celery version the worker runs, from its banner (or the installed distribution)."""
        if self._version is not None:
            return self._version
        if self.python == sys.executable:
            return metadata.version("celery")
        return "unknown"

    def log(self) -> str:
        """Everything the worker wrote to stdout/stderr so far."""
        with self._lock:
            return "".join(self._lines)

    def _pump(self, stream: IO[str]) -> None:
        ready_marker = f"{self.hostname} ready."
        for line in stream:
            with self._lock:
                self._lines.append(line)
            if self._version is None and (match := _BANNER_VERSION.search(line)):
                self._version = match.group(1)
            if ready_marker in line:
                self._ready.set()
        stream.close()


@contextlib.contextmanager
def start_celery_worker(
    app: str,
    hostname: str,
    *,
    broker_url: str | None = None,
    queues: Sequence[str] = (),
    concurrency: int = 1,
    events: bool = True,
    pool: str = "prefork",
    loglevel: str = "INFO",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 60,
    python: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Iterator[CeleryWorker]:
    """Start ``celery -A app worker -n hostname`` and yield once it logged ``<hostname> ready.``.

    ``broker_url`` is passed as ``CELERY_BROKER_URL``, which Celery prefers over the app's own
    ``broker_url``; ``env`` is the subprocess environment (default: ours, with Celery's own
    variables removed). ``config`` holds Celery settings laid over the app's own (dicts such
    as ``broker_transport_options`` merged), applied by :mod:`aiocelerymon.testing.worker_app`
    in the worker. ``python`` selects another interpreter; default: this one. Mingle and
    gossip are off: a test worker should not wait for, or talk to, its neighbours.
    """
    interpreter = python or sys.executable
    target = app if not config else "aiocelerymon.testing.worker_app"
    argv = [
        interpreter, "-m", "celery", "-A", target, "worker",
        "-n", hostname,
        "-c", str(concurrency),
        "-P", pool,
        "-l", loglevel,
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    if queues:
        argv += ["-Q", ",".join(queues)]
    if events:
        argv.append("-E")
    argv += extra_args
    full_env = dict(os.environ if env is None else env)
    if env is None:
        for name in CELERY_ENV:
            full_env.pop(name, None)
    if broker_url is not None:
        full_env["CELERY_BROKER_URL"] = broker_url
    if config:
        full_env[worker_app.APP_ENV] = app
        full_env[worker_app.CONFIG_ENV] = json.dumps(dict(config))
    # The banner is printed to stdout; unbuffered so it reaches our pipe before "ready.".
    full_env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Own process group so prefork children can be killed with the parent.
        start_new_session=True,
    )
    assert proc.stdout is not None
    worker = CeleryWorker(hostname=hostname, process=proc, python=interpreter)
    reader = threading.Thread(
        target=worker._pump, args=(proc.stdout,), name=f"celery-log-{hostname}", daemon=True
    )
    reader.start()
    try:
        with _cleanup.owned_process(proc):
            _await_ready(worker, timeout)
            yield worker
    except Exception as exc:
        if not isinstance(exc, CeleryWorkerError):
            # Python 3.11: pytest prints notes, so a failing test shows what the worker said.
            exc.add_note(f"--- log of celery worker {hostname} ---\n{worker.log()}")
        raise
    finally:
        stop_worker(proc)
        reader.join(5)


def _await_ready(worker: CeleryWorker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not worker._ready.wait(0.1):
        if worker.process.poll() is not None:
            raise CeleryWorkerError(
                f"celery worker {worker.hostname} exited with {worker.process.returncode} "
                f"before it was ready:\n{worker.log()}"
            )
        if time.monotonic() > deadline:
            raise CeleryWorkerError(
                f"celery worker {worker.hostname} not ready after {timeout:.0f}s:\n{worker.log()}"
            )


def stop_worker(proc: subprocess.Popen[str]) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL of the process group; reaps the worker."""
    # SIGTERM to the main process only: that is Celery's warm shutdown, which stops the pool
    # children itself. SIGKILL of the whole group is the fallback and sweeps any leftovers.
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(STOP_TIMEOUT)
