"""The command line, end to end on the memory broker against simulated pidbox nodes.

Expected texts are Celery 5.5-5.7's output for the same replies (celery/bin/control.py and
bin/base.py; checked live against real workers by tests/integration/interop/test_cli_interop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aiocelerymon import cli
from aiocelerymon.client import Client
from aiocelerymon.control.commands import COMMANDS
from aiocelerymon.exceptions import ProtocolError
from aiocelerymon.transports import create_transport
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.pidbox import destination_matches, reply_message

REPO_ROOT = Path(__file__).resolve().parents[2]
N1, N2 = "n1@test", "n2@test"
NO_REPLY = object()
#: Celery highlights JSON objects with pygments when it can, which ends them with a newline.
PYGMENTS = importlib.util.find_spec("pygments") is not None


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CLI-related variables from the caller's environment (NO_COLOR, CELERY_*...)."""
    for name in list(os.environ):
        if name.startswith("CELERY_") or name in {
            "NO_COLOR",
            "APP",
            "BROKER_URL",
            "RESULT_BACKEND",
            "CONFIG_MODULE",
            "LOADER",
            "SKIP_CHECKS",
        }:
            monkeypatch.delenv(name)


@pytest.fixture
def broker() -> str:
    return f"memory://cli-{uuid.uuid4().hex}"


@dataclass
class Responder:
    """A pidbox node on the memory broker answering with canned values."""

    url: str
    nodename: str
    answers: dict[str, Any] = field(default_factory=dict)
    namespace: str = names.CONTROL_EXCHANGE
    #: Per method: answer only once the event is set (lets a test hold a reply back).
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self) -> None:
        async with (
            create_transport(self.url) as transport,
            transport.subscribe(names.node_binding(self.nodename, self.namespace)) as sub,
        ):
            self.ready.set()
            async for delivery in sub:
                try:
                    body = codec.decode(
                        delivery.body, delivery.content_type, delivery.content_encoding
                    )
                except ProtocolError:
                    continue
                if not destination_matches(self.nodename, body):
                    continue
                self.requests.append(body)
                method = body["method"]
                answer = self.answers.get(method, {"error": f"KeyError({method!r})"})
                if answer is NO_REPLY or not body.get("reply_to"):
                    continue
                if method in self.gates:
                    await self.gates[method].wait()
                await transport.publish(
                    reply_message(self.nodename, answer, ticket=body.get("ticket"), clock=1),
                    names.reply_exchange(self.namespace),
                    body["reply_to"]["routing_key"],
                )


@pytest.fixture
async def nodes(broker: str) -> AsyncIterator[Callable[..., Responder]]:
    """Start responders: ``nodes(nodename, answers=..., ...)``; stopped after the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(nodename: str, **kwargs: Any) -> Responder:
        kwargs.setdefault("answers", {"ping": {"ok": "pong"}})
        responder = Responder(broker, nodename, **kwargs)
        tasks.append(asyncio.create_task(responder.serve()))
        return responder

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def started(*responders: Responder) -> None:
    """Wait until the responders' node queues are bound."""
    for responder in responders:
        await responder.ready.wait()


@dataclass
class Result:
    code: int
    out: str
    err: str


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


