"""RedisTransport without a server: URL -> connection arguments, TLS options, error table."""

from __future__ import annotations

import logging
import ssl

import pytest
import redis.exceptions as rexc
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from aiocelerymon._url import parse_url
from aiocelerymon.exceptions import (
    AuthenticationError,
    BrokerRefusedError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    TransportError,
)
from aiocelerymon.transports import create_transport
from aiocelerymon.transports.redis import (
    RedisTransport,
    connection_params,
    map_error,
    ssl_params,
)

SECRET = "pa$$:w/rd"
QUOTED = "pa%24%24%3Aw%2Frd"


def credentials(kwargs: dict[str, object]) -> object:
    provider = kwargs.get("credential_provider")
    return None if provider is None else provider.get_credentials()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# URL -> connection arguments


def test_tcp_url() -> None:
    cls, kw = connection_params(parse_url("redis://cache.local:6390/3"), connect_timeout=2.5)
    assert cls is Connection
    assert (kw["host"], kw["port"], kw["db"]) == ("cache.local", 6390, 3)
    assert kw["socket_connect_timeout"] == 2.5
    # Idle pub/sub and BRPOP connections must not time out on reads (redis-py 6+ defaults 5 s).
    assert kw["socket_timeout"] is None
    assert kw["protocol"] == 2
    assert "credential_provider" not in kw


async def test_redis_py_never_retries_by_itself() -> None:
    # A PUBLISH that may have reached the server must not be sent twice; reconnecting is ours.
    _, kw = connection_params(parse_url("redis://h/0"))
    calls = []

    async def do() -> None:
        calls.append(1)
        raise rexc.ConnectionError("reset")

    async def fail(error: Exception) -> None:
        pass

    with pytest.raises(rexc.ConnectionError):
        await kw["retry"].call_with_retry(do, fail)
    assert calls == [1]


def test_no_credentials_without_userinfo() -> None:
    _, kw = connection_params(parse_url("redis://h/0"))
    assert "credential_provider" not in kw


def test_defaults_and_db_zero() -> None:
    _, kw = connection_params(parse_url("redis://"))
    assert (kw["host"], kw["port"], kw["db"]) == ("localhost", 6379, 0)
    _, kw = connection_params(parse_url("redis://h/"))
    assert kw["db"] == 0


def test_password_and_username_go_into_a_credential_provider() -> None:
    _, kw = connection_params(parse_url(f"redis://:{QUOTED}@h:6379/0"))
    assert credentials(kw) == (SECRET,)
    assert "password" not in kw
    _, kw = connection_params(parse_url(f"redis://alice:{QUOTED}@h/0"))
    assert credentials(kw) == ("alice", SECRET)
    # The arguments can be logged without leaking the password.
    assert SECRET not in repr(kw) and QUOTED not in repr(kw)


def test_unix_socket_url() -> None:
    cls, kw = connection_params(parse_url("redis+socket:///run/redis/redis.sock?virtual_host=4"))
    assert cls is UnixDomainSocketConnection
    assert kw["path"] == "/run/redis/redis.sock"
    assert kw["db"] == 4
    assert "host" not in kw and "port" not in kw


def test_rediss_url_is_tls_with_redis_py_defaults() -> None:
    cls, kw = connection_params(parse_url("rediss://h:6380/1"))
    assert cls is SSLConnection
    assert not any(k.startswith("ssl_") for k in kw)  # redis-py default: CERT_REQUIRED


# --------------------------------------------------------------------------------------------
# broker_use_ssl


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ssl.CERT_REQUIRED, "required"),
        (ssl.CERT_OPTIONAL, "optional"),
        (2, "required"),
        ("required", "required"),
        ("CERT_REQUIRED", "required"),
        ("cert_optional", "optional"),
    ],
)
def test_ssl_cert_reqs_spellings(value: object, expected: str) -> None:
    # By name: redis-py 5.x's asyncio SSL context accepts only the strings.
    params = ssl_params(parse_url("rediss://h/0"), {"ssl_cert_reqs": value})
    assert params == {"ssl_cert_reqs": expected}


@pytest.mark.parametrize("value", [ssl.CERT_NONE, 0, "none", "CERT_NONE", None])
def test_no_verification_means_no_hostname_check(value: object) -> None:
    params = ssl_params(parse_url("rediss://h/0"), {"ssl_cert_reqs": value, "check_hostname": 1})
    assert params == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


def test_broker_use_ssl_keys_map_to_redis_py() -> None:
    url = parse_url("redis://h/0")
    opts = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_certfile": "/etc/client.crt",
        "ssl_keyfile": "/etc/client.key",
    }
    cls, kw = connection_params(url, opts)
    assert cls is SSLConnection  # a broker_use_ssl dict turns TLS on for redis:// too
    assert {k: kw[k] for k in opts} == {**opts, "ssl_cert_reqs": "required"}
    # py-amqp's spelling, as people copy it from RabbitMQ settings.
    amqp_style = {"cert_reqs": "optional", "ca_certs": "/ca", "certfile": "/c", "keyfile": "/k"}
    assert ssl_params(url, amqp_style) == {
        "ssl_cert_reqs": "optional",
        "ssl_ca_certs": "/ca",
        "ssl_certfile": "/c",
        "ssl_keyfile": "/k",
    }


def test_ssl_options_from_the_url_query_and_override() -> None:
    url = parse_url("rediss://h/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    assert ssl_params(url, None) == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    assert ssl_params(url, {"ssl_cert_reqs": "required"}) == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": False,
    }
    url = parse_url("rediss://h/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem")
    assert ssl_params(url, None) == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/ca.pem"}


