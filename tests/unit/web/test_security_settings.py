"""Security settings: the command line and its env variables, credentials files, check_bind,
and the failure limiter's bounds."""

from __future__ import annotations

import argparse
import logging
import os

import pytest

from aiocelerymon.exceptions import ConfigurationError
from aiocelerymon.web.passwords import hash_password, hash_token
from aiocelerymon.web.security import (
    ANONYMOUS,
    FailureLimiter,
    InsecureBindError,
    PasswordUser,
    Principal,
    Role,
    SecuritySettings,
    add_security_options,
    check_bind,
    is_loopback,
    load_credentials,
    parse_api_token,
    parse_basic_auth,
    security_settings_from_args,
)

TOKEN = "tok-0123456789abcdefghij"


def parse(argv, environ=None, **extra):
    parser = argparse.ArgumentParser()
    add_security_options(parser.add_argument_group("auth"))
    ns = parser.parse_args(argv)
    for key, value in extra.items():
        setattr(ns, key, value)
    return security_settings_from_args(ns, environ or {})


# ------------------------------------------------------------------------------------------
# --basic-auth and --api-token


def test_basic_auth_forms():
    user = parse_basic_auth("alice:pa:ss")
    assert (user.name, user.role) == ("alice", Role.OPERATOR)  # Flower's users can control
    assert user.verify("pa:ss") and not user.verify("pa")
    viewer = parse_basic_auth("bob:pw:viewer")
    assert viewer.role is Role.VIEWER and viewer.verify("pw")
    assert parse_basic_auth("carol:pw:Operator").role is Role.OPERATOR


@pytest.mark.parametrize("value", ["alice", "alice:", ":pw", "alice::viewer", " alice:pw"])
def test_basic_auth_errors_never_quote_the_value(value):
    with pytest.raises(ConfigurationError) as info:
        parse_basic_auth(value)
    if ":" in value and value.split(":")[1]:
        assert value.split(":")[1] not in str(info.value)


def test_api_tokens():
    token = parse_api_token(TOKEN + ":viewer")
    assert token.role is Role.VIEWER and token.name.startswith("token-")
    assert TOKEN not in repr(token) and TOKEN not in token.name
    assert parse_api_token(TOKEN).role is Role.OPERATOR
    with pytest.raises(ConfigurationError, match="at least 16") as info:
        parse_api_token("short-secret")
    assert "short-secret" not in str(info.value)


# ------------------------------------------------------------------------------------------
# Credentials files


def write(tmp_path, text, mode=0o600):
    path = tmp_path / "creds"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_credentials_file(tmp_path):
    path = write(
        tmp_path,
        "# users\n\n"
        f"alice:operator:{hash_password('a-pw')}\n"
        f"  bob : viewer : {hash_password('b-pw', scheme='pbkdf2_sha256')}  \n"
        f"ci:operator:{hash_token(TOKEN)}\n",
    )
    users, tokens = load_credentials(path)
    assert [(u.name, u.role) for u in users] == [("alice", Role.OPERATOR), ("bob", Role.VIEWER)]
    assert users[0].verify("a-pw") and users[1].verify("b-pw") and not users[1].verify("a-pw")
    assert [(t.name, t.role) for t in tokens] == [("ci", Role.OPERATOR)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice:scrypt$1$2", "NAME:ROLE:HASH"),
        ("alice:admin:sha256$" + "0" * 64, "unknown role"),
        ("alice:viewer:plaintext-password", "unknown scheme"),
        ("alice:viewer:sha256$abc", "token hash"),
        (":viewer:sha256$" + "0" * 64, "token name"),
    ],
)
def test_credentials_file_errors_name_the_line(tmp_path, line, message):
    path = write(tmp_path, f"# header\n{line}\n")
    with pytest.raises(ConfigurationError, match=message) as info:
        load_credentials(path)
    assert f"{path}:2:" in str(info.value)
    assert line.split(":")[-1] not in str(info.value)


def test_token_file_holds_tokens_only(tmp_path):
    path = write(tmp_path, f"alice:operator:{hash_password('pw')}\n")
    with pytest.raises(ConfigurationError, match="token hashes only"):
        load_credentials(path, tokens_only=True)


def test_unreadable_and_world_readable_files(tmp_path, caplog):
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_credentials(tmp_path / "missing")
    path = write(tmp_path, f"ci:viewer:{hash_token(TOKEN)}\n", mode=0o644)
    with caplog.at_level(logging.WARNING):
        load_credentials(path)
    assert "readable by every local user" in caplog.text


# ------------------------------------------------------------------------------------------
# Settings


