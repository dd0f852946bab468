"""The codec refuses what Celery must never make us run; the clock follows kombu."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from aiocelerymon.exceptions import ConfigurationError, ContentTypeRefusedError, DecodeError
from aiocelerymon.wire import codec
from aiocelerymon.wire.clock import LamportClock

PICKLE = "application/x-python-serialize"


def test_json_round_trip_is_stdlib_compatible():
    obj = {"method": "ping", "arguments": {}, "destination": None, "n": 1.5, "u": "h\u00e9"}
    body, ctype, enc = codec.encode(obj)
    assert (ctype, enc) == ("application/json", "utf-8")
    assert json.loads(body) == obj  # what kombu's json.loads sees
    assert codec.decode(json.dumps(obj).encode(), ctype, enc) == obj  # what kombu writes


def test_json_extras():
    assert json.loads(codec.dumps({"d": Decimal("1.5"), "s": {1}, 3: "k"})) == {
        "d": "1.5",
        "s": [1],
        "3": "k",
    }
    with pytest.raises(TypeError):
        codec.dumps({"o": object()})


def test_pickle_is_refused_everywhere():
    with pytest.raises(ContentTypeRefusedError, match="never deserialized"):
        codec.decode(b"\x80\x04K\x01.", PICKLE, "binary")
    with pytest.raises(ConfigurationError, match="pickle"):
        codec.normalize_accept(["json", "pickle"])
    with pytest.raises(ConfigurationError, match="pickle"):
        codec.register("pickle", PICKLE, lambda o: b"", lambda b: None)


def test_unknown_and_unaccepted_types():
    with pytest.raises(ContentTypeRefusedError, match="application/x-yaml"):
        codec.decode(b"a: 1", "application/x-yaml", "utf-8")
    with pytest.raises(ConfigurationError, match="no serializer"):
        codec.normalize_accept(["msgpack"])
    with pytest.raises(ContentTypeRefusedError):
        codec.decode(b"{}", "application/json", "utf-8", accept=frozenset({"x/y"}))
    assert codec.normalize_accept(None) == {"application/json"}
    assert codec.normalize_accept(["json", "application/json"]) == {"application/json"}


def test_decode_errors_are_clear():
    with pytest.raises(DecodeError, match="no content type"):
        codec.decode(b"{}", None, None)
    with pytest.raises(DecodeError, match="invalid JSON"):
        codec.decode(b"{not json", "application/json", "utf-8")
    with pytest.raises(DecodeError):
        codec.decode(b"\xff\xfe", "application/json", "utf-8")
    with pytest.raises(DecodeError, match="no-such-codec"):
        codec.decode(b"{}", "application/json", "no-such-codec")


def test_other_text_encodings_are_decoded():
    body = '{"k": "caf\u00e9"}'.encode("latin-1")
    assert codec.decode(body, "application/json", "latin-1") == {"k": "caf\u00e9"}


def test_lamport_clock_has_kombu_semantics():
    clock = LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11  # max(own, other) + 1
    assert clock.adjust(3) == 12  # an older clock still advances ours
    assert int(clock) == 12
    assert repr(clock) == "<LamportClock: 12>"
