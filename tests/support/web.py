"""``aiocelerymon serve`` and Flower 2.2 as real subprocesses on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env

T = TypeVar("T")

START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
_URL = re.compile(r"aiocelerymon serve: (http://\S+?)/? ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A server subprocess; its stderr is collected line by line."""

    proc: subprocess.Popen[str]
    url: str = ""
    pumper: threading.Thread | None = None
    lines: list[str] = field(default_factory=list)
    _seen: threading.Condition = field(default_factory=threading.Condition)

    def pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """The first stderr line for which ``predicate`` holds (event-driven, not polled)."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError("no such line; stderr:\n" + "\n".join(self.lines))
                self._seen.wait(remaining)

    @property
    def log(self) -> str:
        with self._seen:
            return "\n".join(self.lines)

    def http(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def stop(self, strict: bool = True) -> int:
        """SIGTERM, as a process manager stops it; returns the exit status (``strict``: one
        that does not stop within the deadline is an error, else it is killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            if not strict:
                return code
            raise AssertionError("did not stop on SIGTERM; stderr:\n" + self.log) from None
        finally:
            if self.pumper is not None:
                self.pumper.join(STOP_DEADLINE)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _start(cmd: list[str], env: dict[str, str]) -> Process:
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    process = Process(proc)
    process.pumper = threading.Thread(target=process.pump, daemon=True)
    process.pumper.start()
    return process


@contextlib.contextmanager
def serve(config: dict[str, Any], *args: str) -> Iterator[Process]:
    """``python -m aiocelerymon -A <test app> serve --port 0 ARGS`` (config: Celery settings)."""
    env = celery_env(config)
    cmd = [sys.executable, "-m", "aiocelerymon", "-A", APP_MODULE, "serve", "--port", "0", *args]
    process = _start(cmd, env)
    try:
        line = process.wait_line(lambda s: _URL.search(s) is not None, START_DEADLINE)
        match = _URL.search(line)
        assert match is not None
        process.url = match.group(1)
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def flower(config: dict[str, Any], *args: str, strict: bool = True) -> Iterator[Process]:
    """Flower 2.2 on the same app and broker, its API open (``FLOWER_UNAUTHENTICATED_API``)."""
    port = free_port()
    env = celery_env(config)
    env["FLOWER_UNAUTHENTICATED_API"] = "true"
    cmd = [
        sys.executable, "-m", "celery", "-A", APP_MODULE, "flower",
        "--address=127.0.0.1", f"--port={port}", *args,
    ]  # fmt: skip
    process = _start(cmd, env)
    process.url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                if httpx.get(process.url + "/healthcheck", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.proc.poll() is not None:
                raise AssertionError("Flower did not start:\n" + process.log)
            time.sleep(0.1)  # Flower tells nobody when it listens: poll its healthcheck
        yield process
    finally:
        process.stop(strict)


def until(fetch: Callable[[], T], check: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Call ``fetch`` until ``check`` holds (for Flower, which pushes nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value: {value!r}"[:2000])
        time.sleep(0.05)


def environ_without_proxy() -> None:
    """httpx honours *_proxy variables; a test talks to loopback only."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(name, None)