def test_settings_validate():
    with pytest.raises(ConfigurationError, match="configured twice"):
        SecuritySettings(users=[parse_basic_auth("a:1"), parse_basic_auth("a:2")])
    with pytest.raises(ConfigurationError, match="twice"):
        SecuritySettings(tokens=[parse_api_token(TOKEN), parse_api_token(TOKEN + ":viewer")])
    with pytest.raises(ConfigurationError, match="at least 16"):
        SecuritySettings(cookie_secret="short")
    for origin in ("app.example", "https://app.example/path", "ftp://x", "https://u@x"):
        with pytest.raises(ConfigurationError, match="--cors-origin"):
            SecuritySettings(cors_origins=[origin])
    with pytest.raises(ConfigurationError, match="--forwarded-allow-ips"):
        SecuritySettings(forwarded_allow_ips=["10.0.0.300"])
    for name in ("session_max_age", "failure_window"):
        with pytest.raises(ConfigurationError, match=name):
            SecuritySettings(**{name: float("nan")})
    with pytest.raises(ConfigurationError, match="failure_delay"):
        SecuritySettings(failure_delay=-1)
    with pytest.raises(ConfigurationError, match="failure_limit"):
        SecuritySettings(failure_limit=0)


def test_settings_normalise():
    conf = SecuritySettings(
        url_prefix="flower/", cors_origins=["HTTPS://App.Example/"], forwarded_allow_ips=[" * "]
    )
    assert conf.url_prefix == "/flower"
    assert conf.cors_origins == ("https://app.example",)
    assert conf.forwarded_allow_ips == ("*",)
    assert not conf.auth_enabled
    assert SecuritySettings(users=[parse_basic_auth("a:b")]).auth_enabled
    assert SecuritySettings(tokens=[parse_api_token(TOKEN)]).auth_enabled
    # A random cookie key per settings object unless a secret is given.
    assert SecuritySettings().cookie_key != SecuritySettings().cookie_key
    shared = "a-long-enough-secret"
    assert SecuritySettings(cookie_secret=shared).cookie_key == (
        SecuritySettings(cookie_secret=shared.encode()).cookie_key
    )
    assert shared.encode() not in SecuritySettings(cookie_secret=shared).cookie_key


def test_settings_repr_shows_no_secret(tmp_path):
    encoded = hash_password("file-pw")
    path = write(tmp_path, f"carol:viewer:{encoded}\n")
    conf = SecuritySettings.from_options(
        basic_auth=["alice:alice-secret-pw"],
        api_tokens=[TOKEN],
        auth_file=path,
        cookie_secret="the-cookie-secret-value",
    )
    for text in (repr(conf), str(conf), f"{conf}", repr(conf.users), repr(conf.tokens)):
        for secret in (
            "alice-secret-pw",
            TOKEN,
            encoded,
            encoded.split("$")[-1],
            "file-pw",
            "the-cookie-secret-value",
        ):
            assert secret not in text
    assert "'alice:operator'" in repr(conf) and "'carol:viewer'" in repr(conf)


# ------------------------------------------------------------------------------------------
# Command line and environment


def test_flags(tmp_path):
    path = write(tmp_path, f"ci:viewer:{hash_token(TOKEN)}\n")
    conf = parse(
        [
            "--basic-auth",
            "alice:pw",
            "--basic-auth",
            "bob:pw:viewer",
            "--api-token",
            "x" * 20,
            "--api-token-file",
            str(path),
            "--read-only",
            "--cookie-secret",
            "s" * 20,
            "--session-max-age",
            "60",
            "--cors-origin",
            "https://a.example",
            "--cors-origin",
            "https://b.example",
            "--metrics-public",
            "--forwarded-allow-ips",
            "10.0.0.1, 192.168.0.0/16",
            "--insecure-no-auth",
        ],
        url_prefix="/flower",
    )
    assert [u.name for u in conf.users] == ["alice", "bob"]
    assert [t.role for t in conf.tokens] == [Role.OPERATOR, Role.VIEWER]
    assert conf.read_only and conf.metrics_public and conf.insecure_no_auth
    assert conf.session_max_age == 60
    assert conf.cors_origins == ("https://a.example", "https://b.example")
    assert conf.forwarded_allow_ips == ("10.0.0.1", "192.168.0.0/16")
    assert conf.url_prefix == "/flower"


def test_defaults_are_closed():
    conf = parse([])
    assert not conf.auth_enabled and not conf.read_only and not conf.metrics_public
    assert not conf.insecure_no_auth and conf.cors_origins == () and conf.forwarded_allow_ips == ()


