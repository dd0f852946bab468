"""A real PostgreSQL server for integration tests, and a fresh database per test.

Resolved like the brokers (:mod:`aiocelerymon.testing.brokers`):

1. ``AIOCELERYMON_POSTGRES_URL`` naming a running server (``postgresql://user:pw@host:port/db``),
   which we use but do not own (each test then shares that database);
2. the local binaries (Debian: ``/usr/lib/postgresql/<version>/bin``, or
   ``AIOCELERYMON_POSTGRES_BIN_DIR``), initialised and started in a temporary directory on a free
   loopback port (as the ``postgres`` user when run as root: the server refuses root), stopped
   at the end of the session.

When neither works the test is skipped, or failed when ``CI`` is true or
``AIOCELERYMON_REQUIRE_BROKERS=1``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiocelerymon.testing.brokers import free_port, stop_process_group, unavailable

POSTGRES_URL_ENV = "AIOCELERYMON_POSTGRES_URL"
POSTGRES_BIN_DIR_ENV = "AIOCELERYMON_POSTGRES_BIN_DIR"
POSTGRES_START_TIMEOUT = 60.0
INSTALL_HINT = (
    "install PostgreSQL (Debian: `apt-get install postgresql`), "
    f"or point {POSTGRES_URL_ENV} at a running server"
)


@dataclass
class PostgresServer:
    """A reachable PostgreSQL server; ``url`` names its maintenance database."""

    url: str
    owned: bool
    bin_dir: Path | None = None
    _env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def url_for(self, database: str) -> str:
        """The same server, database ``database``."""
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{database}"))

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run one SQL statement with ``psql`` (servers we started only); returns its output."""
        if not self.owned or self.bin_dir is None:
            raise RuntimeError(f"no psql access to the external server {self.url}")
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url_for(database) if database else self.url,
                "-c",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=self._env or None,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {statement!r} failed: {result.stderr.strip()}")
        return result.stdout

    def database(self) -> str:
        """URL of a fresh, empty database (on an external server: the server's own URL)."""
        if not self.owned:
            return self.url
        name = f"aiocm_{uuid.uuid4().hex[:12]}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop(self, url: str) -> None:
        """Drop a database :meth:`database` created (nothing on an external server)."""
        if self.owned and url != self.url:
            name = urlsplit(url).path.lstrip("/")
            self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _bin_dir() -> Path | None:
    configured = os.environ.get(POSTGRES_BIN_DIR_ENV)
    candidates = [Path(configured)] if configured else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).parent)
    for candidate in candidates:
        if (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
            return candidate
    return None


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return {"user": entry.pw_uid, "group": entry.pw_gid}
    return {}


def _ready(bin_dir: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.returncode == 0


@contextlib.contextmanager
def _local_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    workdir = Path(tempfile.mkdtemp(prefix="aiocelerymon-postgres-"))
    data, log = workdir / "data", workdir / "postgres.log"
    owner = _run_as()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    try:
        if owner:
            os.chown(workdir, owner["user"], owner["group"])
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            timeout=120,
            check=True,
            env=env,
            cwd=workdir,
            **owner,
        )
        for _attempt in range(3):
            port = free_port()
            with log.open("ab") as log_file:
                proc = subprocess.Popen(
                    [
                        str(bin_dir / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={workdir}",
                        # A throwaway test server: no durability, little memory.
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "shared_buffers=16MB",
                        "-c",
                        "max_connections=100",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    cwd=workdir,
                    **owner,
                )
            deadline = time.monotonic() + POSTGRES_START_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                if _ready(bin_dir, port):
                    break
                time.sleep(0.1)
            else:
                stop_process_group(proc)
                continue
            try:
                yield PostgresServer(
                    url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
                    owned=True,
                    bin_dir=bin_dir,
                    _env=env,
                )
            finally:
                stop_process_group(proc)
            return
        unavailable(f"postgres did not start: {log.read_text(errors='replace')[-3000:]}")
    except subprocess.CalledProcessError as exc:
        unavailable(f"initdb failed: {exc.stderr!r} ({INSTALL_HINT})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Yield a PostgreSQL server (env URL or local binaries); skip/fail if none."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        yield PostgresServer(url=url, owned=False)
        return
    bin_dir = _bin_dir()
    if bin_dir is None:
        unavailable(f"no PostgreSQL server for integration tests: {INSTALL_HINT}")
    with _local_postgres(bin_dir) as server:
        yield server
