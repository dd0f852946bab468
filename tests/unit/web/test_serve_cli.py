"""``aiocelerymon serve``'s command line: options, their environment variables, validation."""

from __future__ import annotations

import io

import pytest

from aiocelerymon import cli
from aiocelerymon.cli.serve import ServeInvocation, is_loopback


def parse(*argv: str) -> ServeInvocation:
    invocation, _ = cli.parse_args(["-b", "memory://x", "serve", *argv])
    assert isinstance(invocation, ServeInvocation)
    return invocation


def test_flower_defaults() -> None:
    inv = parse()
    assert (inv.address, inv.port, inv.url_prefix) == ("127.0.0.1", 5555, "")
    assert (inv.max_tasks, inv.max_workers, inv.inspect_timeout) == (100_000, 5000, 1.0)
    assert inv.purge_offline_workers is None and inv.enable_events is False


def test_options_and_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = parse(
        *("--port", "0", "--url-prefix", "flower/", "--max-tasks", "10"),
        *("--inspect-timeout", "2.5", "--purge-offline-workers", "60", "--enable-events"),
    )
    assert (inv.port, inv.url_prefix, inv.max_tasks) == (0, "/flower", 10)
    assert (inv.inspect_timeout, inv.purge_offline_workers, inv.enable_events) == (2.5, 60, True)
    monkeypatch.setenv("AIOCELERYMON_PORT", "8080")
    monkeypatch.setenv("AIOCELERYMON_MAX_WORKERS", "7")
    monkeypatch.setenv("AIOCELERYMON_ENABLE_EVENTS", "yes")
    monkeypatch.setenv("FLOWER_URL_PREFIX", "/from-flower")
    inv = parse()
    assert (inv.port, inv.max_workers, inv.enable_events) == (8080, 7, True)
    assert inv.url_prefix == "/from-flower"  # Flower's variable, for drop-in use
    assert parse("--port", "9000").port == 9000  # the flag wins


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "between 0 and 65535"),
        (["--port", "http"], "not a number"),
        (["--max-tasks", "0"], "at least 1"),
        (["--inspect-timeout", "nan"], "finite"),
        (["--inspect-timeout", "0"], "between"),
        (["--purge-offline-workers", "-5"], "at least"),
        (["--url-prefix", "a?b"], "url-prefix"),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(cli.UsageError, match=message):
        parse(*argv)


async def test_a_public_address_without_auth_is_refused() -> None:
    err = io.StringIO()
    code = await cli.run(
        ["-b", "memory://x", "serve", "--address", "0.0.0.0", "--port", "0"],
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == cli.EX_USAGE
    assert "without authentication" in err.getvalue() or "auth" in err.getvalue()


def test_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "::", "example.com"]))
