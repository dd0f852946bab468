"""``aiocelerymon shell``: Celery's ``shell`` for async code, a REPL with top-level ``await``.

Built like ``python -m asyncio`` (Lib/asyncio/__main__.py): the console reads and compiles in a
thread with ``PyCF_ALLOW_TOP_LEVEL_AWAIT``; a statement that awaits becomes a coroutine, which
runs on the event loop that also holds the broker connection and the live event receiver. So
``await client.control.ping()`` works, and ``state`` keeps filling while you type.

Names: ``client`` (connected), ``state`` (a :class:`~aiocelerymon.events.State` fed by a live
receiver), ``app`` (the ``-A`` app, or None) and, as in Celery's shell, the app's tasks by their
short names; also ``asyncio`` and ``aiocelerymon``.
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import contextlib
import inspect
import sys
import threading
import types
from typing import Any

import aiocelerymon
from aiocelerymon.cli._common import (
    EX_OK,
    Context,
    Invocation,
    Verb,
    _broker_chore_invocation,
    _execute,
    _Parser,
)
from aiocelerymon.client import Client
from aiocelerymon.events import State


def _parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} shell",
        usage=f"{prog} shell [OPTIONS]",
        help_command=f"{prog} shell",
        description=(
            "An asyncio REPL (top-level await) with a connected `client`, a live `state` and "
            "the app (-A) with its tasks."
        ),
    )
    group = parser.add_argument_group("shell options")
    group.add_argument(
        "--without-tasks", action="store_true", help="Don't add the app's tasks to the names."
    )
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    return parser


class AsyncConsole(code.InteractiveConsole):
    """``code.InteractiveConsole`` whose awaiting statements run on ``loop``."""

    def __init__(self, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(namespace, filename="<aiocelerymon shell>")
        self.loop = loop
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._running: concurrent.futures.Future[Any] | None = None

    def runcode(self, code: types.CodeType) -> None:
        func = types.FunctionType(code, self.locals)
        try:
            outcome = func()
            if inspect.iscoroutine(outcome):
                self._running = asyncio.run_coroutine_threadsafe(outcome, self.loop)
                try:
                    self._running.result()
                finally:
                    self._running = None
        except SystemExit:
            raise
        except BaseException:
            self.showtraceback()

    def interrupt(self) -> None:
        """Ctrl-C: cancel the statement being awaited, if any."""
        running = self._running
        if running is not None:
            running.cancel()


def _namespace(client: Client, state: State, app: Any, with_tasks: bool) -> dict[str, Any]:
    names: dict[str, Any] = {
        "__name__": "__console__",
        "__doc__": None,
        "asyncio": asyncio,
        "aiocelerymon": aiocelerymon,
        "client": client,
        "state": state,
        "app": app,
    }
    if app is not None:
        names["celery"] = app
        if with_tasks:
            # Celery's shell: every task of the app by its last name segment.
            for name, task in dict(app.tasks).items():
                if not name.startswith("celery."):
                    names.setdefault(name.rsplit(".", 1)[-1], task)
    return names


async def _run_shell(client: Client, ctx: Context, with_tasks: bool) -> int:
    loop = asyncio.get_running_loop()
    state = State()
    receiver = client.events.receiver()
    receiver.handlers["*"] = state.event
    feeding = asyncio.create_task(receiver.capture())
    console = AsyncConsole(_namespace(client, state, ctx.app, with_tasks), loop)
    banner = (
        f"aiocelerymon {aiocelerymon.__version__} shell on {client.transport.url}\n"
        "Use await directly. Names: client, state, app"
        + (" and the app's tasks" if ctx.app is not None and with_tasks else "")
        + ". Ctrl-D exits."
    )
    done = threading.Event()

    def interact() -> None:
        try:
            console.interact(banner=banner, exitmsg="")
        except SystemExit:
            pass
        finally:
            done.set()

    thread = threading.Thread(target=interact, name="aiocelerymon-shell", daemon=True)
    thread.start()
    try:
        while not done.is_set():
            try:
                await asyncio.to_thread(done.wait)
            except asyncio.CancelledError:
                # Ctrl-C (asyncio.run cancels the main task): stop the statement, keep the REPL,
                # as asyncio's REPL does.
                console.interrupt()
                if done.is_set():
                    raise
                current = asyncio.current_task()
                if current is not None and current.uncancel() > 0:
                    raise
    finally:
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feeding
    return EX_OK


async def _run(ctx: Context) -> int:
    # Invocation.force carries --without-tasks (no field of its own for one flag).
    with_tasks = not ctx.invocation.force
    # Output of the REPL goes to the process's streams, not the command's (it is interactive).
    sys.stdout.flush()
    return await _execute(
        ctx.invocation, ctx.app, lambda client: _run_shell(client, ctx, with_tasks)
    )


def _invocation(ns: Any, sns: Any, _sub: _Parser) -> Invocation:
    invocation = _broker_chore_invocation(ns, sns)
    invocation.timeout = 4.0  # to connect, as Celery's broker_connection_timeout
    invocation.force = bool(sns.without_tasks)
    return invocation


VERB = Verb(
    name="shell",
    summary="An asyncio REPL with a connected client, live state and the app.",
    parser=_parser,
    invocation=_invocation,
    run=_run,
)
