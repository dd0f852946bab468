"""Broker URLs as Celery accepts them; passwords never leak through str/repr."""

from __future__ import annotations

import pytest

from aiocelerymon import parse_url
from aiocelerymon.exceptions import ConfigurationError
from aiocelerymon.transports import create_transport
from aiocelerymon.transports.memory import MemoryTransport


@pytest.mark.parametrize(
    ("url", "transport", "host", "port", "vhost", "ssl"),
    [
        ("amqp://guest:guest@localhost:5672//", "amqp", "localhost", 5672, "/", False),
        ("amqp://u:p@h/", "amqp", "h", 5672, "/", False),
        ("pyamqp://u:p@h:1234/myvhost", "amqp", "h", 1234, "myvhost", False),
        ("amqp://h/%2Fslashed", "amqp", "h", 5672, "/slashed", False),
        ("amqps://h", "amqp", "h", 5671, "/", True),
    ],
)
def test_amqp_urls(url, transport, host, port, vhost, ssl):
    u = parse_url(url)
    assert (u.transport, u.hostname, u.port, u.virtual_host, u.ssl) == (
        transport,
        host,
        port,
        vhost,
        ssl,
    )


@pytest.mark.parametrize(
    ("url", "db", "ssl", "port"),
    [
        ("redis://localhost:6379/0", 0, False, 6379),
        ("redis://:secret@h:7000/3", 3, False, 7000),
        ("redis://h", 0, False, 6379),
        ("rediss://h:6380/2?ssl_cert_reqs=required", 2, True, 6380),
    ],
)
def test_redis_urls(url, db, ssl, port):
    u = parse_url(url)
    assert (u.transport, u.db, u.ssl, u.port) == ("redis", db, ssl, port)


def test_redis_socket_url():
    u = parse_url("redis+socket:///run/redis.sock?virtual_host=4")
    assert (u.transport, u.socket_path, u.db) == ("redis", "/run/redis.sock", 4)
    assert str(u) == "redis+socket:///run/redis.sock?virtual_host=4"


def test_password_never_shown():
    u = parse_url("amqp://user:s3cr%40t@host:5672/vh")
    assert u.password == "s3cr@t"
    for text in (str(u), repr(u), u.redacted()):
        assert "s3cr" not in text
        assert "user:**@host:5672/vh" in text
    assert u.unredacted() == "amqp://user:s3cr%40t@host:5672/vh"
    t = create_transport("memory://x")
    assert "memory://x" in repr(t)


@pytest.mark.parametrize(
    "url", ["sqs://", "nope", "amqp://a;amqp://b", "redis://h/notadb", "amqp://h:99999/"]
)
def test_bad_urls_are_configuration_errors(url):
    with pytest.raises(ConfigurationError):
        u = parse_url(url)
        _ = u.db  # the db is parsed lazily


def test_create_transport_picks_the_adapter():
    assert isinstance(create_transport("memory://"), MemoryTransport)
    assert type(create_transport("redis://h/1")).__name__ == "RedisTransport"
    assert type(create_transport("pyamqp://h//")).__name__ == "AmqpTransport"