def test_ssl_on_and_off() -> None:
    assert ssl_params(parse_url("redis://h/0"), None) is None
    assert ssl_params(parse_url("redis://h/0"), False) is None
    assert ssl_params(parse_url("redis://h/0"), True) == {}
    assert ssl_params(parse_url("redis://h/0?ssl=true"), None) == {}


@pytest.mark.parametrize(
    ("url", "opts", "match"),
    [
        ("rediss://h/0", {"ssl_cert_reqs": "sometimes"}, "ssl_cert_reqs"),
        ("rediss://h/0", {"ssl_cert_reqs": 7}, "ssl_cert_reqs"),
        ("rediss://h/0", {"ssl_verify": True}, "ssl_verify"),
        ("redis+socket:///tmp/r.sock", True, "Unix socket"),
    ],
)
def test_bad_ssl_options_are_refused(url: str, opts: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ssl_params(parse_url(url), opts)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Error table


URL = parse_url(f"redis://:{QUOTED}@h:6379/0")


@pytest.mark.parametrize(
    ("exc", "connecting", "expected"),
    [
        (rexc.AuthenticationError("invalid username-password pair"), True, AuthenticationError),
        (rexc.AuthenticationError("NOAUTH"), False, AuthenticationError),
        (rexc.AuthorizationError("denied"), True, AuthenticationError),
        (rexc.AuthenticationWrongNumberOfArgsError("auth"), True, AuthenticationError),
        (rexc.ConnectionError("Error 111 connecting"), True, ConnectError),
        (rexc.ConnectionError("Connection closed by server."), False, ConnectionLostError),
        (rexc.BusyLoadingError("loading"), True, ConnectError),
        (rexc.TimeoutError("Timeout connecting"), True, ConnectError),
        (rexc.TimeoutError("Timeout reading"), False, ConnectionLostError),
        (ConnectionRefusedError(111, "refused"), True, ConnectError),
        (ConnectionResetError(104, "reset"), False, ConnectionLostError),
        (rexc.ResponseError("WRONGTYPE Operation against a key"), False, BrokerRefusedError),
        (rexc.NoPermissionError("NOPERM"), False, BrokerRefusedError),
        (rexc.ReadOnlyError("READONLY"), False, BrokerRefusedError),
        (rexc.DataError("bad"), False, TransportError),
        (rexc.DataError("bad"), True, ConnectError),
    ],
)
def test_error_table(exc: BaseException, connecting: bool, expected: type[TransportError]) -> None:
    err = map_error(exc, URL, connecting=connecting)
    assert type(err) is expected
    assert err.__cause__ is exc
    assert "redis://:**@h:6379/0" in str(err)


def test_error_messages_never_show_the_password() -> None:
    err = map_error(rexc.ConnectionError(f"cannot AUTH with {SECRET}"), URL, connecting=True)
    assert SECRET not in str(err) and QUOTED not in str(err)
    assert "**" in str(err)


# --------------------------------------------------------------------------------------------
# The transport object (never connected here)


def test_transport_repr_and_options() -> None:
    t = RedisTransport(
        f"redis://:{QUOTED}@h:6379/5", transport_options={"global_keyprefix": "pfx:"}
    )
    assert repr(t) == "<RedisTransport redis://:**@h:6379/5 IDLE>"
    assert SECRET not in repr(t) and SECRET not in str(t) and QUOTED not in str(t.url)
    assert SECRET not in repr(vars(t))
    assert t.naming.publish_channel("celery.pidbox") == "pfx:/5.celery.pidbox"
    assert t.malformed == 0


def test_client_name_option() -> None:
    t = RedisTransport("redis://h/0", transport_options={"client_name": "flower-1"})
    assert t._conn_kwargs["client_name"] == "flower-1"
    assert "client_name" not in RedisTransport("redis://h/0")._conn_kwargs


def test_create_transport_picks_redis_and_passes_ssl() -> None:
    t = create_transport("rediss://h/0", ssl={"ssl_cert_reqs": "none"}, connect_timeout=1.5)
    assert isinstance(t, RedisTransport)
    assert t.connect_timeout == 1.5
    assert t._conn_class is SSLConnection
    assert t._conn_kwargs["ssl_cert_reqs"] == "none"


def test_only_redis_urls() -> None:
    with pytest.raises(ConfigurationError):
        RedisTransport("amqp://guest@h//")


def test_direct_routing_reads_binding_members() -> None:
    t = RedisTransport("redis://h/0")
    members = [
        b"k\x06\x16\x06\x16q1",
        b"k\x06\x16\x06\x16q1",  # duplicates are pushed once
        b"other\x06\x16\x06\x16q2",
        b"k\x06\x16\x06\x16q3",
        b"garbage-without-separators",
        b"k\x06\x16\xff\x06\x16q4",  # a pattern part, even undecodable, is not our business
    ]
    assert t._route(members, "k") == ["q1", "q3", "q4"]
    assert t._route(members, "nope") == []


def test_undecodable_payload_is_counted_and_logged_briefly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = RedisTransport("redis://h/0")
    with caplog.at_level(logging.WARNING, logger="aiocelerymon.transport.redis"):
        assert t._decode(b"\x00" * 100_000, 0) is None
        assert (
            t._decode(b'{"body": "not base64!!", "properties": {"body_encoding": "base64"}}', 0)
            is None
        )
    assert t.malformed == 2
    assert len(caplog.records) == 2
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    good = t._decode(b'{"body": "e30=", "properties": {"body_encoding": "base64"}}', 3)
    assert good is not None and (good.body, good.generation) == (b"{}", 3)
