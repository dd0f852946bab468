"""EPIPE ends every command at once and quietly (issue 19, item 1), on real brokers.

A real pipe to a subprocess whose reader closes it after the first line, as ``| head -n 1``
does: the command must exit within seconds with the shell's SIGPIPE status (141) and print
nothing on stderr (no traceback, no ``BrokenPipeError`` per event, no "Exception ignored").
Events keep arriving meanwhile, so a command that survived the closed pipe would run on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiocelerymon
from aiocelerymon.cli import EX_SIGPIPE
from aiocelerymon.events import Camera
from aiocelerymon.testing.brokers import BrokerNamespace

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BANNER = "-> evdump: starting capture..."
#: Generous: the command must end on the next write, long before this.
EXIT_DEADLINE = 20.0


class PrintingCamera(Camera):
    """``--camera``: prints a line per shot, as a user's camera writing to stdout would."""

    def on_shutter(self, state: Any) -> None:
        print(f"shot: {len(state.tasks)} tasks", flush=True)


def cli_args(namespace: BrokerNamespace) -> list[str]:
    args = ["-b", namespace.url]
    for key, value in namespace.transport_options.items():
        args += ["--transport-option", f"{key}={json.dumps(value)}"]
    return args


def start(*argv: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "aiocelerymon", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


def read_one_line_then_close(proc: subprocess.Popen[str]) -> tuple[str, int, str]:
    """``| head -n 1``: one line, close the pipe; then the exit status and stderr."""
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    try:
        code = proc.wait(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {EXIT_DEADLINE}s after its reader left") from None
    finally:
        err = proc.stderr.read()
        proc.stderr.close()
    return line, code, err


@contextlib.asynccontextmanager
async def events_flowing(namespace: BrokerNamespace) -> AsyncIterator[None]:
    """A node sending task events every 50 ms until the block ends."""
    async with aiocelerymon.Client(namespace.url, **namespace.client_options()) as client:
        dispatcher = client.events.dispatcher(f"pipe-{uuid.uuid4().hex[:6]}@test")

        async def send() -> None:
            while True:
                await dispatcher.send(
                    "task-received", uuid=str(uuid.uuid4()), name="t.pipe", args="()", kwargs="{}"
                )
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(send())
        try:
            yield
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


@pytest.mark.parametrize(
    ("argv", "first"),
    [
        (["events", "--dump"], BANNER),
        (["events", "--dump", "--json"], "{"),
        # Celery's evcam banner comes first; the shots after it meet the closed pipe.
        (["events", "--camera", f"{__name__}.PrintingCamera", "-F", "0.05"], "-> evcam: "),
    ],
    ids=["dump", "json", "camera"],
)
async def test_events_end_quietly_when_the_reader_closes_the_pipe(
    aiocelerymon_broker: BrokerNamespace, argv: list[str], first: str
) -> None:
    proc = start(*cli_args(aiocelerymon_broker), *argv)
    async with events_flowing(aiocelerymon_broker):
        line, code, err = await asyncio.to_thread(read_one_line_then_close, proc)
    assert line.startswith(first), line
    assert code == EX_SIGPIPE, err
    # JSON mode prints its banner on stderr; nothing else may appear there.
    assert set(err.splitlines()) <= {BANNER}, err


async def test_queues_watch_ends_quietly_when_the_reader_closes_the_pipe(
    aiocelerymon_broker: BrokerNamespace,
) -> None:
    proc = start(*cli_args(aiocelerymon_broker), "queues", "-Q", "celery", "--watch", "0.05")
    line, code, err = await asyncio.to_thread(read_one_line_then_close, proc)
    assert line.startswith("Every 0.05s: queues on ")
    assert (code, err) == (EX_SIGPIPE, "")


async def test_ctrl_c_ends_events_dump_with_0_like_celery(
    aiocelerymon_broker: BrokerNamespace,
) -> None:
    """`celery events --dump` exits 0 on Ctrl-C, silently (checked with Celery 5.6)."""
    proc = start(*cli_args(aiocelerymon_broker), "events", "--dump")
    assert proc.stdout is not None

    def interrupt_after_first_event() -> tuple[int, str, str]:
        assert proc.stdout.readline().rstrip("\n") == BANNER
        assert " task received: t.pipe(" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=EXIT_DEADLINE)
        return proc.returncode, out, err

    async with events_flowing(aiocelerymon_broker):
        code, _, err = await asyncio.to_thread(interrupt_after_first_event)
    assert (code, err) == (0, "")
