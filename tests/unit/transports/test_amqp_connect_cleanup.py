"""A failed AMQP connect leaves no half-made aio-pika Connection to be collected unclosed.

aio-pika's ``connect()`` drops the Connection it made when connecting fails; its ``__del__``
then creates a ``close()`` coroutine that never runs if the object is collected off the event
loop's thread ("coroutine 'Connection.close' was never awaited", one per attempt during an
outage; seen in the broker-restart tests, where ``asyncio.to_thread`` work triggered the GC).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest

from aiocelerymon.exceptions import ConnectError
from aiocelerymon.transports.amqp import AmqpTransport
from tests.support.brokers import free_port


async def test_failed_connects_leave_nothing_to_collect(monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    t = AmqpTransport(f"amqp://guest:guest@127.0.0.1:{free_port()}//", connect_timeout=1.0)
    gc.disable()
    try:
        for _ in range(3):
            with pytest.raises(ConnectError):
                await t.connect()
        await asyncio.to_thread(gc.collect)  # collected where no event loop runs
    finally:
        gc.enable()
        await t.aclose()
    assert [u.exc_value for u in unraisable] == []