async def run_cli(*argv: str, stdout: io.StringIO | None = None) -> Result:
    out, err = stdout if stdout is not None else io.StringIO(), io.StringIO()
    code = await cli.run(list(argv), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


# -- status / inspect / control output -----------------------------------------------------


async def test_status_lists_nodes_and_counts(broker: str, nodes: Callable[..., Responder]) -> None:
    await started(nodes(N1), nodes(N2))
    result = await run_cli("-b", broker, "status", "-t", "0.5")
    assert result.code == 0, result.err
    lines = result.out.split("\n")
    assert sorted(lines[:2]) == [f"->  {N1}: OK", f"->  {N2}: OK"]
    assert lines[2:] == ["", "2 nodes online.", ""]
    assert result.err == ""


async def test_inspect_ping_with_destination_returns_early(
    broker: str, nodes: Callable[..., Responder]
) -> None:
    await started(nodes(N1), nodes(N2))
    begin = time.monotonic()
    result = await run_cli("-b", broker, "inspect", "ping", "-d", N1, "-t", "30")
    assert time.monotonic() - begin < 10  # returned when N1 answered, not after 30 s
    assert result.code == 0
    assert result.out == f"->  {N1}: OK\n        pong\n\n1 node online.\n"


def _json_block(obj: Any, indent: int, highlighted: bool) -> str:
    text = json.dumps(obj, sort_keys=True, indent=4) + ("\n" if highlighted else "")
    return "\n".join(" " * indent + line for line in text.split("\n"))


@pytest.mark.parametrize("no_color", [True, False], ids=["no-color", "color-on-pipe"])
@pytest.mark.parametrize(
    ("command", "answer", "body"),
    [
        ("ping", {"ok": "pong"}, "        pong"),
        ("report", {"ok": "\nline 1\n  line 2"}, "        \n        line 1\n          line 2"),
        ("registered", ["b.task", "a.task [x=1]"], "    * b.task\n    * a.task [x=1]"),
        ("active", [], "    - empty -"),
        ("revoked", [{"id": "x", "n": 1}], "    * {'id': 'x', 'n': 1}"),
        ("memsample", None, "    None"),
        ("memdump", 42, "    42"),
        ("memdump", "12.5MB", "    12.5MB"),
        ("objgraph", {"error": "ImportError('no objgraph')"}, "        ImportError('no objgraph')"),
        ("query_task", {}, None),
        ("clock", {"clock": 7}, None),
        ("stats", {"pid": 1, "pool": {"b": [1, 2], "a": None}, "total": {}}, None),
        ("conf", {"ok": {"z": 1, "a": "x"}}, None),
    ],
)  # fmt: skip
async def test_inspect_formats_each_kind_of_reply(
    broker: str,
    nodes: Callable[..., Responder],
    command: str,
    answer: Any,
    body: str | None,
    no_color: bool,
) -> None:
    await started(nodes(N1, answers={"ping": {"ok": "pong"}, command: answer}))
    flags = ["-C"] if no_color else []
    result = await run_cli("-b", broker, *flags, "inspect", command, "-d", N1)
    assert result.code == 0, result.err
    status = "ERROR" if isinstance(answer, dict) and "error" in answer else "OK"
    if body is None:  # a JSON object: sorted, 4-space JSON; highlighted unless -C
        highlighted = PYGMENTS and not no_color
        if "ok" in answer:
            body = _json_block(answer["ok"], 8, highlighted)
        else:
            body = _json_block(answer, 4, highlighted)
    assert result.out == f"->  {N1}: {status}\n{body}\n\n1 node online.\n"
    assert "\x1b" not in result.out  # not a terminal: no colour codes, as with click


async def test_no_color_environment_variable(
    broker: str, nodes: Callable[..., Responder], monkeypatch: pytest.MonkeyPatch
) -> None:
    await started(nodes(N1, answers={"clock": {"clock": 3}}))
    monkeypatch.setenv("NO_COLOR", "1")
    result = await run_cli("-b", broker, "inspect", "clock", "-d", N1)
    assert result.out == f'->  {N1}: OK\n    {{\n        "clock": 3\n    }}\n\n1 node online.\n'
    monkeypatch.setenv("NO_COLOR", "maybe")
    bad = await run_cli("-b", broker, "inspect", "clock", "-d", N1)
    assert bad.code == 2 and "NO_COLOR" not in bad.out and "boolean" in bad.err


async def test_colours_on_a_terminal(broker: str, nodes: Callable[..., Responder]) -> None:
    await started(nodes(N1, answers={"registered": ["a"]}))
    result = await run_cli("-b", broker, "inspect", "registered", "-d", N1, stdout=TTY())
    assert result.out.split("\n")[:2] == [
        "\x1b[37m\x1b[1m->\x1b[0m  \x1b[36m\x1b[1mn1@test: \x1b[0m\x1b[32m\x1b[1mOK\x1b[0m",
        "    \x1b[37m*\x1b[0m a",
    ]
    plain = await run_cli("-b", broker, "-C", "inspect", "registered", "-d", N1, stdout=TTY())
    assert plain.out == f"->  {N1}: OK\n    * a\n\n1 node online.\n"


async def test_control_prints_no_summary(broker: str, nodes: Callable[..., Responder]) -> None:
    await started(nodes(N1, answers={"rate_limit": {"ok": "new rate limit set successfully"}}))
    result = await run_cli("-b", broker, "control", "rate_limit", "t.add", "10/m", "-d", N1)
    assert result.code == 0
    assert result.out == f"->  {N1}: OK\n        new rate limit set successfully\n"


async def test_control_error_reply_still_exits_zero(
    broker: str, nodes: Callable[..., Responder]
) -> None:
    await started(nodes(N1, answers={"rate_limit": {"error": "unknown task"}}))
    result = await run_cli("-b", broker, "control", "rate_limit", "nope", "1/s", "-d", N1)
    assert (result.code, result.out) == (0, f"->  {N1}: ERROR\n        unknown task\n")


async def test_quiet(broker: str, nodes: Callable[..., Responder]) -> None:
    await started(nodes(N1))
    inspect = await run_cli("-b", broker, "-q", "inspect", "ping", "-d", N1)
    assert inspect.out == f" {N1}: OK\n        pong\n"
    # Celery's status ignores --quiet for its summary line.
    status = await run_cli("-b", broker, "-q", "status", "-d", N1)
    assert status.out == f" {N1}: OK\n\n1 node online.\n"


async def test_replies_are_printed_as_they_arrive(
    broker: str, nodes: Callable[..., Responder]
) -> None:
    gate = asyncio.Event()
    answers = {"clock": {"clock": 1}}
    # N2 answers only once N1's reply was written out: were output not streamed, N2's reply
    # would never come and the call would end at the timeout with one node.
    await started(nodes(N1, answers=answers), nodes(N2, answers=answers, gates={"clock": gate}))

    class Watch(io.StringIO):
        def write(self, s: str) -> int:
            if N1 in s:
                gate.set()
            return super().write(s)

    result = await run_cli(
        "-b", broker, "-C", "inspect", "clock", "-d", f"{N1},{N2}", "-t", "30", stdout=Watch()
    )
    assert result.out.index(N1) < result.out.index(N2)
    assert result.out.endswith("\n2 nodes online.\n")


# -- --json --------------------------------------------------------------------------------


async def test_json_shapes(broker: str, nodes: Callable[..., Responder]) -> None:
    answers = {"ping": {"ok": "pong"}, "stats": {"pid": 1}, "enable_events": {"ok": "on"}}
    await started(nodes(N1, answers=answers), nodes(N2, answers=answers))
    both = f"{N1},{N2}"
    inspect = await run_cli("-b", broker, "inspect", "stats", "-d", both, "--json")
    assert json.loads(inspect.out) == {N1: {"pid": 1}, N2: {"pid": 1}}
    assert inspect.out.count("\n") == 1

    control = await run_cli("-b", broker, "control", "enable_events", "-d", both, "-j")
    parsed = json.loads(control.out)
    assert isinstance(parsed, list)
    assert sorted(parsed, key=lambda r: next(iter(r))) == [{N1: {"ok": "on"}}, {N2: {"ok": "on"}}]

    status = await run_cli("-b", broker, "status", "-d", N1, "-j")
    first, rest = status.out.split("\n", 1)
    assert json.loads(first) == {N1: {"ok": "pong"}}
    assert rest == "\n1 node online.\n"
    # Celery's separators, no sorting: json.dumps defaults.
    assert inspect.out.startswith('{"n') and '": {"pid": 1}' in inspect.out


# -- nobody answers / broker down ----------------------------------------------------------


@pytest.mark.parametrize("subcommand", [["status"], ["inspect", "ping"], ["control", "heartbeat"]])
async def test_no_reply_exits_69(
    broker: str, nodes: Callable[..., Responder], subcommand: list[str]
) -> None:
    await started(nodes(N1))
    result = await run_cli("-b", broker, *subcommand, "-d", "nobody@nowhere", "-t", "0.2")
    assert (result.code, result.out) == (69, "")
    assert result.err == "Error: No nodes replied within time constraint\n"


async def test_a_node_that_never_replies_exits_69(
    broker: str, nodes: Callable[..., Responder]
) -> None:
    responder = nodes(N1, answers={"ping": {"ok": "pong"}, "shutdown": NO_REPLY})
    await started(responder)
    result = await run_cli("-b", broker, "control", "shutdown", "-t", "0.2", "-j")
    assert result.code == 69
    assert [r["method"] for r in responder.requests] == ["shutdown"]


@pytest.mark.parametrize(
    "url",
    ["amqp://127.0.0.1:1//", "redis://127.0.0.1:1/0", "redis://:secret@127.0.0.1:1/0"],
)
async def test_unreachable_broker(url: str) -> None:
    begin = time.monotonic()
    result = await run_cli("-b", url, "inspect", "ping", "-t", "1")
    assert time.monotonic() - begin < 5
    assert result.code == 69
    assert result.out == ""
    assert result.err.startswith("Error: Could not connect to the message broker.")
    assert result.err.count("\n") == 1
    assert "secret" not in result.err


async def test_connecting_is_bounded_by_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:

    async def hang(self: Client) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(Client, "connect", hang)
    begin = time.monotonic()
    result = await run_cli("-b", "redis://:pw@example.invalid/0", "status", "-t", "0.3")
    assert time.monotonic() - begin < 3
    assert result.code == 69
    assert "Could not connect" in result.err and "within 0.3s" in result.err
    assert ":pw@" not in result.err


async def test_unusable_broker_url() -> None:
    result = await run_cli("-b", "nosuch://host", "status")
    assert result.code == 69
    assert result.err.startswith("Error: Unable to run the `status` command. Reason: ")


def test_subprocess_has_no_traceback_and_exits_69() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    begin = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "aiocelerymon", "-b", "redis://:hunter2@127.0.0.1:1/0", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - begin < 30
    assert proc.returncode == 69
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error: Could not connect to the message broker.")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr


# -- arguments on the wire -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "method", "arguments"),
    [
        (["control", "revoke", "a", "b"], "revoke", {"task_id": ["a", "b"]}),
        (["control", "terminate", "KILL", "a"], "terminate", {"signal": "KILL", "task_id": ["a"]}),
        (["inspect", "registered"], "registered", {"taskinfoitems": []}),
        (["inspect", "conf", "true"], "conf", {"with_defaults": True}),
        (["inspect", "query_task", "a", "b"], "query_task", {"ids": ["a", "b"]}),
        (
            ["control", "time_limit", "t", "10", "20"],
            "time_limit",
            {"task_name": "t", "soft": 10.0, "hard": 20.0},
        ),
        (
            ["control", "rate_limit", "t.add", "10/m"],
            "rate_limit",
            {"task_name": "t.add", "rate_limit": "10/m"},
        ),
        (["inspect", "ping", "extra", "words"], "ping", {}),
        (["status"], "ping", {}),
    ],
)
async def test_arguments_sent(
    broker: str,
    nodes: Callable[..., Responder],
    argv: list[str],
    method: str,
    arguments: dict[str, Any],
) -> None:
    responder = nodes(N1, answers={"ping": {"ok": "pong"}, method: {"ok": "done"}})
    await started(responder)
    result = await run_cli("-b", broker, *argv, "-d", N1)
    assert result.code == 0, result.err
    [request] = responder.requests
    assert request["method"] == method
    assert request["arguments"] == arguments
    assert request["destination"] == [N1]
    assert request["reply_to"]["exchange"] == "reply.celery.pidbox"


