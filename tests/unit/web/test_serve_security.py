"""``aiocelerymon serve`` refuses insecure or malformed security settings before it binds."""

from __future__ import annotations

import io

import pytest

from aiocelerymon import cli
from aiocelerymon.cli._common import EX_USAGE


async def serve(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = await cli.run(["-b", "memory://serve-security", "serve", *argv], stdout=stdout,
                         stderr=stderr)  # fmt: skip
    return code, stdout.getvalue() + stderr.getvalue()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("BASIC_AUTH", "AUTH_FILE", "API_TOKEN", "API_TOKEN_FILE", "INSECURE_NO_AUTH",
                 "ADDRESS", "COOKIE_SECRET", "CORS_ORIGIN"):  # fmt: skip
        monkeypatch.delenv(f"AIOCELERYMON_{name}", raising=False)
        monkeypatch.delenv(f"FLOWER_{name}", raising=False)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.1"])
async def test_open_address_without_auth_is_refused(address):
    code, output = await serve("--address", address, "--port", "0")
    assert code == EX_USAGE
    assert "--insecure-no-auth" in output and "--basic-auth" in output
    assert "Traceback" not in output


async def test_open_address_from_the_environment_is_refused_too(monkeypatch):
    monkeypatch.setenv("AIOCELERYMON_ADDRESS", "0.0.0.0")
    code, output = await serve("--port", "0")
    assert code == EX_USAGE and "--insecure-no-auth" in output


@pytest.mark.parametrize(
    ("argv", "message", "secret"),
    [
        (["--basic-auth", "no-colon-secret"], "--basic-auth expects", "no-colon-secret"),
        (["--api-token", "short-tok"], "at least 16", "short-tok"),
        (["--cookie-secret", "tiny-secret"], "--cookie-secret", "tiny-secret"),
        (["--cors-origin", "not-an-origin"], "--cors-origin", None),
        (["--auth-file", "/nonexistent/users"], "cannot read credentials file", None),
        (["--forwarded-allow-ips", "10.0.0.999"], "--forwarded-allow-ips", None),
    ],
)
async def test_bad_security_flags_are_usage_errors_that_quote_no_secret(argv, message, secret):
    code, output = await serve(*argv, "--port", "0")
    assert code == EX_USAGE, output
    assert message in output
    assert "Traceback" not in output
    if secret is not None:
        assert secret not in output


async def test_bad_security_environment_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("AIOCELERYMON_BASIC_AUTH", "alice")
    code, output = await serve("--port", "0")
    assert code == EX_USAGE and "--basic-auth expects" in output


def test_help_lists_every_security_flag():
    parser = cli.serve._serve_parser("aiocelerymon")
    text = parser.format_help()
    for flag in ("--basic-auth", "--auth-file", "--api-token", "--api-token-file", "--read-only",
                 "--cookie-secret", "--session-max-age", "--cors-origin", "--metrics-public",
                 "--forwarded-allow-ips", "--insecure-no-auth"):  # fmt: skip
        assert flag in text
        env = "AIOCELERYMON_" + flag[2:].upper().replace("-", "_")
        assert env in " ".join(text.split()), env