def test_environment(tmp_path):
    path = write(tmp_path, f"carol:operator:{hash_password('pw')}\n")
    env = {
        "AIOCELERYMON_BASIC_AUTH": "alice:pw, bob:pw:viewer",
        "AIOCELERYMON_AUTH_FILE": str(path),
        "AIOCELERYMON_API_TOKEN": "y" * 20,
        "AIOCELERYMON_READ_ONLY": "yes",
        "AIOCELERYMON_COOKIE_SECRET": "e" * 20,
        "AIOCELERYMON_SESSION_MAX_AGE": "90",
        "AIOCELERYMON_CORS_ORIGIN": "https://a.example,https://b.example",
        "AIOCELERYMON_METRICS_PUBLIC": "1",
        "AIOCELERYMON_FORWARDED_ALLOW_IPS": "*",
        "AIOCELERYMON_INSECURE_NO_AUTH": "true",
    }
    conf = parse([], env)
    assert [u.name for u in conf.users] == ["alice", "bob", "carol"]
    assert len(conf.tokens) == 1 and conf.read_only and conf.metrics_public
    assert conf.session_max_age == 90 and conf.insecure_no_auth
    assert conf.cors_origins == ("https://a.example", "https://b.example")
    assert conf.forwarded_allow_ips == ("*",)
    assert conf.cookie_key == SecuritySettings(cookie_secret="e" * 20).cookie_key


def test_flags_win_over_environment():
    env = {"AIOCELERYMON_BASIC_AUTH": "env:pw", "AIOCELERYMON_CORS_ORIGIN": "https://env.example"}
    conf = parse(["--basic-auth", "cli:pw", "--cors-origin", "https://cli.example"], env)
    assert [u.name for u in conf.users] == ["cli"]
    assert conf.cors_origins == ("https://cli.example",)


def test_bad_environment_values():
    with pytest.raises(ConfigurationError, match="AIOCELERYMON_READ_ONLY"):
        parse([], {"AIOCELERYMON_READ_ONLY": "maybe"})
    assert not parse([], {"AIOCELERYMON_READ_ONLY": "off"}).read_only
    with pytest.raises(ConfigurationError, match="session-max-age"):
        parse([], {"AIOCELERYMON_SESSION_MAX_AGE": "soon"})
    with pytest.raises(ConfigurationError, match="session_max_age"):
        parse(["--session-max-age", "0"])
    with pytest.raises(ConfigurationError, match="--basic-auth") as info:
        parse([], {"AIOCELERYMON_BASIC_AUTH": "just-a-password-no-user"})
    assert "just-a-password" not in str(info.value)


# ------------------------------------------------------------------------------------------
# check_bind


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_binds_need_no_auth(address):
    assert is_loopback(address)
    check_bind(address, SecuritySettings())


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "", "192.168.1.10", "monitor.example"])
def test_open_binds_need_auth(address, caplog):
    assert not is_loopback(address)
    with pytest.raises(InsecureBindError, match="--insecure-no-auth") as info:
        check_bind(address, SecuritySettings())
    assert "--basic-auth" in str(info.value)
    assert isinstance(info.value, ConfigurationError)
    check_bind(address, SecuritySettings(users=[parse_basic_auth("a:b")]))
    check_bind(address, SecuritySettings(tokens=[parse_api_token(TOKEN)]))
    with caplog.at_level(logging.WARNING):
        check_bind(address, SecuritySettings(insecure_no_auth=True))
    assert "no authentication" in caplog.text


# ------------------------------------------------------------------------------------------
# FailureLimiter


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_limiter_window_and_delays():
    clock = Clock()
    limiter = FailureLimiter(3, 10.0, 0.25, 1.0, clock=clock)
    assert limiter.retry_after(address="a") is None
    assert [limiter.failure(address="a") for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    clock.now = 4.0
    assert limiter.retry_after(address="a") == 6.0
    assert limiter.retry_after(address="b", user=None) is None
    clock.now = 10.0
    assert limiter.retry_after(address="a") is None
    assert limiter.failure(address="a") == 0.25  # a new window


def test_limiter_memory_is_bounded():
    limiter = FailureLimiter(3, 60.0, 0.1, 1.0, max_keys=100)
    for i in range(10_000):
        limiter.failure(address=f"10.0.{i // 256}.{i % 256}", user=f"u{i}")
    assert len(limiter) == 200
    # The freshest keys are the ones kept.
    assert limiter.failure(address="10.0.39.15") == 0.2


# ------------------------------------------------------------------------------------------
# Principal


def test_principal():
    alice = Principal("alice", Role.OPERATOR, "basic")
    assert alice.is_authenticated and alice.display_name == "alice" and alice.can_control
    assert not Principal("bob", Role.VIEWER, "token").can_control
    assert not ANONYMOUS.is_authenticated and ANONYMOUS.can_control
    assert str(Role.VIEWER) == "viewer"
    with pytest.raises(ConfigurationError):
        Role.parse("admin")


def test_password_user_repr():
    user = PasswordUser.plain("alice", "hunter2-secret")
    assert repr(user) == "PasswordUser(name='alice', role='operator')"
    with pytest.raises(ConfigurationError, match="empty password"):
        PasswordUser.plain("alice", "")