async def test_destination_is_split_on_commas(broker: str, nodes: Callable[..., Responder]) -> None:
    responder = nodes(N1)
    await started(responder)
    await run_cli("-b", broker, "status", "-d", f"{N1},x@y", "-t", "0.2")
    assert responder.requests[0]["destination"] == [N1, "x@y"]


async def test_control_exchange_and_transport_options(
    broker: str, nodes: Callable[..., Responder]
) -> None:
    await started(nodes(N1, namespace="ops"))
    result = await run_cli(
        "-b", broker, "--control-exchange", "ops", "--transport-option", "a=1", "status", "-d", N1
    )
    assert result.code == 0
    plain = await run_cli("-b", broker, "status", "-d", N1, "-t", "0.2")
    assert plain.code == 69  # nobody listens in the default namespace


def test_transport_options_are_parsed_as_json_when_possible() -> None:
    invocation, _ = cli.parse_args(
        [
            "--transport-option", "global_keyprefix=pre:",
            "--transport-option", "visibility_timeout=3600",
            "--transport-option", 'x={"a": [1]}',
            "status",
        ]
    )  # fmt: skip
    assert invocation.transport_options == {
        "global_keyprefix": "pre:",
        "visibility_timeout": 3600,
        "x": {"a": [1]},
    }
    client = cli.build_client(invocation)
    assert client.transport.transport_options == invocation.transport_options


