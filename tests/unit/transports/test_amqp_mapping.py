"""The RabbitMQ adapter's pure mappings: queue arguments, properties, TLS options, errors."""

from __future__ import annotations

import datetime
import decimal
import ssl
import subprocess
from pathlib import Path

import aiormq.exceptions as drv
import pytest

from aiocelerymon._url import parse_url
from aiocelerymon.exceptions import (
    AuthenticationError,
    BrokerRefusedError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    ResourceLockedError,
    TransportError,
    TransportTimeoutError,
)
from aiocelerymon.transports import create_transport
from aiocelerymon.transports.amqp import (
    ERROR_TABLE,
    AmqpTransport,
    _map_error,
    build_ssl_context,
    encode_properties,
    normalise_headers,
    queue_arguments,
)
from aiocelerymon.wire import names
from aiocelerymon.wire.entities import Binding, Exchange, ExchangeKind, Message

PASSWORD = "s3cr3t-Pa55"

# -- queue arguments ---------------------------------------------------------------------------


def test_celery_reply_queue_arguments_are_integer_milliseconds():
    b = Binding(names.reply_exchange(), "oid", expires=10.0, message_ttl=300.0)
    args = queue_arguments(b)
    assert args == {"x-expires": 10000, "x-message-ttl": 300000}
    # RabbitMQ refuses 10000.0 against an existing 10000 (406): the type matters, not only ==.
    assert all(type(v) is int for v in args.values())


def test_event_queue_arguments_and_fractions():
    b = Binding(names.event_exchange(), "#", expires=60.0, message_ttl=5.0)
    assert queue_arguments(b) == {"x-expires": 60000, "x-message-ttl": 5000}
    assert queue_arguments(Binding(names.event_exchange(), expires=0.25)) == {"x-expires": 250}


def test_only_set_arguments_are_sent():
    ex = Exchange("e", ExchangeKind.FANOUT)
    assert queue_arguments(Binding(ex)) == {}
    assert queue_arguments(Binding(ex, message_ttl=1)) == {"x-message-ttl": 1000}
    assert queue_arguments(Binding(ex, expires=2)) == {"x-expires": 2000}


# -- content properties --------------------------------------------------------------------------

HEADERS = {
    "clock": 300,  # pamqp would pick the 16-bit 's' old py-amqp reads as a string
    "expires": 1767225601.5,  # pamqp would send a 32-bit float: 1767225600.0
    "ticket": "11111111-2222-4333-8444-555555555555",
    "hostname": "celery@h\u00e9te",
    "flag": True,
    "nothing": None,
    "big": 2**40,
    "negative": -7,
    "nested": {"list": [1, "x", 2.5, None, {"raw": b"bytes"}]},
    "decimal": decimal.Decimal("12.50"),
    "when": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
}


def test_properties_are_byte_identical_to_py_amqp():
    from amqp import basic_message

    for message in [
        Message(b"{}", headers=HEADERS, delivery_mode=2, priority=0),  # a pidbox request
        Message(b"[]", headers={"hostname": "w@h"}),  # an event
        Message(b"{}", headers={}),
    ]:
        theirs = basic_message.Message(
            message.body,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            application_headers=dict(message.headers),
            delivery_mode=message.delivery_mode,
            priority=message.priority,
        )._serialize_properties()
        assert encode_properties(message) == theirs


def test_properties_decode_back_exactly():
    from amqp import serialization

    encoded = encode_properties(Message(b"", headers=HEADERS, delivery_mode=2, priority=0))
    decoded, end = serialization.decode_properties_basic(encoded, 0)
    assert end == len(encoded)
    headers = decoded.pop("application_headers")
    assert decoded == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "priority": 0,
    }  # and nothing else: no message_id, unlike aiormq's default publish
    assert headers["expires"] == 1767225601.5
    assert type(headers["clock"]) is int and headers["clock"] == 300
    assert headers["big"] == 2**40 and headers["negative"] == -7
    assert list(headers) == list(HEADERS)  # insertion order kept, as kombu sends it


def test_property_flags_are_only_kombus_five():
    assert encode_properties(Message(b""))[:2] == b"\xf8\x00"


@pytest.mark.parametrize(
    "message",
    [
        Message(b"", headers={"obj": object()}),
        Message(b"", headers={"k" * 256: 1}),
        Message(b"", headers={"huge": 2**64}),
        Message(b"", content_type="x" * 256),
        Message(b"", delivery_mode=256),
    ],
)
def test_unencodable_properties_are_configuration_errors(message: Message):
    with pytest.raises(ConfigurationError):
        encode_properties(message)


def test_headers_are_normalised_to_text():
    raw = {"a": b"utf8 \xc3\xa9", "b": bytearray(b"\xff\xfe"), "c": {"d": [b"x", 1]}, "e": 2}
    assert normalise_headers(raw) == {
        "a": "utf8 \u00e9",
        "b": b"\xff\xfe",
        "c": {"d": ["x", 1]},
        "e": 2,
    }
    plain = {"clock": 1, "ticket": "t"}
    assert normalise_headers(plain) == plain
    assert normalise_headers(None) == {}


