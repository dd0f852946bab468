"""``aiocelerymon result``: ``celery result``, read from the result backend without a broker.

Same arguments (``TASK_ID``, ``-t/--task``, ``--traceback``) and output: the return value as
``click.echo`` prints it (``str()``; an empty line for None), the stored traceback with
``--traceback``. A failed or revoked task exits 1 with the worker's traceback on stderr, whose
last line is the one Celery's re-raised exception ends with. Unlike Celery, which waits for a
task that is not ready forever, it answers at once (or within ``--wait SECONDS``) and exits 69.
``--json`` prints the whole record (Celery's meta keys). JSON results only: a pickled result is
refused with how to store JSON instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from aiocelerymon.cli._common import (
    CLOSE_TIMEOUT,
    EX_FAILURE,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    CommandError,
    Context,
    Invocation,
    UsageError,
    Verb,
    _env,
    _env_flag,
    _Parser,
    non_negative_float,
)
from aiocelerymon.exceptions import AiocelerymonError, ConfigurationError
from aiocelerymon.results import Results, ResultSettings, TaskResult

#: Polling while --wait lasts: quick at first, then at most once a second.
_FIRST_POLL, _MAX_POLL = 0.05, 1.0


def _parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} result",
        usage=f"{prog} result [OPTIONS] TASK_ID",
        help_command=f"{prog} result",
        description="Print the return value for a given task id.",
    )
    group = parser.add_argument_group("result options")
    group.add_argument("-t", "--task", metavar="NAME", help="Name of task (if custom backend).")
    group.add_argument("--traceback", action="store_true", help="Show traceback instead.")
    group.add_argument(
        "-j", "--json", action="store_true", help="Print the whole stored record as JSON."
    )
    group.add_argument(
        "--wait",
        metavar="SECONDS",
        type=non_negative_float,
        default=0.0,
        help="Wait up to SECONDS for a task that is not ready yet (default 0: answer at once).",
    )
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    parser.add_argument("task_id", nargs="?", help="The task id.")
    return parser


def _invocation(ns: Any, sns: Any, sub: _Parser) -> Invocation:
    if not sns.task_id:
        raise UsageError("Missing argument 'TASK_ID'.", sub.usage, sub.help_command)
    return Invocation(
        subcommand="result",
        app=ns.app or _env("APP", "CELERY_APP"),
        no_color=bool(ns.no_color) or _env_flag("'-C' / '--no-color'", "NO_COLOR"),
        quiet=bool(ns.quiet),
        task_id=sns.task_id,
        task=sns.task,
        traceback=bool(sns.traceback),
        json=bool(sns.json),
        wait=sns.wait,
    )


def _settings(ctx: Context) -> ResultSettings:
    """The backend of the app (or of ``-t TASK``'s own backend), else CELERY_RESULT_BACKEND."""
    invocation, app, sub = ctx.invocation, ctx.app, ctx.parser
    if app is None:
        if invocation.task:
            raise UsageError(
                "-t/--task names a task of the app: give -A/--app too.",
                sub.usage,
                sub.help_command,
            )
        return ResultSettings(result_backend=os.environ.get("CELERY_RESULT_BACKEND") or None)
    settings = ResultSettings.from_conf(app.conf)
    if invocation.task:
        try:
            task = app.tasks[invocation.task]
        except KeyError:
            raise UsageError(
                f"Unknown task {invocation.task!r}: not registered in the app.",
                sub.usage,
                sub.help_command,
            ) from None
        # A task with a backend of its own (``@app.task(backend=...)``): Celery asks that one.
        # A URL given as a string stays a string in Celery (its `result -t` then fails).
        own = getattr(task, "backend", None)
        url = own if isinstance(own, str) else getattr(own, "url", None)
        if isinstance(url, str) and url:
            settings = ResultSettings.from_conf(app.conf, result_backend=url)
    return settings


def _echo_value(value: Any) -> str:
    """click.echo of the value: ``str()``, and nothing (an empty line) for None."""
    return "" if value is None else str(value)


def _failure_text(record: TaskResult) -> str:
    """The worker's traceback, else the line Python ends a re-raised exception with."""
    if record.traceback:
        return record.traceback.rstrip("\n")
    exc = record.result if isinstance(record.result, dict) else {}
    name = str(exc.get("exc_type") or record.status)
    module = exc.get("exc_module")
    if module and module != "builtins":
        name = f"{module}.{name}"
    message = exc.get("exc_message")
    if isinstance(message, list | tuple):
        message = ", ".join(str(m) for m in message) if len(message) != 1 else str(message[0])
    return f"{name}: {message}" if message not in (None, "") else name


async def _fetch(results: Results, task_id: str, wait: float) -> TaskResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = _FIRST_POLL
    while True:
        record = await results.get(task_id)
        remaining = deadline - loop.time()
        if record.ready or remaining <= 0:
            return record
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_POLL)


async def _run(ctx: Context) -> int:
    invocation, out = ctx.invocation, ctx.out
    assert invocation.task_id is not None
    results = Results(_settings(ctx))
    try:
        record = await _fetch(results, invocation.task_id, invocation.wait)
    except AiocelerymonError as exc:
        raise CommandError(
            f"Cannot read the result of {invocation.task_id}: {exc}",
            # A backend we cannot use is a configuration (usage) problem; a read that failed not.
            EX_USAGE if isinstance(exc, ConfigurationError) else EX_FAILURE,
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await results.aclose()
    if invocation.json:
        out.echo(json.dumps(record.to_dict()))
        return EX_OK if record.refused is None else EX_FAILURE
    if invocation.traceback:
        out.echo(_echo_value(record.traceback))
        return EX_OK
    if record.refused is not None:
        raise CommandError(
            f"Cannot read the result of {invocation.task_id}: {record.refused}", EX_FAILURE
        )
    if record.failed:
        out.error(_failure_text(record))
        return EX_FAILURE
    if not record.ready:
        why = " (unknown id, not started yet, or its result expired)"
        raise CommandError(
            f"Task {invocation.task_id} is not ready: its state is {record.status}"
            f"{why if record.status == 'PENDING' else ''}. Celery's `result` would wait for "
            "it forever; give --wait SECONDS to wait.",
            EX_UNAVAILABLE,
        )
    out.echo(_echo_value(record.result))
    return EX_OK


VERB = Verb(
    name="result",
    summary="Print the result of a task (from the result backend).",
    parser=_parser,
    invocation=_invocation,
    run=_run,
)
