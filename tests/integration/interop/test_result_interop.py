"""``aiocelerymon result`` reads what real Celery workers stored, and prints what ``celery result``
prints for it: the Redis backend (with a ``global_keyprefix``), the database backend on SQLite and
on PostgreSQL. One worker per backend for the module; the tasks run once per backend.

Celery before 5.7 pickles the database backend's result column whatever the serializer: there
we check the refusal (and that status and traceback are still read).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celery
import pytest

# Imported here, not first inside a fixture's event loop: CPython 3.11.7's ast.parse (pytest's
# assertion rewriting of the plugin's package) can fail there with a recursion-depth SystemError.
import aiocelerymon.transports.amqp
import aiocelerymon.transports.redis  # noqa: F401
from aiocelerymon import Client
from aiocelerymon.cli.result import _fetch
from aiocelerymon.results import Results, ResultSettings
from aiocelerymon.testing import wait_for_workers
from aiocelerymon.testing.postgres import PostgresServer
from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env, celery_worker

pytestmark = [pytest.mark.integration, pytest.mark.interop]

ADD, FAIL = f"{APP_MODULE}.add", f"{APP_MODULE}.fail"
DEADLINE = 60.0
CELERY_57 = tuple(int(p) for p in celery.__version__.split(".")[:2]) >= (5, 7)


@dataclass
class Backend:
    id: str
    broker_url: str
    config: dict[str, Any]
    #: Task ids: a success (add(2, 3)) and a failure (fail()).
    ok: str = ""
    failed: str = ""

    @property
    def pickled(self) -> bool:
        return self.config["result_backend"].startswith("db+") and not CELERY_57

    def both(self, *args: str) -> tuple[subprocess.CompletedProcess[str], ...]:
        """The same command line through celery and aiocelerymon, concurrently."""
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            theirs = pool.submit(self.run, "celery", *args)
            ours = pool.submit(self.run, "aiocelerymon", *args)
            return theirs.result(), ours.result()

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", tool, "-A", APP_MODULE, "result", *args],
            cwd=REPO_ROOT,
            env=celery_env({**self.config, "broker_url": self.broker_url}),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )


def _run_tasks(backend: Backend) -> None:
    """Send add(2, 3) and fail() with Celery; wait (``result --wait``'s loop) until stored."""
    app = celery.Celery("results-caller", broker=backend.broker_url)
    app.conf.update({k: v for k, v in backend.config.items() if not k.startswith("result_")})
    try:
        backend.ok = app.send_task(ADD, (2, 3)).id
        backend.failed = app.send_task(FAIL).id
    finally:
        app.close()

    async def stored() -> None:
        async with Results(ResultSettings.from_conf(_conf(backend.config))) as results:
            for task_id in (backend.ok, backend.failed):
                record = await _fetch(results, task_id, DEADLINE)
                assert record.ready, record

    asyncio.run(stored())


def _conf(config: dict[str, Any]) -> Any:
    app = celery.Celery("conf-only", set_as_current=False)
    app.conf.update(config)
    return app.conf


@pytest.fixture(scope="module", params=["redis-prefix", "sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: str = request.param
    config: dict[str, Any] = {"result_extended": True}
    cleanup = None
    if kind == "redis-prefix":
        server = request.getfixturevalue("redis_server")
        namespace = server.namespace()
        broker = namespace.url
        config["result_backend"] = namespace.url
        # No separator at the end: Celery appends "_" (KeyValueStoreBackend).
        config["result_backend_transport_options"] = {"global_keyprefix": "aiocm-res"}
        if namespace.transport_options:
            config["broker_transport_options"] = namespace.transport_options
    else:
        rabbit = request.getfixturevalue("rabbit_server")
        namespace = rabbit.namespace()
        broker = namespace.url
        cleanup = lambda: rabbit.release(namespace)  # noqa: E731
        if kind == "sqlite":
            path = Path(tmp_path_factory.mktemp("results")) / "results.db"
            config["result_backend"] = f"db+sqlite:///{path}"
        else:
            pg: PostgresServer = request.getfixturevalue("postgres_server")
            url = pg.database()
            config["result_backend"] = "db+" + url.replace("postgresql://", "postgresql+psycopg://")
            config["database_table_names"] = {"task": "aiocm_tasks", "group": "aiocm_groups"}
    hostname = f"results-{kind}@interop"
    try:
        with celery_worker(broker, hostname, config=config, events=False, pool="solo"):

            async def ping() -> None:
                async with Client(broker, **namespace.client_options()) as client:
                    await wait_for_workers(client, [hostname], timeout=DEADLINE)

            asyncio.run(ping())
            made = Backend(kind, broker, config)
            _run_tasks(made)
            yield made
    finally:
        if cleanup is not None:
            cleanup()


def test_success_output_matches_celery(backend: Backend) -> None:
    theirs, ours = backend.both(backend.ok)
    assert (theirs.returncode, theirs.stdout) == (0, "5\n"), theirs.stderr
    if backend.pickled:
        assert ours.returncode == 1
        assert "is pickled" in ours.stderr and "Celery >= 5.7" in ours.stderr
        return
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, "5\n", "")


def test_failure_output_matches_celery(backend: Backend) -> None:
    theirs, ours = backend.both(backend.failed)
    assert theirs.returncode == 1
    if backend.pickled:
        assert ours.returncode == 1 and "is pickled" in ours.stderr
    else:
        assert (ours.returncode, ours.stdout) == (1, "")
        assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]
        assert ours.stderr.splitlines()[-1] == "RuntimeError: fail() always fails"
    # --traceback: a text column, read whatever the result column holds.
    theirs, ours = backend.both("--traceback", backend.failed)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    assert "fail() always fails" in ours.stdout


def test_json_record_and_the_api(backend: Backend) -> None:
    ours = backend.run("aiocelerymon", "--json", backend.ok)
    record = json.loads(ours.stdout)
    assert (record["task_id"], record["status"]) == (backend.ok, "SUCCESS")
    # result_extended: the workers stored the name, arguments and their own name.
    assert record["name"] == ADD
    assert record["worker"] == f"results-{backend.id}@interop"
    if backend.pickled:
        assert ours.returncode == 1 and record["result"] is None and "refused" in record
    else:
        assert ours.returncode == 0
        assert (record["result"], record["args"], record["kwargs"]) == (5, [2, 3], {})

    async def read() -> None:
        async with Client(
            backend.broker_url,
            result_backend=backend.config["result_backend"],
            result_backend_transport_options=backend.config.get("result_backend_transport_options"),
            database_table_names=backend.config.get("database_table_names"),
        ) as client:
            failed = await client.results.get(backend.failed)
            assert (failed.status, failed.failed, failed.ready) == ("FAILURE", True, True)
            pending = await client.results.get("no-such-task")
            assert (pending.status, pending.ready) == ("PENDING", False)

    asyncio.run(read())