# -- TLS options ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_ssl_true_verifies_by_default():
    ctx, hostname = build_ssl_context(True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert hostname is None


@pytest.mark.parametrize(
    ("options", "mode", "check"),
    [
        ({"cert_reqs": ssl.CERT_NONE}, ssl.CERT_NONE, False),
        ({"ssl_cert_reqs": "none"}, ssl.CERT_NONE, False),
        ({"ssl_cert_reqs": "CERT_REQUIRED"}, ssl.CERT_REQUIRED, True),
        ({"cert_reqs": ssl.CERT_OPTIONAL}, ssl.CERT_OPTIONAL, True),
        ({"cert_reqs": "required", "check_hostname": False}, ssl.CERT_REQUIRED, False),
    ],
)
def test_cert_reqs_spellings(options: dict[str, object], mode: ssl.VerifyMode, check: bool):
    ctx, _ = build_ssl_context(options)
    assert ctx.verify_mode == mode
    assert ctx.check_hostname is check


@pytest.mark.parametrize("prefix", ["", "ssl_"])
def test_ca_and_client_certificate_keys(cert_files: tuple[Path, Path], prefix: str):
    cert, key = cert_files
    options = {
        f"{prefix}ca_certs": str(cert),
        f"{prefix}certfile": str(cert),
        f"{prefix}keyfile": str(key),
        "server_hostname": "broker.internal",
    }
    ctx, hostname = build_ssl_context(options)
    assert hostname == "broker.internal"
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "localhost"),),)]


def test_missing_certificate_file_fails_early(tmp_path: Path):
    with pytest.raises(OSError):
        build_ssl_context({"ca_certs": str(tmp_path / "missing.pem")})


@pytest.mark.parametrize("options", [{"ssl_version": 2}, {"cert_reqs": "sometimes"}])
def test_unknown_ssl_options_are_refused(options: dict[str, object]):
    with pytest.raises(ConfigurationError):
        build_ssl_context(options)


def test_tls_is_chosen_by_scheme_or_option():
    assert AmqpTransport("amqp://h//").ssl_context is None
    assert AmqpTransport("amqp://h//", ssl={}).ssl_context is None
    assert AmqpTransport("amqps://h//").ssl_context is not None
    t = AmqpTransport("amqp://h//", ssl={"cert_reqs": "none", "server_hostname": "b"})
    assert t.ssl_context is not None and t.ssl_context.verify_mode == ssl.CERT_NONE
    assert t.server_hostname == "b"
    via_factory = create_transport("pyamqp://h//", ssl=True)
    assert isinstance(via_factory, AmqpTransport) and via_factory.ssl_context is not None


def test_bad_options_are_configuration_errors():
    with pytest.raises(ConfigurationError):
        AmqpTransport("redis://h/0")
    with pytest.raises(ConfigurationError):
        AmqpTransport("amqp://h//", transport_options={"heartbeat": "often"})
    t = AmqpTransport("amqp://h//", transport_options={"heartbeat": 0, "connection_name": "me"})
    assert t.connection_name == "me"


# -- errors --------------------------------------------------------------------------------------

DRIVER_ERRORS = [
    (drv.ChannelPreconditionFailed("PRECONDITION_FAILED - inequivalent arg"), BrokerRefusedError),
    (drv.ChannelNotFoundEntity("NOT_FOUND - no exchange 'x'"), BrokerRefusedError),
    (drv.ChannelAccessRefused("ACCESS_REFUSED - access refused"), BrokerRefusedError),
    (drv.ChannelLockedResource("RESOURCE_LOCKED - cannot obtain"), ResourceLockedError),
    (drv.ChannelClosed(506, "RESOURCE_ERROR"), BrokerRefusedError),
    (drv.ProbableAuthenticationError("ACCESS_REFUSED - Login refused"), AuthenticationError),
    (drv.AuthenticationError(["AMQPLAIN"], ["PLAIN"]), AuthenticationError),
    (drv.ChannelInvalidStateError("channel closed"), ConnectionLostError),
    (drv.ConnectionClosed(320, "CONNECTION_FORCED - closed"), ConnectionLostError),
    (drv.AMQPConnectionError("Server connection reset"), ConnectionLostError),
    (ConnectionResetError(104, "Connection reset by peer"), ConnectionLostError),
    (OSError(113, "No route to host"), ConnectionLostError),
    (TimeoutError(), TransportTimeoutError),
    (RuntimeError("<Connection> closed"), ConnectionLostError),
]


@pytest.mark.parametrize(("exc", "expected"), DRIVER_ERRORS, ids=lambda v: type(v).__name__)
def test_error_table(exc: BaseException, expected: type[TransportError]):
    error = _map_error(exc, "doing x")
    assert type(error) is expected
    assert error.__cause__ is exc
    assert str(error).startswith("doing x: ")
    if exc.args and isinstance(exc.args[-1], str):
        assert exc.args[-1] in str(error)  # the broker's reply text is kept


@pytest.mark.parametrize(("exc", "expected"), DRIVER_ERRORS, ids=lambda v: type(v).__name__)
def test_errors_while_connecting_are_connect_errors(
    exc: BaseException, expected: type[TransportError]
):
    error = _map_error(exc, "connecting", connecting=True)
    assert isinstance(error, ConnectError)
    assert isinstance(error, AuthenticationError) == (expected is AuthenticationError)


def test_table_covers_every_refusal_code():
    assert ERROR_TABLE[drv.ChannelLockedResource] is ResourceLockedError
    for cls in (drv.ChannelPreconditionFailed, drv.ChannelNotFoundEntity, drv.ChannelAccessRefused):
        assert ERROR_TABLE[cls] is BrokerRefusedError


def test_password_is_scrubbed_from_driver_text():
    exc = drv.AMQPConnectionError(f"amqp://guest:{PASSWORD}@h:5672// unreachable")
    error = _map_error(exc, "connecting to amqp://guest:**@h:5672//", secret=PASSWORD)
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)
    assert "guest" in str(error)


def test_password_never_in_repr_or_str():
    t = AmqpTransport(f"amqp://user:{PASSWORD}@broker:5672/vh")
    for text in (repr(t), str(t), repr(t.url), str(t.url), t.url.redacted(), t.connection_name):
        assert PASSWORD not in text
    assert "user" in repr(t)
    assert t.url.virtual_host == "vh"
    assert parse_url("amqp://h:1//").virtual_host == "/"
