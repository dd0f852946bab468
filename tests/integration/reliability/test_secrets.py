"""Passwords never appear in reprs, log records (any logger, DEBUG included) or CLI errors.

Exercised where they are most likely to leak: a refused login, an outage with its retries and
reconnect, and the command line failing to reach its broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon import Client, RetryPolicy, create_transport
from aiocelerymon.exceptions import AuthenticationError
from aiocelerymon.transports import Binding, Exchange, ExchangeKind, TransportState
from tests.integration.reliability.servers import RestartableRabbit, restartable_redis
from tests.integration.reliability.test_faults import until
from tests.support.proxy import Proxy

pytestmark = [pytest.mark.integration]

SECRET = "s3cr3t-" + uuid.uuid4().hex[:8]
FAST = RetryPolicy(initial=0.05, maximum=0.2)


@dataclass
class Secured:
    broker: str
    port: int
    url_template: str  # "{password}" and "{port}" to fill in


@pytest.fixture(params=["redis", "amqp"])
async def secured(request: pytest.FixtureRequest) -> AsyncIterator[Secured]:
    if request.param == "redis":
        request.applymarker(pytest.mark.redis)
        with restartable_redis("--requirepass", SECRET) as server:
            yield Secured("redis", server.port, "redis://:{password}@127.0.0.1:{port}/0")
    else:
        request.applymarker(pytest.mark.amqp)
        rabbit: RestartableRabbit = request.getfixturevalue("own_rabbit")
        user = f"u{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(rabbit.rabbitmqctl, "add_user", user, SECRET)
        await asyncio.to_thread(
            rabbit.rabbitmqctl, "set_permissions", "-p", "/", user, ".*", ".*", ".*"
        )
        try:
            yield Secured("amqp", rabbit.port, f"amqp://{user}:{{password}}@127.0.0.1:{{port}}//")
        finally:
            await asyncio.to_thread(rabbit.rabbitmqctl, "delete_user", user)


def chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


async def test_no_password_in_logs_reprs_or_errors(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, aiormq, aio_pika, redis
    wrong = secured.url_template.format(password="not-" + SECRET, port=secured.port)
    t = create_transport(wrong, connect_timeout=3.0)
    with pytest.raises(AuthenticationError) as info:
        await t.connect()
    for exc in chain(info.value):
        assert SECRET not in str(exc) and SECRET not in repr(exc)
    await t.aclose()

    async with Proxy(secured.port) as proxy:
        url = secured.url_template.format(password=SECRET, port=proxy.port)
        client = Client(url, retry=FAST, broker_connection_timeout=2.0)
        try:
            proxy.refusing = True  # down at start: retried until it answers
            connecting = asyncio.create_task(client.transport.connect(retry=True))
            await until(lambda: "retrying" in caplog.text, "the outage to be logged")
            proxy.refusing = False
            async with asyncio.timeout(30):
                await connecting
            sub = client.transport.subscribe(Binding(Exchange("t.secret", ExchangeKind.FANOUT)))
            async with sub:
                proxy.cut()  # and a reconnect
                # generation counts a restore as it begins; CONNECTED says it finished (on a
                # busy machine a declare can time out and the restore run again).
                await until(
                    lambda: (
                        sub.generation >= 1 and client.transport.state is TransportState.CONNECTED
                    ),
                    "the restore",
                )
                texts: list[Any] = [client, client.transport, sub, client.transport.url]
                for obj in texts:
                    assert SECRET not in repr(obj) and SECRET not in str(obj)
            assert client.transport.state is TransportState.CONNECTED
        finally:
            await client.aclose()
    assert "reconnected" in caplog.text  # the records below did cover the reconnect
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.name
        if record.exc_info:
            assert SECRET not in logging.Formatter().formatException(record.exc_info)

    # The command line, failing to reach (a closed port) and failing to log in.
    for port in (proxy.port, secured.port):
        url = secured.url_template.format(password=SECRET + "x" * (port == secured.port), port=port)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiocelerymon", "-b", url, "inspect", "ping", "-t", "1",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode != 0
        assert err, "the CLI says why it failed"
        assert SECRET.encode() not in out + err, (out + err).decode()
        with contextlib.suppress(UnicodeDecodeError):
            assert "**" in err.decode() or "refused" in err.decode().lower()
