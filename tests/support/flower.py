"""A real Flower (the ``flower`` package, 2.2) as a subprocess, for parity tests.

``celery -A <test app> flower --port=0``: Flower binds an ephemeral port before it logs
``Visit me at http://127.0.0.1:<port>``, so the port is read from that line (no race, no
polling). Its unauthenticated API is enabled the documented way (``FLOWER_UNAUTHENTICATED_API``).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env

START_DEADLINE = 60.0
_BANNER = re.compile(r"Visit me at (http://[\d.]+:\d+)")


@dataclass
class Flower:
    """A running Flower: ``url`` and its output so far (for failure reports)."""

    url: str
    output: list[str] = field(default_factory=list)

    def request(
        self, path: str, params: dict[str, Any] | None = None, *, post: bool = False
    ) -> tuple[int, Any]:
        """One API call (blocking: run it in a thread); ``(status, JSON body or text)``."""
        query = urllib.parse.urlencode(params or {})
        url = f"{self.url}{path}"
        data = None
        if post:
            data = query.encode()
        elif query:
            url = f"{url}?{query}"
        req = urllib.request.Request(url, data=data, method="POST" if post else "GET")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, body = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body


@contextlib.contextmanager
def flower(broker_url: str, config: dict[str, Any]) -> Iterator[Flower]:
    """Start Flower on ``broker_url`` with the test app's ``config``; stop it afterwards."""
    env = celery_env({**config, "broker_url": broker_url})
    env["FLOWER_UNAUTHENTICATED_API"] = "true"
    argv = [
        sys.executable, "-m", "celery", "-A", APP_MODULE, f"--broker={broker_url}", "flower",
        "--port=0", "--address=127.0.0.1", "--persistent=False", "--logging=info",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            match = _BANNER.search(line)
            if match and not url:
                url.append(match.group(1))
                found.set()
        found.set()  # ended: wake the waiter

    reader = threading.Thread(target=read, name="flower-output", daemon=True)
    reader.start()
    try:
        if not found.wait(START_DEADLINE) or not url:
            raise RuntimeError("Flower did not start:\n" + "".join(output))
        yield Flower(url[0], output)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
