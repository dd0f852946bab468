"""Every numeric option of every verb is checked at parse time (issue 19, item 3).

A bad number is a usage error (exit 2) whose sentence names the option, before anything is
sent or any connection is made: never a busy loop (``queues --watch 0``), a run that never
ends (``-t inf``) or "broker unreachable" (``-t -1``).
"""

from __future__ import annotations

import argparse
import io
import math

import pytest

from aiocelerymon import cli
from aiocelerymon.cli._common import numeric, positive_float, positive_int, positive_rate

#: A broker nobody listens on: a check that happened too late would fail with 69, not 2.
DEAD = "redis://127.0.0.1:1/0"

#: (verb and options before the value, option as the message names it, bad values)
CASES = [
    (["status", "-t"], "'-t' / '--timeout'", ["0", "-1", "nan", "inf", "soon"]),
    (["inspect", "ping", "-t"], "'-t' / '--timeout'", ["0", "-0.5", "nan", "inf"]),
    (["control", "shutdown", "-t"], "'-t' / '--timeout'", ["0", "inf"]),
    (["queues", "-Q", "q", "--watch"], "'-w' / '--watch'", ["0", "-1", "nan", "inf"]),
    (["queues", "-Q", "q", "--count"], "'--count'", ["0", "-3", "1.5", "x"]),
    (["queues", "-Q", "q", "-t"], "'-t' / '--timeout'", ["0", "nan"]),
    (["purge", "-f", "-t"], "'-t' / '--timeout'", ["-1", "inf"]),
    (["events", "--dump", "--limit"], "'--limit'", ["0", "-1", "many"]),
    (["events", "--dump", "--duration"], "'--duration'", ["0", "-1", "nan", "inf"]),
    (["events", "--camera", "m.C", "-F"], "'-F' / '--frequency' / '--freq'", ["0", "-1", "inf"]),
    (["events", "--camera", "m.C", "-r"], "'-r' / '--maxrate'", ["0", "0/s", "0/m", "x/s", "1/y"]),
    (["demo", "--dump", "--rate"], "'--rate'", ["0", "-5", "nan", "inf"]),
    (["demo", "--dump", "--limit"], "'--limit'", ["0", "-1"]),
    (["demo", "--dump", "--duration"], "'--duration'", ["0", "-1", "inf"]),
]


@pytest.mark.parametrize(
    ("argv", "value", "option"),
    [(argv, value, option) for argv, option, values in CASES for value in values],
)
async def test_bad_numbers_are_usage_errors_naming_the_option(
    argv: list[str], value: str, option: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(["-b", DEAD, *argv, value], stdout=out, stderr=err)
    assert code == 2, err.getvalue()
    assert out.getvalue() == ""
    last = err.getvalue().splitlines()[-1]
    assert last.startswith(f"Error: Invalid value for {option}: {value!r} is not "), last
    assert last.endswith(".")


def test_timeout_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_STATUS_TIMEOUT", "-1")
    with pytest.raises(cli.UsageError, match=r"'-t' / '--timeout': '-1' is not a number greater"):
        cli.parse_args(["status"])


def test_good_values_pass_unchanged() -> None:
    invocation, _ = cli.parse_args(["queues", "--watch", "0.25", "--count", "3", "-t", "1e-3"])
    assert (invocation.watch, invocation.count, invocation.timeout) == (0.25, 3, 0.001)
    invocation, _ = cli.parse_args(["queues", "--watch"])
    assert invocation.watch == 2.0
    invocation, _ = cli.parse_args(["events", "--camera", "m.C", "-F", "0.5", "-r", "10/m"])
    assert (invocation.frequency, invocation.maxrate) == (0.5, "10/m")
    invocation, _ = cli.parse_args(["demo", "--rate", "0.5", "--limit", "1", "--duration", "2"])
    assert (invocation.rate, invocation.limit, invocation.duration) == (0.5, 1, 2.0)


def test_the_shared_helper() -> None:
    """The one helper future verbs use: bounds, inclusiveness, finiteness."""
    at_least_zero = numeric(int, 0, inclusive=True)
    assert at_least_zero("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="'-1' is not an integer at least 0"):
        at_least_zero("-1")
    assert positive_float("1e9") == 1e9
    for bad in ("0", "nan", "inf", "-inf", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)
    assert positive_int("7") == 7 and math.isfinite(positive_float("0.001"))
    assert positive_rate("3/h") == "3/h"


async def test_minus_infinity_given_with_an_equals_sign() -> None:
    err = io.StringIO()
    code = await cli.run(["-b", DEAD, "status", "--timeout=-inf"], stdout=io.StringIO(), stderr=err)
    assert code == 2
    assert "Invalid value for '-t' / '--timeout': '-inf' is not a number greater than 0." in (
        err.getvalue()
    )
