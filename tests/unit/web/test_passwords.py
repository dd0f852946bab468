"""Password and token hashes: round trips, refusals, bounded cost, and the line-making tool."""

from __future__ import annotations

import io

import pytest

from aiocelerymon.exceptions import ConfigurationError
from aiocelerymon.web import passwords
from aiocelerymon.web.passwords import (
    check_password_hash,
    generate_token,
    hash_password,
    hash_token,
    verify_password,
    verify_token,
)


@pytest.mark.parametrize("scheme", ["scrypt", "pbkdf2_sha256"])
def test_hash_round_trip_and_salted(scheme):
    encoded = hash_password("correct horse: battery", scheme=scheme)
    assert encoded.startswith(scheme + "$")
    assert verify_password("correct horse: battery", encoded)
    assert not verify_password("correct horse: batterY", encoded)
    assert not verify_password("", encoded)
    # A fresh salt every time: equal passwords do not give equal hashes.
    assert hash_password("correct horse: battery", scheme=scheme) != encoded
    assert check_password_hash(encoded) == scheme


def test_non_ascii_password():
    encoded = hash_password("pässwörd-✓")
    assert verify_password("pässwörd-✓", encoded)
    assert not verify_password("passwort-✓", encoded)


def test_unknown_scheme_refused():
    with pytest.raises(ConfigurationError, match="unknown password scheme"):
        hash_password("x", scheme="md5")


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("md5$abc", "unknown scheme"),
        ("plain-text-password", "unknown scheme"),
        ("scrypt$16384$8$1$c2FsdHNhbHRzYWx0", "wrong number of fields"),
        ("scrypt$1000$8$1$c2FsdHNhbHRzYWx0$" + "A" * 43, "power of two"),
        ("scrypt$1048576$32$16$c2FsdHNhbHRzYWx0$" + "A" * 43, "too much memory"),
        ("scrypt$16384$x$1$c2FsdHNhbHRzYWx0$" + "A" * 43, "scrypt r"),
        ("pbkdf2_sha256$999999999$c2FsdHNhbHRzYWx0$" + "A" * 43, "iterations"),
        ("pbkdf2_sha256$600000$c2Fs$" + "A" * 43, "too short"),
        ("pbkdf2_sha256$600000$c2FsdHNhbHRzYWx0$!!!!", "base64"),
    ],
)
def test_bad_hashes_refused_without_quoting_them(encoded, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        verify_password("whatever", encoded)
    # The hash (or its salt) is never echoed into an error that could reach a log.
    assert encoded.split("$")[-1] not in str(info.value)


def test_tokens():
    token = generate_token()
    assert len(token) >= 40 and ":" not in token
    assert generate_token() != token
    encoded = hash_token(token)
    assert encoded.startswith("sha256$") and token not in encoded
    assert verify_token(token, encoded)
    assert not verify_token(token + "x", encoded)
    for bad in ("sha256$abc", "sha1$" + "0" * 64, "sha256$" + "g" * 64):
        with pytest.raises(ConfigurationError, match="token hash"):
            verify_token(token, bad)


def test_main_prints_a_line_that_verifies(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret:pw\n"))
    assert passwords.main(["alice", "--role", "viewer", "--stdin"]) == 0
    out = capsys.readouterr().out.strip()
    name, role, encoded = out.split(":")
    assert (name, role) == ("alice", "viewer")
    assert verify_password("s3cret:pw", encoded)
    assert "s3cret" not in out


def test_main_refuses_empty_password_and_bad_name(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert passwords.main(["alice", "--role", "operator", "--stdin"]) == 1
    with pytest.raises(SystemExit):
        passwords.main(["al:ice", "--role", "operator", "--stdin"])
    with pytest.raises(SystemExit):
        passwords.main(["alice", "--stdin"])  # the role is never implied


def test_main_prompts_twice(monkeypatch, capsys):
    answers = iter(["one", "two"])
    monkeypatch.setattr(passwords.getpass, "getpass", lambda prompt: next(answers))
    assert passwords.main(["alice", "--role", "operator"]) == 1
    assert "differ" in capsys.readouterr().err


def test_main_token(capsys):
    assert passwords.main(["ci-bot", "--token", "--role", "operator"]) == 0
    captured = capsys.readouterr()
    token = captured.err.strip().rsplit(" ", 1)[-1]
    name, role, encoded = captured.out.strip().split(":")
    assert (name, role) == ("ci-bot", "operator")
    assert verify_token(token, encoded)
    assert token not in captured.out