def test_broker_defaults_like_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    invocation, _ = cli.parse_args(["status"])
    assert str(cli.build_client(invocation).transport.url).startswith("amqp://guest@localhost")
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://from-env")
    assert cli.build_client(invocation).transport.url.hostname == "from-env"
    monkeypatch.setenv("BROKER_URL", "memory://option-env")
    invocation, _ = cli.parse_args(["status"])
    assert cli.build_client(invocation).transport.url.hostname == "option-env"
    invocation, _ = cli.parse_args(["-b", "memory://flag", "status"])
    assert cli.build_client(invocation).transport.url.hostname == "flag"


def test_subcommand_options_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_INSPECT_TIMEOUT", "2.5")
    monkeypatch.setenv("CELERY_INSPECT_DESTINATION", "a@b,c@d")
    monkeypatch.setenv("CELERY_INSPECT_JSON", "1")
    invocation, _ = cli.parse_args(["inspect", "ping"])
    assert (invocation.timeout, invocation.destination, invocation.json) == (
        2.5,
        ["a@b", "c@d"],
        True,
    )
    invocation, _ = cli.parse_args(["inspect", "ping", "-t", "3", "-d", "x@y"])
    assert (invocation.timeout, invocation.destination) == (3.0, ["x@y"])


# -- usage errors, --list, --help ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "nosuch"], "Unknown inspect command 'nosuch'"),
        (["control", "ping"], "Unknown control command 'ping'"),
        (["inspect", "hello"], "Unknown inspect command 'hello'"),
        (["inspect", "dump_active"], "Unknown inspect command"),
        (["inspect"], "Missing argument 'COMMAND'"),
        (["control", "rate_limit", "a", "b", "c"], "takes arguments"),
        (["inspect", "conf", "maybe"], "with_defaults"),
        (["control", "pool_grow", "many"], "'n'"),
        (["inspect", "ping", "--nosuch"], "nosuch"),
        (["inspect", "ping", "-t", "soon"], "timeout"),
        (["status", "extra"], "extra"),
        (["nosuch"], "No such command 'nosuch'"),
        (["--transport-option", "novalue", "status"], "KEY=VALUE"),
    ],
)
async def test_usage_errors_exit_2_without_sending(
    broker: str, nodes: Callable[..., Responder], argv: list[str], message: str
) -> None:
    responder = nodes(N1)
    await started(responder)
    result = await run_cli("-b", broker, *argv)
    assert result.code == 2
    assert result.out == ""
    assert message in result.err
    assert "Error: " in result.err and "Traceback" not in result.err
    assert responder.requests == []


