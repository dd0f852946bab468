"""Result backends read JSON only; ``aiocelerymon result`` prints what ``celery result`` prints.

The rows are written by Celery's own database backend (``app.backend.store_result``, what a
worker calls) into SQLite files; ``celery result`` and ``aiocelerymon result`` then read the
same file as subprocesses and their outputs are compared. Redis and PostgreSQL with real
workers: tests/integration/interop/test_result_interop.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celery
import pytest

from aiocelerymon import cli
from aiocelerymon.cli import result as result_verb
from aiocelerymon.exceptions import ConfigurationError, DecodeError
from aiocelerymon.results import (
    PickledResultError,
    Results,
    ResultSettings,
    TaskResult,
    decode_json,
)
from aiocelerymon.results.database import table_names
from aiocelerymon.results.redis import task_key

CELERY_57 = tuple(int(p) for p in celery.__version__.split(".")[:2]) >= (5, 7)
needs_57 = pytest.mark.skipif(not CELERY_57, reason="Celery < 5.7 pickles every database result")

APP = "results_app"


@dataclass
class Store:
    """A SQLite result database, written by Celery's backend, and a module with that app."""

    path: Path
    directory: Path
    app: Any

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", tool, "-A", APP, "result", *args],
            cwd=self.directory,
            env={"PYTHONPATH": str(self.directory), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def both(self, *args: str) -> tuple[subprocess.CompletedProcess[str], ...]:
        return self.run("celery", *args), self.run("aiocelerymon", *args)


def _store(tmp_path: Path, **conf: Any) -> Store:
    path = tmp_path / "results.db"
    (tmp_path / f"{APP}.py").write_text(
        textwrap.dedent(
            f"""
            from celery import Celery
            app = Celery("results", broker="memory://", backend="db+sqlite:///{path}")
            app.conf.update({conf!r})

            @app.task(name="results.own", backend="db+sqlite:///{path}.own")
            def own():
                return None
            """
        )
    )
    app = celery.Celery("results", broker="memory://", backend=f"db+sqlite:///{path}")
    app.conf.update(conf)
    return Store(path, tmp_path, app)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = _store(tmp_path, result_extended=True)
    yield made
    made.app.backend.ResultSession().close()


def _fail(backend: Any, task_id: str) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        import traceback

        backend.store_result(task_id, exc, "FAILURE", traceback=traceback.format_exc())


@needs_57
@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2], "s": "x", "n": None, "t": True}, 3, 2.5, "hello", None, [1, "two"]],
    ids=["dict", "int", "float", "str", "none", "list"],
)
def test_success_prints_what_celery_prints(store: Store, value: Any) -> None:
    store.app.backend.store_result("t-1", value, "SUCCESS")
    theirs, ours = store.both("t-1")
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout)
    # --traceback of a success: None, printed as an empty line by both.
    theirs, ours = store.both("--traceback", "t-1")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (0, "\n")


@needs_57
def test_failure_exits_1_with_the_exception_line_celery_ends_with(store: Store) -> None:
    _fail(store.app.backend, "t-fail")
    theirs, ours = store.both("t-fail")
    assert (theirs.returncode, ours.returncode) == (1, 1)
    assert theirs.stdout == ours.stdout == ""
    assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1] == "RuntimeError: boom"
    # Ours shows the worker's traceback, not the CLI's own frames.
    assert ours.stderr.startswith("Traceback (most recent call last):")
    assert "celery/bin" not in ours.stderr
    theirs, ours = store.both("--traceback", "t-fail")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    assert "RuntimeError: boom" in ours.stdout


@needs_57
def test_json_record_with_extended_fields(store: Store) -> None:
    store.app.backend.store_result("t-j", {"x": 1}, "SUCCESS")
    ours = store.run("aiocelerymon", "--json", "t-j")
    record = json.loads(ours.stdout)
    assert record["task_id"] == "t-j"
    assert (record["status"], record["result"]) == ("SUCCESS", {"x": 1})
    assert record["date_done"]
    assert set(record) >= {"traceback", "children", "name", "args", "kwargs", "worker", "queue"}


