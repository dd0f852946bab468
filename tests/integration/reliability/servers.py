"""Broker servers of our own that tests may stop and start again on the same port.

The session servers in tests/support are shared with every other test; a restart there would
break them. These are dedicated processes, built from the same low-level helpers.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support import brokers


def _answers(port: int) -> bool:
    """PING answered, with PONG or (under requirepass) NOAUTH."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RestartableRedis:
    """A redis-server on a fixed port; :meth:`stop` and :meth:`start` keep the port."""

    def __init__(self, *args: str) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            brokers.unavailable("redis-server is not on PATH")
        self.executable = executable
        self.args = args
        self.port = brokers.free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="aiocelerymon-reliability-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None
        argv = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), *self.args]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + brokers.REDIS_START_TIMEOUT
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {argv} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            brokers.stop_process_group(proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def restartable_redis(*args: str) -> Iterator[RestartableRedis]:
    server = RestartableRedis(*args)
    try:
        server.start()
        yield server
    finally:
        server.close()


class RestartableRabbit:
    """A rabbitmq-server node with fixed ports, name and data dir, restartable in place."""

    def __init__(self, config: str = "") -> None:
        bin_dir = brokers._rabbit_bin_dir()
        if bin_dir is None:
            brokers.unavailable("no rabbitmq-server for the restart tests")
        self.bin_dir = bin_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="aiocelerymon-reliability-rabbit-"))
        self.node = f"aiocm-rel-{uuid.uuid4().hex[:8]}@localhost"
        cookie = self.workdir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        if config:
            (self.workdir / "rabbitmq.conf").write_text(config)
        self.port, self.dist_port = brokers.free_port(), brokers.free_port()
        self._ctl = brokers._local_ctl(bin_dir, self.node, self.workdir)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def rabbitmqctl(self, *args: str) -> str:
        return self._ctl(args)

    def start(self) -> None:
        assert self.proc is None
        w = self.workdir
        env = {
            **brokers._without_rabbit_env(),
            "HOME": str(w),
            "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
            "RABBITMQ_LOG_BASE": str(w / "log"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(w / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(w / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": brokers.RABBIT_ERL_ARGS,
        }
        with (w / "server.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.bin_dir / "rabbitmq-server")],
                env=env,
                cwd=w,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            brokers._await_rabbit(self.proc, lambda a: self._ctl(a), brokers.RABBIT_START_TIMEOUT)
        except RuntimeError as exc:
            self.stop()
            brokers.unavailable(f"rabbitmq-server did not start: {exc}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            brokers.stop_process_group(proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def ctl_json(self, *args: str) -> list[dict[str, object]]:
        import json

        rows: list[dict[str, object]] = json.loads(self.rabbitmqctl(*args, "--formatter", "json"))
        return rows


@contextlib.contextmanager
def restartable_rabbit(config: str = "") -> Iterator[RestartableRabbit]:
    """A started node; ``config`` is the text of its rabbitmq.conf (e.g. a TLS listener)."""
    server = RestartableRabbit(config)
    try:
        server.start()
        yield server
    finally:
        server.close()
