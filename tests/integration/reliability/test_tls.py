"""``amqps://`` against RabbitMQ's own TLS listener, with Celery's ``broker_use_ssl`` options.

(``rediss://`` against redis-server's own TLS listener is in test_redis_adapter.py.)
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from pathlib import Path

import pytest

from aiocelerymon import Client, Node
from aiocelerymon.exceptions import ConnectError
from tests.integration.reliability.servers import restartable_rabbit
from tests.integration.test_redis_adapter import _make_certs
from tests.support import brokers

pytestmark = [pytest.mark.integration, pytest.mark.amqp]


async def test_amqps_with_broker_use_ssl_against_rabbitmq_tls() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca, cert, key = _make_certs(Path(tmp))
        tls_port = brokers.free_port()
        config = (
            f"listeners.ssl.default = {tls_port}\n"
            f"ssl_options.cacertfile = {ca}\n"
            f"ssl_options.certfile = {cert}\n"
            f"ssl_options.keyfile = {key}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )
        with restartable_rabbit(config):
            url = f"amqps://guest:guest@127.0.0.1:{tls_port}//"
            # Celery's broker_use_ssl for py-amqp: ssl module names and constants.
            use_ssl = {"ca_certs": str(ca), "cert_reqs": ssl.CERT_REQUIRED}
            async with Client(url, broker_use_ssl=use_ssl) as client:
                node = Node(client, "tls@node", unique_check_timeout=None)
                async with node:
                    async with asyncio.timeout(30):
                        replies = await client.control.ping(destination=["tls@node"], timeout=10)
                assert replies[0] == {"tls@node": {"ok": "pong"}}
            # Our CA is required to trust the server: without it, no connection.
            untrusted = Client(
                url, broker_use_ssl={"cert_reqs": ssl.CERT_REQUIRED}, broker_connection_timeout=3
            )
            with pytest.raises(ConnectError, match=r"(?i)certificate"):
                await untrusted.connect()
            await untrusted.aclose()