@pytest.mark.parametrize("kind", ["inspect", "control"])
async def test_list(kind: str) -> None:
    # No broker is contacted: this one does not exist.
    result = await run_cli("-b", "amqp://127.0.0.1:1//", kind, "--list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == f"{kind.capitalize()} Commands:"
    listed = [ln.split()[0] for ln in lines[1:] if ln.startswith("  ") and ln[2] != " "]
    expected = sorted(n for n, c in COMMANDS.items() if c.kind == kind and c.visible)
    assert listed == expected
    assert "hello" not in listed
    if kind == "control":
        assert any(ln.startswith("  terminate <signal> [task_id ...]") for ln in lines)


async def test_help_and_version() -> None:
    top = await run_cli("--help")
    assert top.code == 0 and "inspect" in top.out and "--broker" in top.out
    assert (await run_cli()).code == 0
    sub = await run_cli("inspect", "--help")
    assert sub.code == 0 and "--destination" in sub.out and "--list" in sub.out
    version = await run_cli("--version")
    assert version.code == 0 and version.out.startswith("aiocelerymon ")


# -- -A: a Celery app ----------------------------------------------------------------------


@pytest.fixture
def celery_app_module(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A module with a Celery app on our memory broker, namespace "ops", one custom command."""
    from celery.worker import control

    name = f"cliapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from celery import Celery\n"
        "from celery.worker.control import inspect_command\n"
        f"app = Celery('t', broker={broker!r})\n"
        "app.conf.control_exchange = 'ops'\n"
        f"@inspect_command(args=[('n', int)], variadic='rest', signature='<n> [w ...]')\n"
        f"def {name}_cmd(state, n, rest, **kwargs):\n"
        "    '''A custom command.'''\n"
        "    return {'ok': n}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    control.Panel.meta.pop(f"{name}_cmd", None)
    control.Panel.data.pop(f"{name}_cmd", None)


async def test_app_configures_the_client_and_adds_custom_commands(
    celery_app_module: str, nodes: Callable[..., Responder]
) -> None:
    custom = f"{celery_app_module}_cmd"
    responder = nodes(N1, namespace="ops", answers={"ping": {"ok": "pong"}, custom: {"ok": 5}})
    await started(responder)
    for spec in (celery_app_module, f"{celery_app_module}:app", f"{celery_app_module}.app"):
        result = await run_cli("-A", spec, "status", "-d", N1)
        assert (result.code, result.out) == (0, f"->  {N1}: OK\n\n1 node online.\n"), spec

    result = await run_cli("-A", celery_app_module, "inspect", custom, "5", "a", "-d", N1)
    assert result.code == 0, result.err
    assert result.out == f"->  {N1}: OK\n        5\n\n1 node online.\n"
    assert responder.requests[-1]["arguments"] == {"n": 5, "rest": ["a"]}
    listing = await run_cli("-A", celery_app_module, "inspect", "--list")
    assert f"  {custom} <n> [w ...]" in listing.out
    assert "A custom command." in listing.out
    # -b overrides the app's broker.
    elsewhere = await run_cli(
        "-A", celery_app_module, "-b", "memory://empty", "status", "-t", "0.1"
    )
    assert elsewhere.code == 69


async def test_custom_command_needs_the_app(broker: str) -> None:
    result = await run_cli("-b", broker, "inspect", "not_registered_anywhere")
    assert result.code == 2


async def test_app_that_cannot_be_found() -> None:
    result = await run_cli("-A", "no_such_module_for_cli_test", "status")
    assert result.code == 2
    assert "no_such_module_for_cli_test" in result.err
    assert "Traceback" not in result.err


# -- with the library's own pidbox node, when present ---------------------------------------


async def test_against_aiocelerymon_node(broker: str) -> None:
    from aiocelerymon.control import node as node_module

    async with Client(broker) as client:
        node = node_module.Node(
            client, N1, registered=["b.task", "a.task"], unique_check_timeout=None
        )
        await node.start()
        try:
            registered = await run_cli("-b", broker, "inspect", "registered", "-d", N1)
            stats = await run_cli("-b", broker, "inspect", "stats", "-d", N1, "-j")
        finally:
            await node.aclose()
    assert registered.out == f"->  {N1}: OK\n    * a.task\n    * b.task\n\n1 node online.\n"
    assert {"pid", "clock", "pool", "broker"} <= set(json.loads(stats.out)[N1])


def test_main_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("aiocelerymon ")
    assert cli.main(["inspect", "nosuch"]) == 2
    assert "Usage: aiocelerymon inspect" in capsys.readouterr().err
    # Logging is put back as it was: main() may run inside another program.
    ours = logging.getLogger("aiocelerymon")
    assert ours.propagate and not ours.handlers


def test_main_on_an_unreachable_broker_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-b", "amqp://127.0.0.1:1//", "status"]) == 69
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("Error: Could not connect")