def test_pending_answers_at_once_where_celery_would_wait_forever(store: Store) -> None:
    store.app.backend.store_result("other", 1, "SUCCESS")  # creates the table
    ours = store.run("aiocelerymon", "never-ran")
    assert ours.returncode == 69
    assert "is not ready: its state is PENDING" in ours.stderr
    assert "--wait" in ours.stderr
    record = json.loads(store.run("aiocelerymon", "-j", "never-ran").stdout)
    assert (record["status"], record["result"]) == ("PENDING", None)


@needs_57
async def test_wait_polls_until_the_task_is_ready(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.app.backend.store_result("other", 1, "SUCCESS")
    first_poll = asyncio.Event()
    original = Results.get

    async def get(self: Results, task_id: str) -> TaskResult:
        record = await original(self, task_id)
        first_poll.set()
        return record

    monkeypatch.setattr(result_verb.Results, "get", get)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", f"db+sqlite:///{store.path}")
    out, err = io.StringIO(), io.StringIO()
    running = asyncio.create_task(
        cli.run(["result", "--wait", "60", "t-late"], stdout=out, stderr=err)
    )
    await first_poll.wait()  # it saw PENDING, and keeps polling
    await asyncio.to_thread(store.app.backend.store_result, "t-late", 42, "SUCCESS")
    assert await running == 0, err.getvalue()
    assert out.getvalue() == "42\n"


def test_pickled_results_are_refused_never_unpickled(tmp_path: Path) -> None:
    made = _store(tmp_path, result_serializer="pickle", accept_content=["pickle", "json"])
    made.app.backend.store_result("t-p", {"secret": 1}, "SUCCESS")
    theirs, ours = made.both("t-p")
    assert theirs.stdout == "{'secret': 1}\n"  # Celery unpickles it
    assert ours.returncode == 1
    assert ours.stdout == ""
    assert "is pickled" in ours.stderr
    assert "never unpickles" in ours.stderr
    assert "result_serializer='json'" in ours.stderr


def test_legacy_pickletype_rows_are_refused(store: Store) -> None:
    # Celery 5.5/5.6 write the result column as a SQLAlchemy PickleType: pickle.dumps(value).
    store.app.backend.store_result("t-old", 1, "SUCCESS")
    with sqlite3.connect(store.path) as db:
        db.execute(
            "UPDATE celery_taskmeta SET result = ? WHERE task_id = 't-old'",
            (pickle.dumps(3, protocol=pickle.HIGHEST_PROTOCOL),),
        )
    ours = store.run("aiocelerymon", "t-old")
    assert ours.returncode == 1
    assert "Celery >= 5.7" in ours.stderr
    # The traceback column is text: still shown.
    assert store.run("aiocelerymon", "--traceback", "t-old").returncode == 0


@needs_57
async def test_table_names_override(tmp_path: Path) -> None:
    made = _store(tmp_path, database_table_names={"task": "my_tasks", "group": "my_groups"})
    made.app.backend.store_result("t-n", [1], "SUCCESS")
    assert {r[0] for r in sqlite3.connect(made.path).execute("SELECT name FROM sqlite_master")} >= {
        "my_tasks"
    }
    url = f"db+sqlite:///{made.path}"
    async with Results(ResultSettings.from_conf(made.app.conf)) as results:
        record = await results.get("t-n")
    assert (record.status, record.result) == ("SUCCESS", [1])
    async with Results(ResultSettings(result_backend=url)) as results:
        with pytest.raises(Exception, match=r"celery_taskmeta.* does not exist"):
            await results.get("t-n")


async def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    async with Results(ResultSettings(result_backend=f"db+sqlite:///{path}")) as results:
        with pytest.raises(Exception, match="cannot open"):
            await results.get("x")
    assert not path.exists()
    # aiosqlite's worker thread has stopped before the error arrived: left running, it would
    # answer into this test's event loop after the loop closed ("Event loop is closed").
    assert not [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


def test_decode_json() -> None:
    assert decode_json(b'{"a": 1}', "x") == {"a": 1}
    assert decode_json(None, "x") is None
    with pytest.raises(PickledResultError, match="is pickled"):
        decode_json(pickle.dumps({"a": 1}), "x")
    with pytest.raises(DecodeError, match="not JSON"):
        decode_json(b"\x81\xa1a\x01", "x")  # msgpack


def test_redis_keys_follow_celerys_global_keyprefix_rule() -> None:
    assert task_key("id") == "celery-task-meta-id"
    assert task_key("id", "app:") == "app:celery-task-meta-id"
    assert task_key("id", "app") == "app_celery-task-meta-id"
    for sep in "_-.":
        assert task_key("id", f"p{sep}") == f"p{sep}celery-task-meta-id"


def test_table_names_defaults() -> None:
    assert table_names(ResultSettings()) == {
        "task": (None, "celery_taskmeta"),
        "group": (None, "celery_tasksetmeta"),
    }
    settings = ResultSettings(
        database_table_names={"task": "t"}, database_table_schemas={"task": "s"}
    )
    assert table_names(settings)["task"] == ("s", "t")


@needs_57
def test_task_option_reads_that_tasks_own_backend(store: Store) -> None:
    own = celery.Celery("own", broker="memory://", backend=f"db+sqlite:///{store.path}.own")
    own.backend.store_result("t-own", "from its own backend", "SUCCESS")
    store.app.backend.store_result("t-own", "from the app's backend", "SUCCESS")
    theirs, ours = store.both("-t", "results.own", "t-own")
    assert (ours.returncode, ours.stdout) == (0, "from its own backend\n")
    # Celery keeps a backend given as a URL string unresolved and fails on it.
    assert theirs.returncode == 1 and "AttributeError" in theirs.stderr
    # Without -t: the app's backend, for both.
    theirs, ours = store.both("t-own")
    assert ours.stdout == theirs.stdout == "from the app's backend\n"
    unknown = store.run("aiocelerymon", "-t", "results.nope", "t-own")
    assert unknown.returncode == 2
    assert "Unknown task 'results.nope'" in unknown.stderr


@needs_57
async def test_result_backend_option_without_an_app(store: Store) -> None:
    store.app.backend.store_result("t-opt", [1, 2], "SUCCESS")
    out, err = io.StringIO(), io.StringIO()
    url = f"db+sqlite:///{store.path}"
    assert await cli.run(["--result-backend", url, "result", "t-opt"], stdout=out, stderr=err) == 0
    assert out.getvalue() == "[1, 2]\n"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (None, "no result backend is configured"),
        ("rpc://", "stores nothing"),
        ("cache+memcached://127.0.0.1:11211/", "unsupported result backend"),
        ("db+sqlite://", "in-memory SQLite"),
    ],
)
async def test_unreadable_backends(url: str | None, message: str) -> None:
    results = Results(ResultSettings(result_backend=url))
    with pytest.raises(ConfigurationError, match=message):
        await results.get("x")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["result"], "Missing argument 'TASK_ID'."),
        (["result", "--wait", "-1", "x"], "is not a number at least 0"),
        (["result", "--wait", "soon", "x"], "is not a number"),
        (["result", "--wait", "nan", "x"], "is not a number at least 0"),
        (["result", "-t", "proj.add", "x"], "give -A/--app too"),
    ],
)
async def test_usage_errors(args: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await cli.run(args, stdout=out, stderr=err) == 2
    assert message in err.getvalue()


async def test_no_backend_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert await cli.run(["result", "x"], stdout=out, stderr=err) == 2
    assert "no result backend is configured" in err.getvalue()
