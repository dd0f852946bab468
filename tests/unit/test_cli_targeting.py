# ruff: noqa: F811 - pytest fixtures shared with test_cli are parameters here
"""``--pattern``/``--matcher`` and ``--jsonl`` on status/inspect/control (memory broker).

Celery's Inspect sends ``pattern`` and ``matcher`` in the pidbox request and filters the replies
by them again (celery/app/control.py; kombu.matcher: glob = fnmatch, pcre = re.match); real
workers are in tests/integration/interop/test_targeting_interop.py.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable

import pytest

from tests.unit import test_cli
from tests.unit.test_cli import (  # noqa: F401 - fixtures
    Responder,
    broker,
    clean_env,
    nodes,
    run_cli,
    started,
)

A1, A2, B1 = "alpha-1@host", "alpha-2@host", "beta-1@host"


async def _three(nodes: Callable[..., Responder]) -> list[Responder]:
    answers = {"ping": {"ok": "pong"}, "enable_events": {"ok": "task events enabled"}}
    responders = [nodes(n, answers=answers) for n in (A1, A2, B1)]
    await started(*responders)
    return responders


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--pattern", "alpha-*"], {A1, A2}),
        (["-p", "alpha-*", "--matcher", "glob"], {A1, A2}),
        (["-p", r"(alpha-2|beta-\d)@", "--matcher", "pcre"], {A2, B1}),
        # re.match anchors at the start only, as kombu's pcre matcher does.
        (["-p", "beta", "--matcher", "pcre"], {B1}),
        (["-p", "host", "--matcher", "pcre"], set()),
    ],
)
async def test_pattern_selects_nodes_on_the_wire(
    broker: str, nodes: Callable[..., Responder], options: list[str], expected: set[str]
) -> None:
    responders = await _three(nodes)
    result = await run_cli("-b", broker, "inspect", "ping", "-t", "0.5", "-j", *options)
    if not expected:
        assert result.code == 69
        assert result.err == "Error: No nodes replied within time constraint\n"
    else:
        assert result.code == 0, result.err
        assert set(json.loads(result.out)) == expected
    pattern = options[1]
    matcher = options[3] if len(options) > 2 else "glob"
    for responder in responders:
        # The request carries both fields and the nodes select themselves by them.
        if responder.nodename in expected:
            (request,) = responder.requests
            assert (request["pattern"], request["matcher"]) == (pattern, matcher)
        else:
            assert responder.requests == []


async def test_pattern_on_control_and_status(broker: str, nodes: Callable[..., Responder]) -> None:
    await _three(nodes)
    status = await run_cli("-b", broker, "-C", "status", "-t", "0.5", "-p", "beta-*")
    assert status.out == f"->  {B1}: OK\n\n1 node online.\n"
    control = await run_cli(
        "-b", broker, "control", "enable_events", "-t", "0.5", "-p", "alpha-1*", "-j"
    )
    assert json.loads(control.out) == [{A1: {"ok": "task events enabled"}}]


async def test_replies_from_nodes_that_ignore_the_pattern_are_dropped(
    broker: str, nodes: Callable[..., Responder], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nodes that answer whatever the pattern says: filtered again locally, as Celery does.
    monkeypatch.setattr(test_cli, "destination_matches", lambda _node, _body: True)
    responders = await _three(nodes)
    result = await run_cli("-b", broker, "inspect", "ping", "-t", "0.5", "-j", "-p", "alpha*")
    assert set(json.loads(result.out)) == {A1, A2}
    # B1 did answer, and was dropped.
    assert [len(r.requests) for r in responders] == [1, 1, 1]


async def test_jsonl_streams_one_line_per_reply_as_it_arrives(
    broker: str, nodes: Callable[..., Responder]
) -> None:
    gate = asyncio.Event()
    answers = {"clock": {"clock": 7}, "enable_events": {"ok": "on"}}
    await started(nodes(A1, answers=answers), nodes(A2, answers=answers, gates={"clock": gate}))

    class Watch(io.StringIO):
        def write(self, s: str) -> int:
            if A1 in s:
                gate.set()  # A2 only answers once A1's line was written
            return super().write(s)

    result = await run_cli(
        "-b", broker, "inspect", "clock", "-d", f"{A1},{A2}", "-t", "30", "--jsonl", stdout=Watch()
    )
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [json.loads(line) for line in lines] == [{A1: {"clock": 7}}, {A2: {"clock": 7}}]
    control = await run_cli("-b", broker, "control", "enable_events", "-d", A1, "--jsonl")
    assert control.out == json.dumps({A1: {"ok": "on"}}) + "\n"


async def test_jsonl_without_replies_exits_69(broker: str) -> None:
    result = await run_cli("-b", broker, "inspect", "ping", "-t", "0.2", "--jsonl")
    assert (result.code, result.out) == (69, "")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--matcher", "pcre"], "--matcher needs --pattern."),
        (["-p", "a(", "--matcher", "pcre"], "is not a valid regular expression"),
        (["-p", "x", "--matcher", "regex"], "invalid choice: 'regex'"),
        (["-p", ""], "--pattern must not be empty."),
        (["--json", "--jsonl"], "--json and --jsonl exclude each other."),
    ],
)
async def test_bad_targeting_is_a_usage_error(
    broker: str, nodes: Callable[..., Responder], options: list[str], message: str
) -> None:
    responder = nodes(A1)
    await started(responder)
    result = await run_cli("-b", broker, "inspect", "ping", *options)
    assert result.code == 2
    assert message in result.err
    assert responder.requests == []
