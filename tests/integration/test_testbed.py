"""The integration test bed itself: real brokers start and a real Celery worker answers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid

import pytest

from tests.support import brokers
from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env, celery_worker

pytestmark = pytest.mark.integration


@pytest.mark.redis
def test_redis_answers_ping(redis_server: brokers.RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url_for(1))
    try:
        assert client.ping() is True
        key = f"testbed:{uuid.uuid4().hex}"
        client.set(key, b"\x06\x16", ex=60)
        assert client.get(key) == b"\x06\x16"
        # url_for() really selects another database.
        assert client.connection_pool.connection_kwargs["db"] == 1
    finally:
        client.close()


@pytest.mark.amqp
async def test_rabbit_vhost_is_created_and_usable(rabbit_server: brokers.RabbitServer) -> None:
    if not rabbit_server.owned:
        brokers.unavailable("vhosts can only be created on a broker the test bed started")
    import aio_pika

    name = f"testbed/{uuid.uuid4().hex[:8]}"  # the slash checks URL quoting
    url = rabbit_server.add_vhost(name)
    assert url == rabbit_server.add_vhost(name)  # idempotent
    vhosts = rabbit_server.rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers").split()
    assert name in vhosts

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        listed = rabbit_server.rabbitmqctl(
            "list_queues", "-p", name, "name", "--quiet", "--no-table-headers"
        )
        assert queue.name in listed.split()


def _inspect_ping(broker_url: str, hostname: str) -> dict[str, object]:
    """`celery inspect ping -d hostname` via the real CLI; {} if no reply arrived."""
    argv = [sys.executable, "-m", "celery", "-A", APP_MODULE, "inspect", "ping"]
    argv += ["-d", hostname, "--json", "-t", "2"]
    result = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=celery_env({"broker_url": broker_url}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # With no reply the CLI prints an error and exits non-zero; treat it as "not yet".
    if result.returncode != 0:
        return {}
    replies: dict[str, object] = json.loads(result.stdout)
    return replies


@pytest.mark.interop
@pytest.mark.parametrize(
    "broker",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("amqp", marks=pytest.mark.amqp)],
)
def test_real_celery_worker_answers_inspect_ping(
    broker: str, request: pytest.FixtureRequest
) -> None:
    if importlib.util.find_spec("celery") is None:
        brokers.unavailable("celery is not installed: pip install 'celery[redis]' packaging")
    if broker == "redis":
        url = request.getfixturevalue("redis_server").url_for(2)
    else:
        url = request.getfixturevalue("amqp_url")
    hostname = f"testbed-{uuid.uuid4().hex[:8]}@localhost"
    with celery_worker(url, hostname) as worker:
        assert worker.version.count(".") >= 2
        # On Redis the worker's PSUBSCRIBE may land just after "ready."; a request published
        # before that reaches nobody, so allow a retry or two.
        for _attempt in range(3):
            replies = _inspect_ping(url, hostname)
            if replies:
                break
        assert replies == {hostname: {"ok": "pong"}}, worker.log()
